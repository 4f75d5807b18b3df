#include "runtime/directory.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <random>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "runtime/atoms.hpp"
#include "runtime/envelope.hpp"
#include "runtime/guard.hpp"
#include "runtime/log.hpp"
#include "runtime/role.hpp"
#include "schemas/host.capnp.h"

namespace aicon {

std::vector<uint8_t> hello_signing_bytes(std::span<const uint8_t> nonce, const node_id& node) {
  static constexpr std::string_view tag = "aicon-hello-v1";
  std::vector<uint8_t> out;
  out.reserve(tag.size() + nonce.size() + node.bytes.size());
  for (char c : tag)
    out.push_back(static_cast<uint8_t>(c));
  out.insert(out.end(), nonce.begin(), nonce.end());
  out.insert(out.end(), node.bytes.begin(), node.bytes.end());
  return out;
}

std::vector<uint8_t> member_signing_bytes(const node_id& node, const member_fields& m) {
  std::vector<uint8_t> out;
  auto put = [&](const void* p, size_t n) {
    auto b = static_cast<const uint8_t*>(p);
    out.insert(out.end(), b, b + n);
  };
  auto put_u64 = [&](uint64_t x) {
    for (int i = 0; i < 8; ++i)
      out.push_back(static_cast<uint8_t>(x >> (8 * i)));
  };
  auto put_text = [&](const std::string& t) {
    put_u64(t.size());
    put(t.data(), t.size());
  };
  put("aicon-member-v1", 15);
  put(node.bytes.data(), node.bytes.size());
  put_text(m.address);
  put_text(m.site);
  put_u64(m.roles.size());
  for (auto& r : m.roles)
    put_text(r);
  put_u64(m.incarnation);
  put_u64(m.heartbeat);
  put_u64(m.rtts.size());
  for (auto& [n, ms] : m.rtts) {
    put(n.bytes.data(), n.bytes.size());
    uint64_t bits;
    std::memcpy(&bits, &ms, 8);
    put_u64(bits);
  }
  return out;
}

std::pair<std::string, std::string> split_name(const std::string& name) {
  auto at = name.find('@');
  if (at == std::string::npos)
    return {name, ""};
  return {name.substr(0, at), name.substr(at + 1)};
}

namespace {

// --- remote_role: a local stand-in for one role on one peer ----------------

/// Forwards envelopes to one role on one peer and fails pending requests
/// with peer_down when the peer's gatekeeper goes away. Its handle reaches
/// the peer (as the sender of its requests), so its mailbox is guarded.
class remote_role_actor : public guarded_actor {
public:
  remote_role_actor(caf::actor_config& cfg, const role_context& ctx, caf::actor gatekeeper,
                    std::string role, std::string peer)
    : guarded_actor(cfg, ctx),
      gatekeeper_(std::move(gatekeeper)),
      role_(std::move(role)),
      peer_(std::move(peer)) {
  }

  const char* name() const override {
    return "aicon.remote_role";
  }

protected:
  admission admit(const caf::mailbox_element& x) override {
    // Answers to its own requests (CAF drops answers nobody waits for),
    // envelopes to forward, and the monitor's down message. A forged down
    // message can at worst close this link; the directory then makes a new
    // one on the next lookup.
    if (x.mid.is_response() || x.content().match_elements<envelope>()
        || x.content().match_elements<caf::down_msg>())
      return admission::admit;
    return guarded_actor::admit(x);
  }

  caf::behavior make_behavior() override {
    monitor(gatekeeper_);
    set_down_handler([this](caf::down_msg& msg) {
      if (msg.source != gatekeeper_.address())
        return;
      auto err = make_error(errc::peer_down,
                            fmt::format("link to {} lost while waiting for '{}' ({})", peer_,
                                        role_, caf::to_string(msg.reason)));
      for (auto& [id, rp] : pending_)
        rp.deliver(err);
      pending_.clear();
      quit(); // normal exit: does not take the linked directory down
    });
    return {
      [this](const envelope& env) -> caf::result<envelope> {
        if (!current_message_id().is_request()) {
          send(gatekeeper_, route_atom::value, role_, env);
          return caf::delegated<envelope>{};
        }
        auto rp = make_response_promise<envelope>();
        auto id = next_id_++;
        pending_.emplace(id, rp);
        // The caller's own request has the timeout: a run of training
        // steps lasts hours, a lookup milliseconds. Requests the peer never
        // answers stay here until the link goes down, bounded: past
        // pending_max the oldest is failed.
        if (pending_.size() > pending_max) {
          pending_.begin()->second.deliver(
            make_error(errc::timeout, fmt::format("'{}@{}' left {} requests unanswered", role_,
                                                  peer_, pending_max)));
          pending_.erase(pending_.begin());
        }
        request(gatekeeper_, caf::infinite, route_atom::value, role_, env)
          .then(
            [this, id](envelope& reply) {
              auto i = pending_.find(id);
              if (i != pending_.end()) {
                i->second.deliver(std::move(reply));
                pending_.erase(i);
              }
            },
            [this, id](caf::error& err) {
              auto i = pending_.find(id);
              if (i != pending_.end()) {
                i->second.deliver(std::move(err));
                pending_.erase(i);
              }
            });
        return rp;
      },
    };
  }

private:
  caf::actor gatekeeper_;
  std::string role_;
  std::string peer_; // short hex, for messages
  uint64_t next_id_ = 0;
  std::map<uint64_t, caf::typed_response_promise<envelope>> pending_;
  static constexpr size_t pending_max = 4096;
};

// --- the directory ----------------------------------------------------------

struct peer_record {
  caf::actor gatekeeper;
  std::vector<std::string> roles;
  std::string address;
  std::string site;
  bool up = false;
  double rtt_ms = 0;        ///< smoothed ping round trip (first: the signed hello's)
  uint32_t rtt_samples = 0; ///< pings answered since the link came up
};

struct member_rec : member_fields {
  std::vector<uint8_t> signature;
  std::chrono::steady_clock::time_point advanced; ///< heartbeat last seen to advance
  bool reported_up = false;                       ///< what the log last said
};

constexpr size_t members_max = 4096;

struct directory_state {
  role_context ctx;
  uint16_t listen_port = 0;
  std::map<std::string, caf::actor> local;
  std::map<node_id, peer_record> peers;
  std::map<std::pair<node_id, std::string>, caf::actor> links;
  std::unique_ptr<message_table> table;
  std::map<node_id, member_rec> members; ///< this host included
  uint64_t incarnation = 0;
  uint64_t ping_nonce = 0;
  std::mt19937_64 rng{std::random_device{}()};
  static inline const char* name = "aicon.directory";

  bool member_up(const node_id& id, const member_rec& m,
                 std::chrono::steady_clock::time_point now) const {
    return id == ctx.self->id()
           || now - m.advanced < std::chrono::milliseconds(ctx.lim.member_down_ms);
  }

  /// Bumps and re-signs this host's own state.
  void refresh_self() {
    auto& me = members[ctx.self->id()];
    me.address = fmt::format("{}:{}", ctx.bind_host, listen_port);
    me.site = ctx.site;
    me.roles.clear();
    for (auto& [name, _] : local)
      me.roles.push_back(name);
    me.incarnation = incarnation;
    ++me.heartbeat;
    me.rtts.clear();
    for (auto& [id, rec] : peers)
      if (rec.up && rec.rtt_samples > 0)
        me.rtts.emplace_back(id, rec.rtt_ms);
    auto sig = ctx.self->sign(member_signing_bytes(ctx.self->id(), me));
    me.signature.assign(sig.begin(), sig.end());
    me.advanced = std::chrono::steady_clock::now();
    me.reported_up = true;
  }

  envelope make_gossip() const {
    auto now = std::chrono::steady_clock::now();
    return make_envelope<schema::Gossip>([&](schema::Gossip::Builder b) {
      auto list = b.initMembers(static_cast<unsigned>(members.size()));
      auto ages = b.initAgesMs(static_cast<unsigned>(members.size()));
      unsigned i = 0;
      for (auto& [id, m] : members) {
        auto e = list[i];
        e.setNode(kj::arrayPtr(id.bytes.data(), 32));
        e.setAddress(m.address);
        e.setSite(m.site);
        auto roles = e.initRoles(static_cast<unsigned>(m.roles.size()));
        for (unsigned k = 0; k < m.roles.size(); ++k)
          roles.set(k, m.roles[k]);
        e.setIncarnation(m.incarnation);
        e.setHeartbeat(m.heartbeat);
        auto rtts = e.initRtts(static_cast<unsigned>(m.rtts.size()));
        for (unsigned k = 0; k < m.rtts.size(); ++k) {
          rtts[k].setNode(kj::arrayPtr(m.rtts[k].first.bytes.data(), 32));
          rtts[k].setMs(m.rtts[k].second);
        }
        e.setSignature(kj::arrayPtr(m.signature.data(), m.signature.size()));
        ages.set(i, static_cast<uint64_t>(
                      std::chrono::duration_cast<std::chrono::milliseconds>(now - m.advanced)
                        .count()));
        ++i;
      }
    });
  }

  /// Takes every entry newer than what this host has and signed by its
  /// member; returns how many were taken.
  size_t merge(schema::Gossip::Reader g) {
    size_t taken = 0;
    auto now = std::chrono::steady_clock::now();
    auto entries = g.getMembers();
    auto ages = g.getAgesMs();
    for (unsigned i = 0; i < entries.size(); ++i) {
      auto e = entries[i];
      auto id = node_id::from_bytes({e.getNode().begin(), e.getNode().size()});
      if (!id || *id == ctx.self->id())
        continue;
      auto it = members.find(*id);
      if (it != members.end()
          && std::pair{e.getIncarnation(), e.getHeartbeat()}
               <= std::pair{it->second.incarnation, it->second.heartbeat})
        continue;
      if (it == members.end() && members.size() >= members_max)
        continue;
      if (e.getRoles().size() > 64 || e.getRtts().size() > members_max
          || e.getAddress().size() > 256 || e.getSite().size() > 256)
        continue;
      member_rec m;
      m.address = e.getAddress().cStr();
      m.site = e.getSite().cStr();
      for (auto r : e.getRoles())
        m.roles.emplace_back(r.cStr());
      m.incarnation = e.getIncarnation();
      m.heartbeat = e.getHeartbeat();
      bool rtts_ok = true;
      for (auto r : e.getRtts()) {
        auto n = node_id::from_bytes({r.getNode().begin(), r.getNode().size()});
        if (!n) {
          rtts_ok = false;
          break;
        }
        m.rtts.emplace_back(*n, r.getMs());
      }
      auto sig = e.getSignature();
      if (!rtts_ok
          || !verify_signature(*id, member_signing_bytes(*id, m), {sig.begin(), sig.size()})) {
        ctx.counters->malformed_dropped.fetch_add(1);
        continue;
      }
      m.signature.assign(sig.begin(), sig.end());
      uint64_t age = i < ages.size() ? std::min<uint64_t>(ages[i], ctx.lim.member_down_ms) : 0;
      m.advanced = now - std::chrono::milliseconds(age);
      m.reported_up = it != members.end() && it->second.reported_up;
      members[*id] = std::move(m);
      ++taken;
    }
    return taken;
  }

  /// Logs every member whose state changed since the last check.
  void report_changes() {
    auto now = std::chrono::steady_clock::now();
    for (auto& [id, m] : members) {
      bool up = member_up(id, m, now);
      if (up == m.reported_up)
        continue;
      m.reported_up = up;
      std::string roles;
      for (auto& r : m.roles)
        roles += roles.empty() ? r : "," + r;
      log_info("member {} {} at {} site={} roles={}", id.short_hex(), up ? "up" : "down",
               m.address, m.site, roles);
    }
  }

  /// Median round trip between every pair of sites some member measured.
  std::map<std::pair<std::string, std::string>, double> site_rtts() const {
    std::map<std::pair<std::string, std::string>, std::vector<double>> samples;
    for (auto& [id, m] : members)
      for (auto& [peer, ms] : m.rtts) {
        auto p = members.find(peer);
        if (p == members.end() || p->second.site == m.site || ms <= 0)
          continue;
        auto key = std::minmax(m.site, p->second.site);
        samples[{key.first, key.second}].push_back(ms);
      }
    std::map<std::pair<std::string, std::string>, double> out;
    for (auto& [k, v] : samples) {
      std::sort(v.begin(), v.end());
      out[k] = v[v.size() / 2];
    }
    return out;
  }

  /// The link actor to `role` on up peer `node`, made on first use.
  caf::actor link_to(caf::stateful_actor<directory_state>* self, const node_id& node,
                     const std::string& role) {
    auto key = std::make_pair(node, role);
    auto l = links.find(key);
    if (l != links.end())
      return l->second;
    auto& p = peers.at(node);
    auto link = self->spawn<remote_role_actor, caf::linked>(ctx, p.gatekeeper, role,
                                                            node.short_hex());
    self->monitor(link);
    links.emplace(key, link);
    return link;
  }

  caf::expected<node_id> resolve_node(const std::string& text) const {
    if (text.size() == 64) {
      auto id = node_id::from_hex(text);
      if (!id)
        return id.error();
      return *id;
    }
    // A unique hex prefix of at least 8 digits names a known peer.
    if (text.size() >= 8) {
      std::optional<node_id> found;
      for (auto& [id, rec] : peers)
        if (id.hex().rfind(text, 0) == 0) {
          if (found)
            return make_error(errc::unknown_node,
                              fmt::format("node prefix '{}' is ambiguous", text));
          found = id;
        }
      if (ctx.self->id().hex().rfind(text, 0) == 0)
        found = ctx.self->id();
      if (found)
        return *found;
    }
    return make_error(errc::unknown_node,
                      fmt::format("no peer '{}' is known (give a NodeId or a unique prefix of "
                                  ">= 8 hex digits)",
                                  text));
  }

  caf::expected<caf::actor> lookup_local(const std::string& role) const {
    auto i = local.find(role);
    if (i == local.end())
      return make_error(errc::unknown_role, fmt::format("this host runs no role '{}'", role));
    return i->second;
  }
};

caf::behavior directory(caf::stateful_actor<directory_state>* self, role_context ctx) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.table = std::make_unique<message_table>("directory", directory_access);
  st.table->on<schema::HelloRequest>([self](schema::HelloRequest::Reader req)
                                       -> caf::result<envelope> {
    auto& st = self->state;
    auto nonce = req.getNonce();
    if (nonce.size() != 32)
      return make_error(errc::invalid_argument,
                        fmt::format("HelloRequest.nonce must be 32 bytes, got {}", nonce.size()));
    auto sig = st.ctx.self->sign(
      hello_signing_bytes({nonce.begin(), nonce.size()}, st.ctx.self->id()));
    return make_envelope<schema::HelloResponse>([&](schema::HelloResponse::Builder b) {
      auto& id = st.ctx.self->id();
      b.setNode(kj::arrayPtr(id.bytes.data(), id.bytes.size()));
      b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
      auto roles = b.initRoles(static_cast<unsigned>(st.local.size()));
      unsigned i = 0;
      for (auto& [name, _] : st.local)
        roles.set(i++, name);
      b.setSite(st.ctx.site);
      b.setVersion("0.1.0");
    });
  });
  st.table->on<schema::StatusRequest>([self](schema::StatusRequest::Reader)
                                        -> caf::result<envelope> {
    auto& st = self->state;
    return make_envelope<schema::StatusResponse>([&](schema::StatusResponse::Builder b) {
      auto& id = st.ctx.self->id();
      b.setNode(kj::arrayPtr(id.bytes.data(), id.bytes.size()));
      auto roles = b.initRoles(static_cast<unsigned>(st.local.size()));
      unsigned i = 0;
      for (auto& [name, _] : st.local)
        roles.set(i++, name);
      auto peers = b.initPeers(static_cast<unsigned>(st.peers.size()));
      i = 0;
      for (auto& [pid, rec] : st.peers) {
        auto p = peers[i++];
        p.setNode(kj::arrayPtr(pid.bytes.data(), pid.bytes.size()));
        p.setAddress(rec.address);
        p.setUp(rec.up);
        p.setSite(rec.site);
        p.setRttMs(rec.rtt_ms);
        p.setRttSamples(rec.rtt_samples);
        auto pr = p.initRoles(static_cast<unsigned>(rec.roles.size()));
        for (unsigned k = 0; k < rec.roles.size(); ++k)
          pr.set(k, rec.roles[k]);
      }
      b.setRunningActors(static_cast<uint32_t>(self->system().registry().running()));
      b.setMalformedDropped(st.ctx.counters->malformed_dropped.load());
      b.setRequestsServed(st.ctx.counters->requests_served.load());
      b.setSite(st.ctx.site);
      b.setListenPort(st.listen_port);
      b.setBadBlocks(st.ctx.counters->bad_blocks.load());
      auto now = std::chrono::steady_clock::now();
      auto ms = b.initMembers(static_cast<unsigned>(st.members.size()));
      i = 0;
      for (auto& [mid, m] : st.members) {
        auto e = ms[i++];
        e.setNode(kj::arrayPtr(mid.bytes.data(), 32));
        e.setAddress(m.address);
        e.setSite(m.site);
        auto mr = e.initRoles(static_cast<unsigned>(m.roles.size()));
        for (unsigned k = 0; k < m.roles.size(); ++k)
          mr.set(k, m.roles[k]);
        e.setUp(st.member_up(mid, m, now));
        e.setHeartbeat(m.heartbeat);
        e.setIncarnation(m.incarnation);
        e.setSinceMs(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(now - m.advanced).count()));
      }
    });
  });
  st.table->on<schema::Gossip>([self](schema::Gossip::Reader g) -> caf::result<envelope> {
    self->state.merge(g);
    return self->state.make_gossip();
  });
  st.table->on<schema::Ping>([](schema::Ping::Reader p) -> caf::result<envelope> {
    auto nonce = p.getNonce();
    return make_envelope<schema::Pong>([nonce](schema::Pong::Builder b) { b.setNonce(nonce); });
  });
  st.incarnation = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
  self->delayed_send(self, std::chrono::milliseconds(st.ctx.lim.gossip_ms), gossip_atom::value);
  self->delayed_send(self, std::chrono::milliseconds(st.ctx.lim.ping_ms), ping_atom::value);
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  // A link actor that closed (its peer went away) is forgotten, so the next
  // lookup makes a fresh one.
  self->set_down_handler([self](caf::down_msg& msg) {
    auto& links = self->state.links;
    for (auto i = links.begin(); i != links.end();) {
      if (i->second.address() == msg.source)
        i = links.erase(i);
      else
        ++i;
    }
  });
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
    [self](register_atom, const std::string& role, caf::actor handle) {
      self->state.local[role] = std::move(handle);
    },
    [self](port_atom, uint16_t port) {
      self->state.listen_port = port;
      self->state.refresh_self();
    },
    [self](gossip_atom) {
      auto& st = self->state;
      self->delayed_send(self, std::chrono::milliseconds(st.ctx.lim.gossip_ms),
                         gossip_atom::value);
      // A client (no listen port) is not a member: it neither speaks for
      // itself nor spreads views.
      if (st.listen_port == 0)
        return;
      st.refresh_self();
      std::vector<node_id> up;
      for (auto& [id, rec] : st.peers)
        if (rec.up && rec.gatekeeper)
          up.push_back(id);
      if (!up.empty()) {
        auto target = up[st.rng() % up.size()];
        self
          ->request(st.link_to(self, target, "directory"),
                    std::chrono::milliseconds(st.ctx.lim.member_down_ms), st.make_gossip())
          .then(
            [self](envelope& reply) {
              opened<schema::Gossip> g{reply};
              if (g)
                self->state.merge(g.root());
            },
            [](caf::error&) {});
      }
      st.report_changes();
    },
    [self](ping_atom) {
      auto& st = self->state;
      for (auto& [id, rec] : st.peers) {
        if (!rec.up || !rec.gatekeeper)
          continue;
        auto nonce = ++st.ping_nonce;
        auto sent = std::chrono::steady_clock::now();
        auto node = id;
        self
          ->request(st.link_to(self, id, "directory"),
                    std::chrono::milliseconds(std::max(2 * st.ctx.lim.ping_ms, 1000u)),
                    make_envelope<schema::Ping>([nonce](schema::Ping::Builder b) {
                      b.setNonce(nonce);
                    }))
          .then(
            [self, node, nonce, sent](envelope& reply) {
              opened<schema::Pong> p{reply};
              if (!p || p->getNonce() != nonce)
                return;
              auto i = self->state.peers.find(node);
              if (i == self->state.peers.end() || !i->second.up)
                return;
              double ms = std::chrono::duration<double, std::milli>(
                            std::chrono::steady_clock::now() - sent)
                            .count();
              auto& rec = i->second;
              rec.rtt_ms = rec.rtt_samples == 0 ? ms : 0.8 * rec.rtt_ms + 0.2 * ms;
              ++rec.rtt_samples;
            },
            [](caf::error&) {});
      }
      self->delayed_send(self, std::chrono::milliseconds(st.ctx.lim.ping_ms), ping_atom::value);
    },
    [self](rtt_atom) {
      std::vector<std::string> a, b;
      std::vector<double> ms;
      for (auto& [k, v] : self->state.site_rtts()) {
        a.push_back(k.first);
        b.push_back(k.second);
        ms.push_back(v);
      }
      return caf::make_message(std::move(a), std::move(b), std::move(ms));
    },
    [self](peers_atom, const std::string& role) {
      std::vector<std::string> out;
      for (auto& [id, rec] : self->state.peers)
        if (rec.up && std::find(rec.roles.begin(), rec.roles.end(), role) != rec.roles.end())
          out.push_back(id.hex());
      return out;
    },
    [self](lookup_atom, const std::string& name) -> caf::result<caf::actor> {
      auto& st = self->state;
      auto [role, node_text] = split_name(name);
      if (role.empty())
        return make_error(errc::invalid_argument,
                          fmt::format("'{}' names no role (expected role or role@node)", name));
      if (node_text.empty() || node_text == "local")
        return st.lookup_local(role);
      auto node = st.resolve_node(node_text);
      if (!node)
        return node.error();
      auto p = st.peers.find(*node);
      // A client process may share its host's key (an operator pinging their
      // own host): its own NodeId then names that host, not this process.
      if (*node == st.ctx.self->id() && (st.local.count(role) || p == st.peers.end()))
        return st.lookup_local(role);
      if (p == st.peers.end())
        return make_error(errc::unknown_node,
                          fmt::format("no link to {} (not a configured or connected peer)",
                                      node->short_hex()));
      if (!p->second.up)
        return make_error(errc::peer_down,
                          fmt::format("link to {} at {} is down", node->short_hex(),
                                      p->second.address));
      auto& roles = p->second.roles;
      if (std::find(roles.begin(), roles.end(), role) == roles.end())
        return make_error(errc::unknown_role,
                          fmt::format("{} runs no role '{}'", node->short_hex(), role));
      return st.link_to(self, *node, role);
    },
    [self](peer_up_atom, const std::string& node_hex, caf::actor gatekeeper,
           std::vector<std::string> roles, const std::string& address,
           const std::string& site, double rtt_ms) {
      auto node = node_id::from_hex(node_hex);
      if (!node)
        return;
      auto& rec = self->state.peers[*node];
      rec.gatekeeper = std::move(gatekeeper);
      rec.roles = std::move(roles);
      rec.address = address;
      rec.site = site;
      rec.rtt_ms = rtt_ms;
      rec.rtt_samples = 0;
      rec.up = true;
    },
    [self](peer_down_atom, const std::string& node_hex, const std::string&) {
      auto node = node_id::from_hex(node_hex);
      if (!node)
        return;
      auto& st = self->state;
      auto i = st.peers.find(*node);
      if (i != st.peers.end()) {
        i->second.up = false;
        i->second.gatekeeper = nullptr;
      }
      for (auto l = st.links.begin(); l != st.links.end();) {
        if (l->first.first == *node)
          l = st.links.erase(l);
        else
          ++l;
      }
    },
  };
}

} // namespace

caf::expected<caf::actor> lookup_blocking(caf::actor_system& sys, const caf::actor& directory,
                                          const std::string& name,
                                          std::chrono::milliseconds timeout) {
  caf::scoped_actor self{sys};
  caf::expected<caf::actor> result = make_error(errc::internal, "no answer");
  self->request(directory, timeout, lookup_atom::value, name)
    .receive([&](caf::actor& handle) { result = std::move(handle); },
             [&](caf::error& err) { result = std::move(err); });
  return result;
}

caf::expected<envelope> request_blocking(caf::actor_system& sys, const caf::actor& dst,
                                         envelope req, std::chrono::milliseconds timeout) {
  caf::scoped_actor self{sys};
  caf::expected<envelope> out = make_error(errc::internal, "no answer");
  self->request(dst, timeout, std::move(req))
    .receive(
      [&](envelope& reply) {
        if (auto err = error_of_reply(reply))
          out = std::move(err);
        else
          out = std::move(reply);
      },
      [&](caf::error& err) { out = std::move(err); });
  return out;
}

caf::actor spawn_directory(caf::actor_system& sys, const role_context& ctx) {
  return sys.spawn(directory, ctx);
}

} // namespace aicon
