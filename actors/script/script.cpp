#include "actors/script/script.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <lua.hpp>

#include "actors/ledger/chain.hpp"
#include "actors/script/sandbox.hpp"
#include "runtime/atoms.hpp"
#include "runtime/envelope.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "runtime/role.hpp"
#include "schemas/chain.capnp.h"
#include "schemas/host.capnp.h"
#include "schemas/script.capnp.h"

namespace aicon {

namespace {

using clock_type = std::chrono::steady_clock;
constexpr auto watch_period = std::chrono::milliseconds(250);
constexpr uint64_t blocks_per_tick_max = 16;
constexpr unsigned progress_per_poll_max = 10000; // the console's queue bound

struct session {
  std::unique_ptr<script::sandbox> box;
  clock_type::time_point last_poll;
};

struct script_state {
  role_context ctx;
  std::unique_ptr<message_table> table;
  std::map<std::string, session> sessions; // key: the 16 session bytes
  // What the watchers saw last.
  uint64_t height = 0;
  bool height_known = false;
  bool tip_in_flight = false;
  std::map<std::string, bool> peers_up; // node hex -> whether its link was up
  bool peers_known = false;
  bool peers_in_flight = false;
  static inline const char* name = "aicon.script";

  bool anyone_wants(const char* event) const {
    for (auto& [_, s] : sessions)
      if (s.box->has_handler(event))
        return true;
    return false;
  }
  void deliver(const char* event, const script::push_args& args) {
    for (auto& [_, s] : sessions)
      s.box->call(event, args);
  }
};

using self_ptr = caf::stateful_actor<script_state>*;

std::string session_key(capnp::Data::Reader d) {
  return {reinterpret_cast<const char*>(d.begin()), d.size()};
}

std::string key_hex(const std::string& key) {
  return to_hex({reinterpret_cast<const uint8_t*>(key.data()), key.size()}).substr(0, 8);
}

envelope output_of(session& s) {
  auto lines = s.box->take_lines();
  auto replies = s.box->take_replies();
  auto dropped = s.box->take_dropped();
  auto events = s.box->events();
  return make_envelope<schema::ScriptOutput>([&](schema::ScriptOutput::Builder b) {
    auto l = b.initLines(static_cast<unsigned>(lines.size()));
    for (unsigned i = 0; i < lines.size(); ++i)
      l.set(i, lines[i]);
    auto r = b.initReplies(static_cast<unsigned>(replies.size()));
    for (unsigned i = 0; i < replies.size(); ++i)
      r.set(i, replies[i]);
    b.setDropped(dropped);
    b.setEvents(events);
  });
}

/// New final blocks on this host's ledger: one "block" event per height, in
/// order, with the block's hash and what earned it.
void watch_blocks(self_ptr self) {
  auto& st = self->state;
  if (st.tip_in_flight || !st.anyone_wants("block"))
    return;
  st.tip_in_flight = true;
  auto timeout = std::chrono::milliseconds(st.ctx.lim.request_timeout_ms);
  ask_role(self, st.ctx.directory, "ledger",
           make_envelope<schema::LedgerQuery>([](auto q) { q.setTip(); }), timeout,
           [self, timeout](caf::expected<envelope> r) {
             auto& st = self->state;
             st.tip_in_flight = false;
             if (!r)
               return;
             opened<schema::TipInfo> t{*r};
             if (!t)
               return;
             auto h = t->getHeight();
             if (!st.height_known) {
               st.height = h;
               st.height_known = true;
               return;
             }
             auto last = std::min(h, st.height + blocks_per_tick_max);
             for (auto k = st.height + 1; k <= last; ++k) {
               st.tip_in_flight = true;
               ask_role(self, st.ctx.directory, "ledger",
                        make_envelope<schema::LedgerQuery>([k](auto q) { q.setBlockAt(k); }),
                        timeout, [self, k, last](caf::expected<envelope> b) {
                          auto& st = self->state;
                          if (k == last)
                            st.tip_in_flight = false;
                          if (!b)
                            return;
                          opened<schema::Block> blk{*b};
                          if (!blk)
                            return;
                          auto hdr = blk->getHeader();
                          auto hash = to_hex(ledger::header_hash(hdr));
                          auto session = to_hex({hdr.getSessionId().begin(),
                                                 hdr.getSessionId().size()});
                          auto job = to_hex({hdr.getJobId().begin(), hdr.getJobId().size()});
                          auto txs = blk->getTransactions().size();
                          auto work = hdr.getWorkUnits();
                          st.deliver("block", [&](lua_State* L) {
                            lua_pushinteger(L, static_cast<lua_Integer>(k));
                            lua_pushstring(L, hash.c_str());
                            lua_createtable(L, 0, 4);
                            lua_pushstring(L, session.c_str());
                            lua_setfield(L, -2, "session");
                            lua_pushstring(L, job.c_str());
                            lua_setfield(L, -2, "job");
                            lua_pushinteger(L, static_cast<lua_Integer>(txs));
                            lua_setfield(L, -2, "txs");
                            lua_pushinteger(L, static_cast<lua_Integer>(work));
                            lua_setfield(L, -2, "work");
                            return 3;
                          });
                        });
             }
             st.height = last;
           });
}

/// Peers of this host going up or down (as its directory sees the links),
/// with their site, address and current smoothed round trip.
void watch_peers(self_ptr self) {
  auto& st = self->state;
  if (st.peers_in_flight || !st.anyone_wants("peer"))
    return;
  st.peers_in_flight = true;
  self
    ->request(st.ctx.directory, std::chrono::milliseconds(st.ctx.lim.request_timeout_ms),
              make_envelope<schema::StatusRequest>([](auto) {}))
    .then(
      [self](envelope& reply) {
        auto& st = self->state;
        st.peers_in_flight = false;
        opened<schema::StatusResponse> s{reply};
        if (!s)
          return;
        for (auto p : s->getPeers()) {
          auto hex = to_hex({p.getNode().begin(), p.getNode().size()});
          bool up = p.getUp();
          auto it = st.peers_up.find(hex);
          bool changed = it != st.peers_up.end() ? it->second != up : st.peers_known;
          st.peers_up[hex] = up;
          if (!changed)
            continue;
          st.deliver("peer", [&](lua_State* L) {
            lua_pushstring(L, hex.c_str());
            lua_pushstring(L, up ? "up" : "down");
            lua_createtable(L, 0, 3);
            lua_pushstring(L, p.getSite().cStr());
            lua_setfield(L, -2, "site");
            lua_pushstring(L, p.getAddress().cStr());
            lua_setfield(L, -2, "address");
            lua_pushnumber(L, p.getRttMs());
            lua_setfield(L, -2, "rtt_ms");
            return 3;
          });
        }
        st.peers_known = true;
      },
      [self](caf::error&) { self->state.peers_in_flight = false; });
}

caf::behavior script_role(self_ptr self, role_context ctx) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.table = std::make_unique<message_table>("script", script_access);
  st.table->on<schema::ScriptHandler>([self](schema::ScriptHandler::Reader req)
                                        -> caf::result<envelope> {
    auto& st = self->state;
    if (req.getSession().size() != 16)
      return make_error(errc::invalid_argument,
                        fmt::format("ScriptHandler.session must be 16 bytes (got {})",
                                    req.getSession().size()));
    std::string event = req.getEvent().cStr();
    if (event != "block" && event != "progress" && event != "peer")
      return make_error(errc::invalid_argument,
                        fmt::format("on: event must be 'block', 'progress' or 'peer' (got '{}')",
                                    event));
    if (req.getSource().size() > 64 * 1024)
      return make_error(errc::invalid_argument,
                        fmt::format("on({}): the handler's source is {} bytes, over 64 KiB",
                                    event, req.getSource().size()));
    auto key = session_key(req.getSession());
    auto it = st.sessions.find(key);
    if (it == st.sessions.end()) {
      if (req.getSource().size() == 0)
        return make_error(errc::not_found,
                          fmt::format("no script session {} on this host", key_hex(key)));
      if (st.sessions.size() >= st.ctx.lim.script_sessions_max)
        return make_error(errc::invalid_argument,
                          fmt::format("{} script sessions are open on this host "
                                      "(script_sessions_max)",
                                      st.sessions.size()));
      script::sandbox::options o;
      o.memory_bytes = st.ctx.lim.script_memory_bytes;
      o.instructions_max = st.ctx.lim.script_instructions_max;
      o.wall_ms_max = st.ctx.lim.script_wall_ms_max;
      o.output_max = st.ctx.lim.script_output_max;
      o.globals = {{"node", st.ctx.self->id().hex()}, {"site", st.ctx.site}};
      auto box = script::sandbox::make(std::move(o));
      if (!box)
        return box.error();
      it = st.sessions.emplace(key, session{std::move(*box), clock_type::now()}).first;
      log_info("script session {} opened", key_hex(key));
    }
    it->second.last_poll = clock_type::now();
    if (auto err = it->second.box->set_handler(event, req.getSource().cStr(),
                                               req.getChunk().cStr(), req.getLine()))
      return err;
    return output_of(it->second);
  });
  st.table->on<schema::ScriptPoll>([self](schema::ScriptPoll::Reader req)
                                     -> caf::result<envelope> {
    auto& st = self->state;
    auto key = session_key(req.getSession());
    auto it = st.sessions.find(key);
    if (it == st.sessions.end())
      return make_error(errc::not_found,
                        fmt::format("no script session {} on this host (it ends {} ms after "
                                    "its last poll, or the host restarted)",
                                    key.size() == 16 ? key_hex(key) : "?",
                                    st.ctx.lim.script_idle_ms));
    // Each event may run a handler for its whole instruction budget: a
    // console never queues more than this between two polls.
    if (req.getProgress().size() > progress_per_poll_max)
      return make_error(errc::invalid_argument,
                        fmt::format("ScriptPoll carries {} progress events (at most {})",
                                    req.getProgress().size(), progress_per_poll_max));
    auto& s = it->second;
    s.last_poll = clock_type::now();
    // One budget for the whole poll (instructions and wall clock), however
    // many events it carries: a poll can never hold the host longer.
    s.box->begin_round();
    for (auto p : req.getProgress()) {
      s.box->call("progress", [&](lua_State* L) {
        lua_createtable(L, 0, 5);
        lua_pushstring(L, p.getJob().cStr());
        lua_setfield(L, -2, "job");
        lua_pushinteger(L, static_cast<lua_Integer>(p.getStep()));
        lua_setfield(L, -2, "step");
        lua_pushnumber(L, p.getLoss());
        lua_setfield(L, -2, "loss");
        lua_pushnumber(L, p.getSamplesPerS());
        lua_setfield(L, -2, "samples_per_s");
        lua_pushinteger(L, p.getTrainers());
        lua_setfield(L, -2, "trainers");
        return 1;
      });
    }
    s.box->end_round();
    return output_of(s);
  });
  st.table->on<schema::ScriptList>([self](schema::ScriptList::Reader) -> caf::result<envelope> {
    auto& st = self->state;
    auto now = clock_type::now();
    return make_envelope<schema::ScriptSessions>([&](schema::ScriptSessions::Builder b) {
      auto l = b.initSessions(static_cast<unsigned>(st.sessions.size()));
      unsigned i = 0;
      for (auto& [key, s] : st.sessions) {
        auto e = l[i++];
        e.setId(key_hex(key));
        auto events = s.box->handler_events();
        auto ev = e.initEvents(static_cast<unsigned>(events.size()));
        for (unsigned k = 0; k < events.size(); ++k)
          ev.set(k, events[k]);
        e.setHandled(s.box->events());
        e.setMemoryBytes(s.box->memory_in_use());
        e.setIdleMs(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(now - s.last_poll).count()));
      }
    });
  });
  st.table->on<schema::ScriptClose>([self](schema::ScriptClose::Reader req)
                                      -> caf::result<envelope> {
    auto& st = self->state;
    auto key = session_key(req.getSession());
    auto it = st.sessions.find(key);
    if (it == st.sessions.end())
      return make_error(errc::not_found, "no such script session on this host");
    auto out = output_of(it->second);
    st.sessions.erase(it);
    log_info("script session {} closed", key_hex(key));
    return out;
  });
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  self->send(self, tick_atom::value);
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
    [self](tick_atom) {
      auto& st = self->state;
      auto now = clock_type::now();
      for (auto it = st.sessions.begin(); it != st.sessions.end();) {
        if (now - it->second.last_poll > std::chrono::milliseconds(st.ctx.lim.script_idle_ms)) {
          log_info("script session {} ended: no poll for {} ms", key_hex(it->first),
                   st.ctx.lim.script_idle_ms);
          it = st.sessions.erase(it);
        } else {
          ++it;
        }
      }
      watch_blocks(self);
      watch_peers(self);
      if (!st.anyone_wants("block"))
        st.height_known = false; // a new handler starts from the tip it sees
      if (!st.anyone_wants("peer"))
        st.peers_known = false;
      self->delayed_send(self, watch_period, tick_atom::value);
    },
  };
}

} // namespace

caf::expected<caf::actor> spawn_script(caf::actor_system& sys, const role_context& ctx) {
  // Detached: a handler may run for its whole instruction budget.
  return sys.spawn<caf::detached>(script_role, ctx);
}

} // namespace aicon
