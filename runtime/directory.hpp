// The directory: name -> handle, whether the role is on this host or on a
// peer. `lookup("echo")` and `lookup("echo@<nodeid>")` both return a
// caf::actor that takes envelopes; for a peer's role it is a local link
// actor that forwards to the peer's gatekeeper and fails pending requests
// with errc::peer_down when the link drops. Callers never touch the
// middleman.
//
// Local messages (never reachable from a peer: this handle is not exported):
//   (register_atom, std::string role, caf::actor)            -> void
//   (lookup_atom, std::string name)                           -> caf::actor
//   (peer_up_atom, std::string node_hex, caf::actor gatekeeper,
//    std::vector<std::string> roles, std::string address, std::string site,
//    double rtt_ms)
//   (peer_down_atom, std::string node_hex, std::string reason)
//   (port_atom, uint16_t)                                     listen port for status
//   (peers_atom, std::string role)      -> std::vector<std::string> NodeIds (hex)
//                                          of the up peers that run `role`
//   (rtt_atom) -> (std::vector<std::string> a, std::vector<std::string> b,
//                  std::vector<double> ms)  measured round trip between sites
//                                          a[i] and b[i] (median over host pairs)
// Membership: every gossip_ms the directory bumps its own signed
// MemberState and swaps views (Gossip) with one random up peer; every
// ping_ms it pings each up peer (Ping/Pong) and keeps a smoothed round
// trip, which its MemberState carries to everyone.
// As the "directory" role, through the gatekeeper, it answers the envelopes
// HelloRequest (signed proof of this host's NodeId) and StatusRequest.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include <chrono>
#include <span>
#include <string>
#include <vector>

#include "runtime/access.hpp"
#include "runtime/envelope.hpp"
#include "runtime/system.hpp"

namespace aicon {

/// Looks `name` up from code that is not an actor (CLI, tests, demo); waits
/// at most `timeout`. Never call it from inside an actor's handler.
caf::expected<caf::actor> lookup_blocking(caf::actor_system& sys, const caf::actor& directory,
                                          const std::string& name,
                                          std::chrono::milliseconds timeout);

/// Sends `req` to `dst` and waits (at most `timeout`) for the answer; an
/// ErrorReply comes back as its error. For detached actors and non-actor
/// code only (it blocks the calling thread).
caf::expected<envelope> request_blocking(caf::actor_system& sys, const caf::actor& dst,
                                         envelope req, std::chrono::milliseconds timeout);

/// Spawns the directory. `ctx.directory` is ignored.
caf::actor spawn_directory(caf::actor_system& sys, const role_context& ctx);

/// The bytes a host signs to answer a HelloRequest.
std::vector<uint8_t> hello_signing_bytes(std::span<const uint8_t> nonce, const node_id& node);

struct member_fields {
  std::string address, site;
  std::vector<std::string> roles;
  uint64_t incarnation = 0, heartbeat = 0;
  std::vector<std::pair<node_id, double>> rtts;
};
/// The bytes a member signs over its MemberState.
std::vector<uint8_t> member_signing_bytes(const node_id& node, const member_fields& m);

/// Splits "role@node" into its parts; node is empty for a local name.
std::pair<std::string, std::string> split_name(const std::string& name);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row directory_access[] = {
  {"HelloRequest", "any admitted peer", "(public) the answer is this host's signature over the asker's nonce", "-"},
  {"StatusRequest", "any admitted peer", "(public) counters, peers and roles an operator sees", "-"},
  {"Gossip", "any admitted peer", "(public) membership only steers lookups; every link is still admitted by its own certificate", "-"},
  {"Ping", "any admitted peer", "(public)", "-"},
};

} // namespace aicon
