// Dials peers over CAF's OpenSSL middleman, proves who answered (a signed
// HelloResponse; CAF never says which allowed host is on a link), tells the
// directory, logs one line per peer up/down, and redials configured peers
// with exponential backoff.
//
//   (dial_atom, std::string address, std::string expected_node_hex, bool persistent)
//       -> std::string node_hex
// A persistent peer is redialled forever and the answer comes at the first
// successful hello; a one-shot dial answers with the first error instead.
// An empty expected node accepts whichever NodeId proves itself (aicon ping).
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include <optional>

#include "runtime/config.hpp"
#include "runtime/system.hpp"

namespace aicon {

/// Spawns the peer manager. `use_tls` picks the OpenSSL middleman (hosts
/// always; only the message benchmark dials plain TCP). With `cfg` (a
/// host's), it also watches DATA_DIR/peers.toml (`aicon peer add|rm`, see
/// peers_file.hpp) every second: a change rewrites the TLS allowlist, dials
/// added peers and drops removed ones, closing their link at once.
caf::actor spawn_peer_manager(caf::actor_system& sys, const role_context& ctx,
                              bool use_tls = true,
                              std::optional<host_config> cfg = std::nullopt);

} // namespace aicon
