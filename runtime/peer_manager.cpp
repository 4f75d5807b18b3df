#include "runtime/peer_manager.hpp"
#include "runtime/openssl_fix.hpp"

#include <chrono>

#include <algorithm>
#include <map>

#include <sys/stat.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <fmt/format.h>
#include <sodium.h>

#include "runtime/atoms.hpp"
#include "runtime/config.hpp"
#include "runtime/directory.hpp"
#include "runtime/envelope.hpp"
#include "runtime/guard.hpp"
#include "runtime/log.hpp"
#include "runtime/peers_file.hpp"
#include "runtime/tls.hpp"
#include "schemas/host.capnp.h"

namespace aicon {

namespace {

enum class link_state { dialing, up, down };

struct peer_slot {
  net_address address;
  std::optional<node_id> expected;
  bool persistent = false;
  link_state state = link_state::down;
  uint32_t backoff_ms = 0;
  uint32_t failures = 0;
  caf::actor gatekeeper;
  std::optional<node_id> node;
  std::array<uint8_t, 32> nonce{};   ///< of the hello in flight
  caf::actor pending_gatekeeper;     ///< linked, not yet proven
  std::chrono::steady_clock::time_point hello_sent{}; ///< for the link-up round trip
  std::chrono::steady_clock::time_point dial_started{}; ///< of the first try (see dial)
  bool redialing = false; ///< dialing again after CAF's handshake-window timeout
  std::vector<caf::typed_response_promise<std::string>> waiting;
};

/// A hello answer, from the helper to the peer manager. Not registered with
/// CAF, so no peer can forge one.
struct hello_result {
  uint64_t slot = 0;
  envelope reply;
  caf::error err;
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, hello_result& x) {
  return f(caf::meta::type_name("aicon::hello_result"), x.slot, x.reply, x.err);
}

/// Asks a freshly linked gatekeeper for its signed hello. Its handle reaches
/// the peer (as the sender), so its mailbox is guarded; it lives for one
/// request.
class hello_actor : public guarded_actor {
public:
  hello_actor(caf::actor_config& cfg, const role_context& ctx, caf::actor manager,
              caf::actor gatekeeper, envelope req, uint64_t slot)
    : guarded_actor(cfg, ctx),
      manager_(std::move(manager)),
      gatekeeper_(std::move(gatekeeper)),
      req_(std::move(req)),
      slot_(slot) {
  }

  const char* name() const override {
    return "aicon.hello";
  }

protected:
  admission admit(const caf::mailbox_element& x) override {
    return x.mid.is_response() ? admission::admit : guarded_actor::admit(x);
  }

  caf::behavior make_behavior() override {
    request(gatekeeper_, std::chrono::milliseconds(ctx_.lim.connect_timeout_ms),
            route_atom::value, std::string{"directory"}, req_)
      .then(
        [this](envelope& reply) {
          send(manager_, hello_result{slot_, std::move(reply), caf::error{}});
          quit();
        },
        [this](caf::error& err) {
          send(manager_, hello_result{slot_, envelope{}, std::move(err)});
          quit();
        });
    return {[](int) {}};
  }

private:
  caf::actor manager_;
  caf::actor gatekeeper_;
  envelope req_;
  uint64_t slot_;
};

struct peer_manager_state {
  role_context ctx;
  caf::io::middleman_actor mm;
  uint64_t next_slot = 0;
  std::map<uint64_t, peer_slot> slots;
  std::optional<host_config> cfg;     ///< a host's: peers.toml is watched
  std::vector<node_id> admitted;      ///< what the TLS allowlist holds now
  std::pair<int64_t, int64_t> seen{-1, -1}; ///< peers.toml (mtime ns, size) last read
  static inline const char* name = "aicon.peer_manager";
};

using self_ptr = caf::stateful_actor<peer_manager_state>*;

void dial(self_ptr self, uint64_t slot_id);

std::string label(const peer_slot& slot) {
  if (slot.node)
    return fmt::format("{} at {}", slot.node->short_hex(), slot.address.to_string());
  if (slot.expected)
    return fmt::format("{} at {}", slot.expected->short_hex(), slot.address.to_string());
  return slot.address.to_string();
}

void fail(self_ptr self, uint64_t slot_id, const caf::error& err) {
  auto i = self->state.slots.find(slot_id);
  if (i == self->state.slots.end())
    return;
  auto& slot = i->second;
  for (auto& rp : slot.waiting)
    rp.deliver(err);
  slot.waiting.clear();
  if (!slot.persistent) {
    self->state.slots.erase(i);
    return;
  }
  auto& lim = self->state.ctx.lim;
  slot.state = link_state::down;
  slot.backoff_ms = slot.backoff_ms == 0 ? lim.reconnect_min_ms
                                         : std::min(slot.backoff_ms * 2, lim.reconnect_max_ms);
  // One line when a peer first fails, then one every 8 failures: a peer that
  // stays away does not flood the log.
  if (slot.failures++ % 8 == 0)
    log_warning("peer {} unreachable: {}; retrying every <= {} ms", label(slot), describe(err),
                lim.reconnect_max_ms);
  self->delayed_send(self, std::chrono::milliseconds(slot.backoff_ms), retry_atom::value,
                     slot_id);
}

void up(self_ptr self, uint64_t slot_id, caf::actor gatekeeper, const node_id& node,
        std::vector<std::string> roles, std::string site) {
  auto i = self->state.slots.find(slot_id);
  if (i == self->state.slots.end())
    return;
  auto& slot = i->second;
  slot.state = link_state::up;
  slot.backoff_ms = 0;
  slot.failures = 0;
  slot.gatekeeper = gatekeeper;
  slot.node = node;
  self->monitor(gatekeeper);
  std::string role_list;
  for (auto& r : roles)
    role_list += role_list.empty() ? r : "," + r;
  // The signed hello's round trip (TLS link already up): the link's RTT.
  double rtt_ms =
    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - slot.hello_sent)
      .count();
  log_info("peer up {} at {} site={} roles={} rtt={:.2f} ms", node.short_hex(),
           slot.address.to_string(), site, role_list, rtt_ms);
  self->send(self->state.ctx.directory, peer_up_atom::value, node.hex(), gatekeeper,
             std::move(roles), slot.address.to_string(), site, rtt_ms);
  for (auto& rp : slot.waiting)
    rp.deliver(node.hex());
  slot.waiting.clear();
}

void on_hello(self_ptr self, uint64_t slot_id, caf::actor gatekeeper,
              const std::array<uint8_t, 32>& nonce, const envelope& reply) {
  auto i = self->state.slots.find(slot_id);
  if (i == self->state.slots.end())
    return;
  if (auto err = error_of_reply(reply)) {
    fail(self, slot_id, err);
    return;
  }
  opened<schema::HelloResponse> msg{reply};
  if (!msg) {
    fail(self, slot_id, msg.error());
    return;
  }
  auto node = node_id::from_bytes({msg->getNode().begin(), msg->getNode().size()});
  if (!node) {
    fail(self, slot_id, node.error());
    return;
  }
  auto sig = msg->getSignature();
  if (!verify_signature(*node, hello_signing_bytes(nonce, *node), {sig.begin(), sig.size()})) {
    fail(self, slot_id,
         make_error(errc::bad_signature,
                    fmt::format("peer at {} claims NodeId {} but its hello signature does not "
                                "verify",
                                i->second.address.to_string(), node->short_hex())));
    return;
  }
  auto& expected = i->second.expected;
  if (expected && *expected != *node) {
    fail(self, slot_id,
         make_error(errc::forbidden, fmt::format("peer at {} is {}, but the config expects {}",
                                                 i->second.address.to_string(),
                                                 node->short_hex(), expected->short_hex())));
    return;
  }
  std::vector<std::string> roles;
  for (auto r : msg->getRoles())
    roles.emplace_back(r.cStr());
  up(self, slot_id, gatekeeper, *node, std::move(roles), msg->getSite().cStr());
}

void hello(self_ptr self, uint64_t slot_id, caf::actor gatekeeper) {
  std::array<uint8_t, 32> nonce;
  randombytes_buf(nonce.data(), nonce.size());
  auto i = self->state.slots.find(slot_id);
  if (i == self->state.slots.end())
    return;
  i->second.nonce = nonce;
  i->second.pending_gatekeeper = gatekeeper;
  i->second.hello_sent = std::chrono::steady_clock::now();
  auto req = make_envelope<schema::HelloRequest>([&](schema::HelloRequest::Builder b) {
    b.setNonce(kj::arrayPtr(nonce.data(), nonce.size()));
  });
  // The helper, not the peer manager, is the one whose handle the peer sees.
  self->spawn<hello_actor>(self->state.ctx, caf::actor{self}, gatekeeper, std::move(req),
                           slot_id);
}

void dial(self_ptr self, uint64_t slot_id) {
  auto i = self->state.slots.find(slot_id);
  if (i == self->state.slots.end())
    return;
  auto& slot = i->second;
  slot.state = link_state::dialing;
  if (!slot.redialing)
    slot.dial_started = std::chrono::steady_clock::now();
  slot.redialing = false;
  self
    ->request(self->state.mm, std::chrono::milliseconds(self->state.ctx.lim.connect_timeout_ms),
              caf::connect_atom::value, slot.address.host, slot.address.port)
    .then(
      [self, slot_id](const caf::node_id&, caf::strong_actor_ptr& ptr,
                      const std::set<std::string>&) {
        if (!ptr) {
          fail(self, slot_id,
               make_error(errc::peer_down, "the peer published no actor on that port"));
          return;
        }
        hello(self, slot_id, caf::actor_cast<caf::actor>(std::move(ptr)));
      },
      [self, slot_id](caf::error& err) {
        // CAF 0.17's BASP broker creates a dialed connection's context with
        // last_seen at the clock's epoch; a heartbeat tick that falls before
        // the peer's handshake arrives closes it as "connection_timeout"
        // long before the timeout (about one dial in a hundred here). That
        // is not the peer's fault: dial again at once, until the real
        // timeout has passed since the first try; a peer that is silent
        // still fails after connection_timeout_ms.
        auto i = self->state.slots.find(slot_id);
        if (i != self->state.slots.end() && err == caf::sec::connection_timeout
            && std::chrono::steady_clock::now() - i->second.dial_started
                 < std::chrono::milliseconds(self->state.ctx.lim.connection_timeout_ms)) {
          log_debug("dialing {} again: CAF closed the link in its handshake window",
                    i->second.address.to_string());
          i->second.redialing = true;
          dial(self, slot_id);
          return;
        }
        fail(self, slot_id, err);
      });
}

/// Opens a slot for `address` and dials it; `rp` (if any) gets the NodeId
/// at the first successful hello.
caf::error start_dial(self_ptr self, const std::string& address, const std::string& expected_hex,
                      bool persistent, caf::typed_response_promise<std::string>* rp) {
  auto addr = net_address::parse(address);
  if (!addr)
    return addr.error();
  peer_slot slot;
  slot.address = *addr;
  slot.persistent = persistent;
  if (!expected_hex.empty()) {
    auto id = node_id::from_hex(expected_hex);
    if (!id)
      return id.error();
    slot.expected = *id;
  }
  if (rp)
    slot.waiting.push_back(*rp);
  auto id = self->state.next_slot++;
  self->state.slots.emplace(id, std::move(slot));
  dial(self, id);
  return caf::none;
}

/// Drops every slot for `node` and closes the link to it: CAF's routing
/// table names the connection's remote end, whose socket is shut down.
void drop_peer(self_ptr self, const node_id& node) {
  auto& st = self->state;
  for (auto i = st.slots.begin(); i != st.slots.end();) {
    auto& slot = i->second;
    bool match = (slot.node && *slot.node == node) || (slot.expected && *slot.expected == node);
    if (!match) {
      ++i;
      continue;
    }
    for (auto& rp : slot.waiting)
      rp.deliver(make_error(errc::forbidden, fmt::format("peer {} was removed", node.short_hex())));
    if (slot.state == link_state::up && slot.gatekeeper) {
      auto caf_node = slot.gatekeeper.node();
      self->demonitor(slot.gatekeeper);
      self->send(st.ctx.directory, peer_down_atom::value, node.hex(), std::string{"removed"});
      self->request(st.mm, std::chrono::seconds(5), caf::get_atom::value, caf_node)
        .then(
          [node](const caf::node_id&, const std::string& addr, uint16_t port) {
            auto n = addr.empty() ? 0 : shutdown_connections_to(addr, port);
            log_info("peer {} removed: {} connection(s) to {}:{} closed", node.short_hex(), n,
                     addr, port);
          },
          [node](caf::error& err) {
            log_warning("peer {} removed; its connection was not found: {}", node.short_hex(),
                        caf::to_string(err));
          });
    } else {
      log_info("peer {} removed", node.short_hex());
    }
    i = st.slots.erase(i);
  }
  // A peer that dialed us (admitted, never dialed by us) has no slot: its
  // connections are found by the certificate it presented.
  if (auto n = shutdown_tls_links_of(node.bytes); n > 0)
    log_info("peer {} removed: {} TLS connection(s) where it presented its certificate closed",
             node.short_hex(), n);
}

/// Reads peers.toml again if it changed: new allowlist, new dials, drops.
void reload_peers(self_ptr self) {
  auto& st = self->state;
  auto path = st.cfg->data_dir / peers_file_name;
  struct stat sb {};
  std::pair<int64_t, int64_t> now{0, 0};
  if (::stat(path.c_str(), &sb) == 0)
    now = {static_cast<int64_t>(sb.st_mtim.tv_sec) * 1'000'000'000 + sb.st_mtim.tv_nsec,
           static_cast<int64_t>(sb.st_size)};
  if (now == st.seen)
    return;
  st.seen = now;
  auto p = load_runtime_peers(st.cfg->data_dir);
  if (!p) {
    log_error("peers: {} (keeping the current peers)", describe(p.error()));
    return;
  }
  auto admitted = effective_admitted(*st.cfg, *p);
  if (admitted != st.admitted && !st.cfg->dev_open) {
    auto tls = prepare_tls_files(*st.ctx.self, st.cfg->data_dir, admitted,
                                 st.cfg->data_dir / "tls");
    if (!tls) {
      log_error("peers: cannot rewrite the TLS allowlist: {} (keeping the current peers)",
                describe(tls.error()));
      return;
    }
  }
  for (auto& old : st.admitted)
    if (std::find(admitted.begin(), admitted.end(), old) == admitted.end())
      drop_peer(self, old);
  st.admitted = admitted;
  for (auto& e : effective_connect(*st.cfg, *p)) {
    bool dialing = false;
    for (auto& [id, slot] : st.slots)
      dialing = dialing || (slot.expected && *slot.expected == e.node);
    if (!dialing) {
      log_info("peer {} added: dialing {}", e.node.short_hex(), e.address.to_string());
      start_dial(self, e.address.to_string(), e.node.hex(), true, nullptr);
    }
  }
}

caf::behavior peer_manager(self_ptr self, role_context ctx, bool use_tls,
                           std::optional<host_config> cfg) {
  self->state.ctx = std::move(ctx);
  self->state.cfg = std::move(cfg);
  if (self->state.cfg) {
    if (auto p = load_runtime_peers(self->state.cfg->data_dir)) {
      self->state.admitted = effective_admitted(*self->state.cfg, *p);
      struct stat sb {};
      auto path = self->state.cfg->data_dir / peers_file_name;
      self->state.seen = {0, 0};
      if (::stat(path.c_str(), &sb) == 0)
        self->state.seen = {static_cast<int64_t>(sb.st_mtim.tv_sec) * 1'000'000'000
                              + sb.st_mtim.tv_nsec,
                            static_cast<int64_t>(sb.st_size)};
    }
    self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
  }
  self->state.mm = use_tls ? self->system().openssl_manager().actor_handle()
                           : self->system().middleman().actor_handle();
  self->set_down_handler([self](caf::down_msg& msg) {
    for (auto& [id, slot] : self->state.slots) {
      if (slot.state != link_state::up || slot.gatekeeper.address() != msg.source)
        continue;
      log_warning("peer down {}: {}", label(slot), caf::to_string(msg.reason));
      self->send(self->state.ctx.directory, peer_down_atom::value, slot.node->hex(),
                 caf::to_string(msg.reason));
      slot.gatekeeper = nullptr;
      slot.state = link_state::down;
      if (slot.persistent) {
        slot.backoff_ms = self->state.ctx.lim.reconnect_min_ms;
        self->delayed_send(self, std::chrono::milliseconds(slot.backoff_ms),
                           retry_atom::value, id);
      }
    }
  });
  return {
    [self](dial_atom, const std::string& address, const std::string& expected_hex,
           bool persistent) -> caf::result<std::string> {
      auto rp = self->make_response_promise<std::string>();
      if (auto err = start_dial(self, address, expected_hex, persistent, &rp))
        return err;
      return rp;
    },
    [self](hello_result& r) {
      auto i = self->state.slots.find(r.slot);
      if (i == self->state.slots.end())
        return;
      auto gatekeeper = std::move(i->second.pending_gatekeeper);
      if (r.err)
        fail(self, r.slot, r.err);
      else
        on_hello(self, r.slot, gatekeeper, i->second.nonce, r.reply);
    },
    [self](tick_atom) {
      reload_peers(self);
      self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
    },
    [self](retry_atom, uint64_t slot_id) {
      auto i = self->state.slots.find(slot_id);
      if (i != self->state.slots.end() && i->second.state == link_state::down)
        dial(self, slot_id);
    },
  };
}

} // namespace

caf::actor spawn_peer_manager(caf::actor_system& sys, const role_context& ctx, bool use_tls,
                              std::optional<host_config> cfg) {
  return sys.spawn(peer_manager, ctx, use_tls, std::move(cfg));
}

} // namespace aicon
