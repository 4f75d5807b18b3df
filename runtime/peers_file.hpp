// Peers added and removed at run time (`aicon peer add|rm`), kept in
// DATA_DIR/peers.toml so they survive restarts. A host reads it at start and
// whenever it changes: what it admits and dials is host.toml's peers plus the
// added ones, minus the removed ones.
//
//   [[peer]]
//   address = "10.0.0.7:7100"
//   node = "<64 hex digits>"
//   [removed]
//   nodes = ["<64 hex digits>", ...]
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "runtime/config.hpp"

namespace aicon {

inline constexpr const char* peers_file_name = "peers.toml";

struct runtime_peers {
  std::vector<peer_entry> added;
  std::vector<node_id> removed;
};

/// Reads DATA_DIR/peers.toml (missing: nothing added or removed). Errors
/// name the file, the key and what was wrong.
caf::expected<runtime_peers> load_runtime_peers(const std::filesystem::path& data_dir);

/// Writes DATA_DIR/peers.toml atomically.
caf::error save_runtime_peers(const std::filesystem::path& data_dir, const runtime_peers& p);

/// Adds (or re-adds) a peer; an earlier removal of it is undone.
void add_peer(runtime_peers& p, const peer_entry& e);
/// Removes a peer: dropped from `added` and listed as removed (which also
/// overrides host.toml).
void remove_peer(runtime_peers& p, const node_id& id);

/// What a host with `cfg` and `p` admits and dials.
std::vector<node_id> effective_admitted(const host_config& cfg, const runtime_peers& p);
std::vector<peer_entry> effective_connect(const host_config& cfg, const runtime_peers& p);

/// Connects to `address`, takes the certificate it presents in its TLS
/// handshake and checks it is `expected`'s node certificate; returns the
/// PEM. This side presents none, so the peer ends the handshake there.
caf::expected<std::string> fetch_peer_certificate(const net_address& address,
                                                  const node_id& expected,
                                                  std::chrono::milliseconds timeout);

/// Shuts down (both directions) every TCP socket of this process whose
/// remote end is ip:port; the owner (CAF) then sees the end of the stream
/// and closes it. Returns how many.
size_t shutdown_connections_to(const std::string& ip, uint16_t port);

} // namespace aicon
