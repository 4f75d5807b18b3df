#include "cli/console.hpp"
#include "cli/embedded.hpp"
#include "cli/lua_source.hpp"
#include "cli/remote_handlers.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>

#include <lua.hpp>
#include <editline/readline.h>
#include <fmt/format.h>
#include <sodium.h>

#include "actors/data_node/ingest.hpp"
#include "actors/data_node/model_store.hpp"
#include "actors/data_node/remote.hpp"
#include "actors/job/economy.hpp"
#include "actors/job/job.hpp"
#include "actors/trainer/model.hpp"
#include "actors/trainer/torch_model.hpp"
#include "cli/data_cmd.hpp"
#include "actors/job/job_role.hpp"
#include "actors/ledger/state.hpp"
#include "runtime/client.hpp"
#include "runtime/error.hpp"
#include "schemas/chain.capnp.h"
#include "schemas/data.capnp.h"
#include "schemas/job.capnp.h"

namespace aicon {

namespace {

/// What every API function reaches through the Lua registry.
struct session {
  std::unique_ptr<embedded_cluster> cluster; ///< without --connect: hosts in this process
  std::unique_ptr<client> owned;             ///< with --connect
  client* c = nullptr;
  std::vector<std::pair<node_id, std::string>> nodes; ///< id, address
  /// on(event, fn): the handlers run in a host's script role; this polls
  /// them. Declared after the client so that it is gone first.
  std::unique_ptr<remote_handlers> handlers;
  std::map<std::string, int> reply_refs; ///< event -> the reply= function (a Lua ref)
  /// What was typed at the prompt, newest last: where on() finds a
  /// handler's source.
  std::deque<std::string> typed;
  uint64_t local_jobs = 0;
};

session& session_of(lua_State* L) {
  lua_getfield(L, LUA_REGISTRYINDEX, "aicon.session");
  auto* s = static_cast<session*>(lua_touserdata(L, -1));
  lua_pop(L, 1);
  return *s;
}

/// Prints what the hosts' handlers printed (each line after its host) and
/// calls the reply= functions with what they returned, on this (the Lua)
/// thread. A reply function's error is printed and the console goes on.
void pump_events(lua_State* L) {
  auto& s = session_of(L);
  if (!s.handlers)
    return;
  for (auto& it : s.handlers->take()) {
    if (!it.reply) {
      std::printf("[%s] %s\n", it.host.short_hex().c_str(), it.text.c_str());
      continue;
    }
    auto fn = s.reply_refs.find(it.event);
    if (fn == s.reply_refs.end())
      continue;
    // The literal came from the host: load it as text, with no globals, and
    // bound its evaluation (a well-formed one is a constructor).
    std::string code = "return " + it.text;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn->second);
    if (luaL_loadbufferx(L, code.data(), code.size(), "=reply", "t") != LUA_OK) {
      std::fprintf(stderr, "on(%s) reply from %s: %s\n", it.event.c_str(),
                   it.host.short_hex().c_str(), lua_tostring(L, -1));
      lua_settop(L, top);
      continue;
    }
    lua_newtable(L);
    lua_setupvalue(L, -2, 1); // _ENV = {}
    lua_sethook(L, [](lua_State* L, lua_Debug*) { luaL_error(L, "reply literal too long"); },
                LUA_MASKCOUNT, 1'000'000);
    int rc = lua_pcall(L, 0, 1, 0);
    lua_sethook(L, nullptr, 0, 0);
    if (rc == LUA_OK)
      rc = lua_pcall(L, 1, 0, 0);
    if (rc != LUA_OK)
      std::fprintf(stderr, "on(%s) reply: %s\n", it.event.c_str(), lua_tostring(L, -1));
    lua_settop(L, top);
  }
  std::fflush(stdout);
}

[[noreturn]] void raise(lua_State* L, const std::string& what, const caf::error& err) {
  luaL_error(L, "%s: %s", what.c_str(), describe(err).c_str());
  std::abort(); // luaL_error does not return
}

/// Nodes among the connected ones that run `role` (asked of the directory).
std::vector<node_id> nodes_with(lua_State* L, const std::string& role) {
  auto& s = session_of(L);
  std::vector<node_id> out;
  for (auto& [id, _] : s.nodes)
    if (s.c->lookup(role + "@" + id.hex()))
      out.push_back(id);
  return out;
}

caf::expected<envelope> ask(lua_State* L, const node_id& node, const std::string& role, envelope req,
                            std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
  auto& s = session_of(L);
  auto dst = s.c->lookup(role + "@" + node.hex());
  if (!dst)
    return dst.error();
  return s.c->request(*dst, std::move(req), timeout);
}

// ---- Reading option tables ---------------------------------------------------

/// f(x, {options}): argument 2 is an options table, or nil for none (then
/// an empty one is put there); anything else is a type error.
void options_arg(lua_State* L) {
  lua_settop(L, 2);
  if (!lua_isnil(L, 2))
    luaL_checktype(L, 2, LUA_TTABLE);
  else {
    lua_newtable(L);
    lua_replace(L, 2);
  }
}

std::optional<std::string> opt_string(lua_State* L, int t, const char* fn, const char* key) {
  lua_getfield(L, t, key);
  std::optional<std::string> out;
  if (lua_isstring(L, -1) && lua_type(L, -1) == LUA_TSTRING)
    out = lua_tostring(L, -1);
  else if (!lua_isnil(L, -1))
    luaL_error(L, "%s: %s must be a string (got %s)", fn, key, luaL_typename(L, -1));
  lua_pop(L, 1);
  return out;
}

std::optional<double> opt_number(lua_State* L, int t, const char* fn, const char* key) {
  lua_getfield(L, t, key);
  std::optional<double> out;
  if (lua_type(L, -1) == LUA_TNUMBER)
    out = lua_tonumber(L, -1);
  else if (!lua_isnil(L, -1))
    luaL_error(L, "%s: %s must be a number (got %s)", fn, key, luaL_typename(L, -1));
  lua_pop(L, 1);
  return out;
}

bool opt_bool(lua_State* L, int t, const char* fn, const char* key) {
  lua_getfield(L, t, key);
  bool out = false;
  if (lua_type(L, -1) == LUA_TBOOLEAN)
    out = lua_toboolean(L, -1);
  else if (!lua_isnil(L, -1))
    luaL_error(L, "%s: %s must be a boolean (got %s)", fn, key, luaL_typename(L, -1));
  lua_pop(L, 1);
  return out;
}

void set_field(lua_State* L, const char* k, const std::string& v) {
  lua_pushstring(L, v.c_str());
  lua_setfield(L, -2, k);
}
void set_field(lua_State* L, const char* k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}
void set_int(lua_State* L, const char* k, uint64_t v) {
  lua_pushinteger(L, static_cast<lua_Integer>(v));
  lua_setfield(L, -2, k);
}

void push_manifest(lua_State* L, schema::DatasetManifest::Reader m) {
  lua_newtable(L);
  set_field(L, "id", to_hex({m.getDatasetId().begin(), m.getDatasetId().size()}));
  set_field(L, "name", std::string{m.getName().cStr()});
  set_int(L, "rows", static_cast<uint64_t>(m.getRows()));
  set_int(L, "features", static_cast<uint64_t>(m.getFeatures()));
  set_int(L, "classes", static_cast<uint64_t>(m.getClasses()));
  set_int(L, "price", static_cast<uint64_t>(m.getPrice()));
  set_int(L, "shards", static_cast<uint64_t>(m.getShards().size()));
  set_field(L, "transform", std::string{m.getTransform().getKind().cStr()});
}

// ---- nodes(), help() ---------------------------------------------------------

int l_nodes(lua_State* L) {
  auto& s = session_of(L);
  lua_newtable(L);
  int i = 1;
  for (auto& [id, addr] : s.nodes) {
    lua_newtable(L);
    set_field(L, "id", id.hex());
    set_field(L, "address", addr);
    lua_newtable(L);
    int k = 1;
    for (auto role : {"ledger", "block_generator", "data_node", "trainer", "allocator", "rater", "echo"})
      if (s.c->lookup(std::string{role} + "@" + id.hex())) {
        lua_pushstring(L, role);
        lua_rawseti(L, -2, k++);
      }
    lua_setfield(L, -2, "roles");
    lua_rawseti(L, -2, i++);
  }
  return 1;
}

constexpr const char* help_text =
  R"(aicon console API
  nodes()                          the hosts you are connected to: {id, address, roles}
  dataset.put(path, {name=, label_col=, skip_rows=, delimiter=, standardize=, minmax=,
                     price=, replicas=})      ingest and store on a data node; returns the id
  dataset.list()                   every dataset on the connected data nodes
  dataset.preview(id)              manifest and public preview rows
  model.put(path, {name=, price=, replicas=})  a TorchScript file onto the data nodes,
                                   registered as your model asset; returns the id
                                   (train{model = "torch:" .. id})
  train{model="mlp:64-64-10", data=path | dataset=id, trainers=K, steps=N |
        epochs=E, batch=B, lr=, momentum=, holdout=0.2, seed=, transport=,
        budget=, priority=}   (a connected job host runs it, even if this
                                   console goes away; budget: escrowed, trainers
                                   from the allocator, verified and settled;
                                   without: K spread over the trainer hosts, and
                                   dataset= only for datasets this console owns,
                                   their keys granted by this console)
                                   starts a job; returns j with j.id, j:wait{progress=true},
                                   j:status(), j:cancel(), j:metrics(), j:save(path)
  job.list()                       the jobs of the connected job hosts
  job.attach(id)                   a handle (as train{} returns) to a job a job host runs
  chain.tip()                      {height, hash}
  chain.block(h)                   {height, hash, generator, session, work, txs, receipts}
  wallet.balance(id)               {balance, stake, nonce}
  wallet.me()                      this console's wallet id (its key signs what it submits)
  wallet.transfer(to, amount)      signs and submits a transfer; returns its nonce
  asset.owner(id)                  owner's wallet id
  asset.transfer(id, to)           signs and submits an asset transfer; returns its nonce
  on(event, fn, {node=, reply=})   runs fn inside a host (its script role, sandboxed)
                                   on "block" (fn(height, hash, {session, job, txs,
                                   work})), "progress" (fn{job, step, loss,
                                   samples_per_s, trainers}) or "peer" (fn(id,
                                   "up"|"down", {site, address, rtt_ms})); returns the
                                   host's id. What fn prints shows here as [host] line;
                                   what it returns goes to reply(value) here, between
                                   commands, in j:wait{} and in sleep(s). fn sees its
                                   arguments and globals of its own (node, site), not
                                   this console's locals. off(event) stops it.
  sleep(seconds)                   waits, delivering events
  help()                           this text
)";

/// The host for on(event, ...): `node=` (an id prefix) or the first
/// connected host with the script role, one that also keeps the chain for
/// "block" events.
node_id handler_host(lua_State* L, const std::string& ev, const std::optional<std::string>& node) {
  auto& s = session_of(L);
  auto scripted = nodes_with(L, "script");
  if (node) {
    for (auto& id : scripted)
      if (id.hex().rfind(*node, 0) == 0)
        return id;
    for (auto& [id, _] : s.nodes)
      if (id.hex().rfind(*node, 0) == 0)
        luaL_error(L, "on: node %s runs no script role (handlers run inside a host; add "
                      "\"script\" to its host.roles)", node->c_str());
    luaL_error(L, "on: node '%s' is none of the connected hosts", node->c_str());
  }
  if (scripted.empty())
    luaL_error(L, "on: none of the connected hosts runs the script role (handlers run inside a "
                  "host; add \"script\" to host.roles)");
  if (ev == "block") {
    auto ledgers = nodes_with(L, "ledger");
    for (auto& id : scripted)
      if (std::find(ledgers.begin(), ledgers.end(), id) != ledgers.end())
        return id;
    luaL_error(L, "on: block events need a host with both the script and the ledger roles");
  }
  return scripted[0];
}

/// The event name at `idx`, one of those on() and off() take.
std::string check_event(lua_State* L, int idx, const char* fn) {
  std::string ev = luaL_checkstring(L, idx);
  if (ev != "block" && ev != "progress" && ev != "peer")
    luaL_error(L, "%s: event must be 'block', 'progress' or 'peer' (got '%s')", fn, ev.c_str());
  return ev;
}

int l_on(lua_State* L) {
  auto ev = check_event(L, 1, "on");
  if (!lua_isfunction(L, 2) && lua_type(L, 2) != LUA_TSTRING)
    luaL_error(L, "on: handler must be a function or its source as a string (got %s)",
               luaL_typename(L, 2));
  std::optional<std::string> node;
  bool has_reply = false;
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    node = opt_string(L, 3, "on", "node");
    lua_getfield(L, 3, "reply");
    has_reply = lua_isfunction(L, -1);
    if (!has_reply && !lua_isnil(L, -1))
      luaL_error(L, "on: reply must be a function (got %s)", luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  auto& s = session_of(L);
  handler_source src;
  if (lua_type(L, 2) == LUA_TSTRING) {
    src.text = lua_tostring(L, 2);
    src.chunk = "=on";
  } else {
    auto found = handler_source_of(L, 2, [&s](const std::string& chunk) {
      std::vector<std::string> out;
      if (chunk == "=console")
        out.assign(s.typed.rbegin(), s.typed.rend());
      return out;
    });
    if (!found)
      luaL_error(L, "on: %s", what_of(found.error()).c_str());
    src = std::move(*found);
  }
  auto host = handler_host(L, ev, node);
  if (auto err = s.handlers->set(host, ev, src.text, src.chunk, src.line)) {
    auto msg = what_of(err);
    if (msg.rfind("on(", 0) != 0)
      msg = "on: " + msg;
    luaL_error(L, "%s", msg.c_str());
  }
  // Only now, with the handler in place, does the reply function replace
  // the old one: a refused on() leaves everything as it was.
  if (auto old = s.reply_refs.find(ev); old != s.reply_refs.end()) {
    luaL_unref(L, LUA_REGISTRYINDEX, old->second);
    s.reply_refs.erase(old);
  }
  if (has_reply) {
    lua_getfield(L, 3, "reply");
    s.reply_refs[ev] = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lua_pushstring(L, host.hex().c_str());
  return 1;
}

int l_off(lua_State* L) {
  auto ev = check_event(L, 1, "off");
  auto& s = session_of(L);
  if (auto old = s.reply_refs.find(ev); old != s.reply_refs.end()) {
    luaL_unref(L, LUA_REGISTRYINDEX, old->second);
    s.reply_refs.erase(old);
  }
  if (auto err = s.handlers->remove(ev))
    luaL_error(L, "off: %s", what_of(err).c_str());
  pump_events(L);
  return 0;
}

int l_sleep(lua_State* L) {
  double secs = luaL_checknumber(L, 1);
  if (secs < 0 || secs > 3600)
    luaL_error(L, "sleep: seconds must be in 0..3600 (got %f)", secs);
  auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(secs);
  do {
    pump_events(L);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (std::chrono::steady_clock::now() < until);
  pump_events(L);
  return 0;
}

int l_help(lua_State*) {
  std::fputs(help_text, stdout);
  std::fflush(stdout);
  return 0;
}

// ---- dataset -------------------------------------------------------------------

int l_dataset_put(lua_State* L) {
  if (lua_type(L, 1) != LUA_TSTRING)
    luaL_error(L, "dataset.put: path must be a string (got %s)", luaL_typename(L, 1));
  std::string path = lua_tostring(L, 1);
  options_arg(L);
  const char* fn = "dataset.put";
  data::csv_options csv;
  std::optional<std::string> label_col;
  lua_getfield(L, 2, "label_col");
  if (lua_type(L, -1) == LUA_TNUMBER)
    label_col = std::to_string(static_cast<long long>(lua_tointeger(L, -1)));
  else if (lua_type(L, -1) == LUA_TSTRING)
    label_col = lua_tostring(L, -1);
  else if (!lua_isnil(L, -1))
    luaL_error(L, "%s: label_col must be a column index or name (got %s)", fn, luaL_typename(L, -1));
  lua_pop(L, 1);
  if (label_col)
    csv.label_col = *label_col;
  if (auto d = opt_string(L, 2, fn, "delimiter")) {
    if (d->size() != 1)
      luaL_error(L, "%s: delimiter must be one character", fn);
    csv.delimiter = (*d)[0];
  }
  if (auto n = opt_number(L, 2, fn, "skip_rows"))
    csv.skip_rows = static_cast<uint64_t>(*n);
  bool standardize = opt_bool(L, 2, fn, "standardize"), minmax = opt_bool(L, 2, fn, "minmax");
  if (standardize && minmax)
    luaL_error(L, "%s: standardize and minmax exclude each other", fn);
  data::put_options po;
  po.source = std::filesystem::path{path}.filename().string();
  po.name = opt_string(L, 2, fn, "name").value_or(po.source);
  po.price = static_cast<uint64_t>(opt_number(L, 2, fn, "price").value_or(0));
  auto replicas = static_cast<uint32_t>(opt_number(L, 2, fn, "replicas").value_or(2));
  auto t = data::read_any(path, std::nullopt, csv, label_col);
  if (!t)
    raise(L, fn, t.error());
  auto tr = data::fit_and_apply(*t, standardize ? data::transform::kind::standardize
                                    : minmax    ? data::transform::kind::minmax
                                                : data::transform::kind::none);
  auto& s = session_of(L);
  auto targets = nodes_with(L, "data_node");
  if (targets.empty())
    luaL_error(L, "%s: none of the connected hosts runs the data_node role", fn);
  auto built = data::build_dataset(s.c->self(), *t, tr, po);
  if (!built)
    raise(L, fn, built.error());
  auto holders = data::upload_dataset(*s.c, targets[0], *built, replicas, s.c->lim().upload_batch_bytes,
                                      std::chrono::minutes(5));
  if (!holders)
    raise(L, fn, holders.error());
  opened<schema::DatasetManifest> m{built->manifest};
  lua_pushstring(L, to_hex({m->getDatasetId().begin(), 32}).c_str());
  return 1;
}

// ---- model ---------------------------------------------------------------------

/// model.put(path, {name=, price=, replicas=}): a TorchScript file onto the
/// data nodes under its hash, registered as this console's model asset
/// where a connected host runs the block generator; returns the id.
/// model.put's work once its arguments are read; every C++ object is gone
/// before the caller raises a Lua error (a longjmp would skip destructors).
caf::expected<std::string> put_model_file(session& s, const std::string& path,
                                          const std::string& name, uint64_t price,
                                          uint32_t replicas, const std::vector<node_id>& targets,
                                          const std::vector<node_id>& generators) {
  auto bytes = data::read_model_file(path, s.c->lim().model_bytes_max);
  if (!bytes)
    return bytes.error();
  if (train::torch_available()) // the contract first: a file no trainer takes is not stored
    if (auto m = train::torch_module::load(path); !m)
      return m.error();
  auto put = data::make_model_put(s.c->self(), *bytes, name, replicas);
  auto holders = data::upload_model(*s.c, targets[0], put, std::chrono::minutes(2));
  if (!holders)
    return holders.error();
  auto [id, file_hash] = data::model_put_ids(put);
  if (!generators.empty())
    if (auto nonce = register_asset(*s.c, generators[0], s.c->self(), id, price, "model", file_hash);
        !nonce)
      return make_error(code_of(nonce.error()),
                        "stored, but not registered on the chain: " + what_of(nonce.error()));
  return to_hex({id.data(), 32});
}

int l_model_put(lua_State* L) {
  const char* fn = "model.put";
  if (lua_type(L, 1) != LUA_TSTRING)
    luaL_error(L, "%s: path must be a string (got %s)", fn, luaL_typename(L, 1));
  std::string path = lua_tostring(L, 1);
  options_arg(L);
  auto name = opt_string(L, 2, fn, "name").value_or(std::filesystem::path{path}.filename().string());
  auto price = opt_number(L, 2, fn, "price").value_or(0);
  if (price < 0)
    luaL_error(L, "%s: price must be >= 0", fn);
  auto replicas = opt_number(L, 2, fn, "replicas").value_or(2);
  if (replicas < 1 || replicas > 16)
    luaL_error(L, "%s: replicas must be 1..16", fn);
  auto targets = nodes_with(L, "data_node");
  if (targets.empty())
    luaL_error(L, "%s: none of the connected hosts runs the data_node role", fn);
  auto generators = nodes_with(L, "block_generator");
  if (generators.empty() && price > 0)
    luaL_error(L, "%s: price= needs a connected host with the block_generator role to register "
               "the model", fn);
  {
    // The error's text is on the Lua stack before the C++ objects go.
    auto id = put_model_file(session_of(L), path, name, static_cast<uint64_t>(price),
                             static_cast<uint32_t>(replicas), targets, generators);
    if (id) {
      lua_pushstring(L, id->c_str());
      return 1;
    }
    lua_pushstring(L, fmt::format("{}: {}", fn, describe(id.error())).c_str());
  }
  return lua_error(L);
}

int l_dataset_list(lua_State* L) {
  lua_newtable(L);
  std::set<std::string> seen;
  int i = 1;
  for (auto& n : nodes_with(L, "data_node")) {
    auto reply = ask(L, n, "data_node", make_envelope<schema::DataQuery>([](auto q) { q.setList(); }));
    if (!reply)
      raise(L, "dataset.list", reply.error());
    opened<schema::DatasetList> list{*reply};
    if (!list)
      raise(L, "dataset.list", list.error());
    for (auto m : list->getManifests()) {
      auto id = to_hex({m.getDatasetId().begin(), m.getDatasetId().size()});
      if (!seen.insert(id).second)
        continue;
      push_manifest(L, m);
      lua_rawseti(L, -2, i++);
    }
  }
  return 1;
}

int l_dataset_preview(lua_State* L) {
  std::string id = luaL_checkstring(L, 1);
  auto& s = session_of(L);
  auto found = data::find_replicas(*s.c, nodes_with(L, "data_node"), id);
  if (!found)
    raise(L, "dataset.preview", found.error());
  opened<schema::DatasetManifest> m{found->second};
  push_manifest(L, m.root());
  lua_newtable(L);
  int i = 1;
  for (auto p : m->getPreview()) {
    lua_newtable(L);
    set_int(L, "row", static_cast<uint64_t>(p.getRow()));
    lua_pushinteger(L, p.getY()); // -1 without labels
    lua_setfield(L, -2, "label");
    lua_newtable(L);
    int k = 1;
    for (auto v : p.getX()) {
      lua_pushnumber(L, v);
      lua_rawseti(L, -2, k++);
    }
    lua_setfield(L, -2, "x");
    lua_rawseti(L, -2, i++);
  }
  lua_setfield(L, -2, "preview");
  return 1;
}

// ---- train{} and job objects -------------------------------------------------------

struct job_handle {
  std::thread runner;
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
  std::mutex mtx;
  train::step_report last;
  uint64_t steps = 0;
  bool finished = false;
  std::string failure;
  train::job_result result;
  std::string id; ///< j.id: the job id (64 hex digits), or local-N for an unpaid local job
  // A job that a job host runs (budgeted jobs, job.attach): polled there.
  std::optional<node_id> host;
  std::array<uint8_t, 32> job{};
  const identity* payer = nullptr; ///< signs a cancel
  std::string phase;               ///< the job host's word for it
  uint64_t paid = 0, refunded = 0;
  std::string verified;
};

/// Polls job host `j.host` for the job until it ends (a cancel asked here
/// is signed and sent once); posts each new step to the on("progress")
/// handlers as a local job does.
void poll_remote(job_handle* j, client* c, session* sp) {
  auto ask = [&](envelope req) -> caf::expected<envelope> {
    auto dst = c->lookup("job@" + j->host->hex());
    if (!dst)
      return dst.error();
    return c->request(*dst, std::move(req), std::chrono::seconds(15));
  };
  bool cancel_sent = false;
  uint64_t posted = 0;
  int misses = 0;
  for (;;) {
    if (j->cancel->load() && !cancel_sent && j->payer) {
      cancel_sent = true;
      auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
      (void) ask(sign_job_cancel(*j->payer, j->job, now));
    }
    // Its state with each step's loss since the last poll (the handlers
    // see every step, as for a job run from here).
    auto r = ask(make_envelope<schema::JobQuery>([&](auto q) {
      q.setLogs(kj::arrayPtr(j->job.data(), 32));
      q.setSince(UINT32_MAX); // no events
      q.setWithLosses(true);
      q.setLossesSince(static_cast<uint32_t>(std::min<uint64_t>(posted, UINT32_MAX)));
    }));
    if (!r) {
      // A job host that restarts is back within seconds; one that stays
      // away ends the wait (the job itself may still go on there).
      if (++misses < 150) {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        continue;
      }
      std::lock_guard<std::mutex> lk{j->mtx};
      j->failure = "the job host does not answer: " + describe(r.error());
      j->finished = true;
      return;
    }
    misses = 0;
    opened<schema::JobInfo> info{*r};
    if (!info)
      continue;
    std::string phase = info->getPhase();
    bool final = phase == "done" || phase == "failed" || phase == "cancelled";
    {
      std::lock_guard<std::mutex> lk{j->mtx};
      j->phase = phase;
      j->steps = info->getSteps();
      if (info->getStep() > 0)
        j->last.step = info->getStep() - 1;
      j->last.loss = info->getLoss();
      j->last.samples_per_s = info->getSamplesPerS();
      j->last.trainers = info->getTrainers();
      j->paid = info->getPaidTrainers();
      j->refunded = info->getRefunded();
      j->verified = info->getVerified();
      if (final) {
        j->result.steps = info->getStep();
        j->result.accuracy = info->getAccuracy();
        j->result.test_loss = info->getTestLoss();
        j->result.regression = info->getRegression();
        j->result.r2 = info->getR2();
        if (phase != "done")
          j->failure = info->getError().size() ? info->getError().cStr() : phase;
        j->finished = true;
      }
    }
    if (info->getLossesFrom() == posted)
      for (auto loss : info->getLosses())
        sp->handlers->post({j->id, ++posted, loss, info->getSamplesPerS(), info->getTrainers()});
    if (info->getStep() > posted) { // steps the job host kept no loss for (a resumed run)
      posted = info->getStep();
      sp->handlers->post({j->id, posted, info->getLoss(), info->getSamplesPerS(),
                          info->getTrainers()});
    }
    if (final)
      return;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

job_handle* check_job(lua_State* L) {
  auto** h = static_cast<job_handle**>(luaL_checkudata(L, 1, "aicon.job"));
  return *h;
}

int l_job_gc(lua_State* L) {
  auto** h = static_cast<job_handle**>(luaL_checkudata(L, 1, "aicon.job"));
  if (*h) {
    (*h)->cancel->store(true);
    if ((*h)->runner.joinable())
      (*h)->runner.join();
    delete *h;
    *h = nullptr;
  }
  return 0;
}

void push_metrics(lua_State* L, job_handle& j) {
  std::lock_guard<std::mutex> lk{j.mtx};
  lua_newtable(L);
  set_int(L, "steps", static_cast<uint64_t>(j.finished ? j.result.steps : j.last.step + (j.steps ? 1 : 0)));
  set_field(L, "loss", j.last.loss);
  set_field(L, "samples_per_s", j.last.samples_per_s);
  set_field(L, "allreduce_ms", j.last.allreduce_ms);
  set_int(L, "trainers", static_cast<uint64_t>(j.last.trainers));
  if (j.finished && j.failure.empty()) {
    set_field(L, "accuracy", j.result.accuracy);
    set_field(L, "test_loss", j.result.test_loss);
    if (j.result.regression)
      set_field(L, "r2", j.result.r2);
    set_field(L, "seconds", j.result.seconds);
    set_int(L, "reforms", static_cast<uint64_t>(j.result.reforms));
  }
  if (j.host) {
    set_field(L, "phase", j.phase);
    set_int(L, "paid", j.paid);
    set_int(L, "refunded", j.refunded);
    set_field(L, "verified", j.verified);
  }
}

int l_job_status(lua_State* L) {
  auto* j = check_job(L);
  std::lock_guard<std::mutex> lk{j->mtx};
  if (!j->finished)
    lua_pushstring(L, j->host && !j->phase.empty() && j->phase != "training" ? j->phase.c_str()
                                                                               : "running");
  else if (j->failure.empty())
    lua_pushstring(L, "done");
  else
    lua_pushstring(L, ((j->host ? j->phase : std::string{"failed"}) + ": " + j->failure).c_str());
  return 1;
}

int l_job_cancel(lua_State* L) {
  check_job(L)->cancel->store(true);
  return 0;
}

/// j:save(path): the trained weights as an aicon checkpoint file, or with
/// a path ending in ".pt" as the TorchScript file a job host wrote for a
/// job on a model asset (torch:<id>); a job host's job is asked of it by
/// the payer's signed query and checked against its trained-model asset.
/// Returns the step they are of.
caf::expected<envelope> ledger_query(lua_State* L, const char* fn,
                                     const std::function<void(schema::LedgerQuery::Builder)>& f);

int l_job_save(lua_State* L) {
  const char* fn = "job:save";
  auto* j = check_job(L);
  if (lua_type(L, 2) != LUA_TSTRING)
    luaL_error(L, "%s: path must be a string (got %s)", fn, luaL_typename(L, 2));
  std::string path = lua_tostring(L, 2);
  bool as_torchscript = path.size() > 3 && path.compare(path.size() - 3, 3, ".pt") == 0;
  std::vector<uint8_t> bytes, torchscript;
  bool ready = false, finished = false;
  {
    // (no Lua error while the lock is held: it would never be released)
    std::lock_guard<std::mutex> lk{j->mtx};
    finished = j->finished;
    ready = j->finished && (j->failure.empty() || (j->host && j->phase == "cancelled"));
    if (ready && !j->host)
      bytes = j->result.checkpoint;
  }
  if (!ready)
    luaL_error(L, "%s: the job is %s: its weights are there once it is done", fn,
               finished ? "failed" : "still running");
  if (as_torchscript && !j->host)
    luaL_error(L, "%s: %s: a job run from this console has no TorchScript file; save the "
               "checkpoint and use aicon model export", fn, path.c_str());
  if (j->host) {
    if (!j->payer)
      luaL_error(L, "%s: only the job's payer may read its weights (job.attach gives no key)", fn);
    auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
    auto r = ask(L, *j->host, "job", sign_job_weights(*j->payer, j->job, now), std::chrono::seconds(60));
    if (!r)
      raise(L, fn, r.error());
    opened<schema::JobWeights> w{*r};
    if (!w)
      raise(L, fn, w.error());
    bytes.assign(w->getCheckpoint().begin(), w->getCheckpoint().end());
    torchscript.assign(w->getTorchscript().begin(), w->getTorchscript().end());
    if (as_torchscript && torchscript.empty())
      luaL_error(L, "%s: %s: job on %s has no TorchScript file (only jobs on a model asset, "
                 "torch:<id>, do); save the checkpoint and use aicon model export", fn,
                 path.c_str(), w->getModel().cStr());
    if (w->getModelAsset().size() == 32) {
      // That asset as the chain has it: the payer's trained model, whose
      // hashes the files must have.
      auto info = ledger_query(L, fn, [&](auto q) { q.setAsset(w->getModelAsset()); });
      if (!info)
        raise(L, fn, info.error());
      if (auto err = check_job_weights(*r, *info, j->payer->id()))
        raise(L, fn, err);
    }
  }
  auto cp = train::parse_checkpoint(bytes, "the job's checkpoint");
  if (!cp)
    raise(L, fn, cp.error());
  if (as_torchscript) {
    if (auto err = write_file_atomic(path, {reinterpret_cast<const char*>(torchscript.data()),
                                            torchscript.size()},
                                     0644))
      raise(L, fn, err);
  } else if (auto err = train::save_checkpoint(path, *cp)) {
    raise(L, fn, err);
  }
  lua_pushinteger(L, static_cast<lua_Integer>(cp->step));
  return 1;
}

int l_job_metrics(lua_State* L) {
  push_metrics(L, *check_job(L));
  return 1;
}

/// j.id, or j's methods (the method table is upvalue 1).
int l_job_index(lua_State* L) {
  auto* j = check_job(L);
  if (lua_type(L, 2) == LUA_TSTRING && std::string{lua_tostring(L, 2)} == "id") {
    lua_pushstring(L, j->id.c_str());
    return 1;
  }
  lua_pushvalue(L, 2);
  lua_gettable(L, lua_upvalueindex(1));
  return 1;
}

/// job.list(): every job of the connected job hosts, {id, host, phase, step,
/// steps, model, budget, accuracy}.
int l_job_list(lua_State* L) {
  lua_newtable(L);
  int i = 1;
  for (auto& h : nodes_with(L, "job")) {
    auto r = ask(L, h, "job", make_envelope<schema::JobQuery>([](auto q) { q.setList(); }));
    if (!r)
      raise(L, "job.list", r.error());
    opened<schema::JobList> l{*r};
    if (!l)
      raise(L, "job.list", l.error());
    for (auto info : l->getJobs()) {
      lua_newtable(L);
      set_field(L, "id", to_hex({info.getJobId().begin(), info.getJobId().size()}));
      set_field(L, "host", h.hex());
      set_field(L, "phase", std::string{info.getPhase().cStr()});
      set_int(L, "step", info.getStep());
      set_int(L, "steps", info.getSteps());
      set_field(L, "model", std::string{info.getModel().cStr()});
      set_int(L, "budget", info.getBudget());
      set_field(L, "accuracy", info.getAccuracy());
      lua_rawseti(L, -2, i++);
    }
  }
  return 1;
}

/// job.attach(id): a handle to a job a job host runs (started by any
/// console); j:wait{}, j:status(), j:metrics() as for one's own, j:cancel()
/// if this console's key paid for it.
int l_job_attach(lua_State* L) {
  std::string id = luaL_checkstring(L, 1);
  if (id.size() != 64 || id.find_first_not_of("0123456789abcdef") != std::string::npos)
    luaL_error(L, "job.attach: give the job id (64 hex digits), got '%s'", id.c_str());
  std::array<uint8_t, 32> job{};
  for (size_t i = 0; i < 32; ++i)
    job[i] = static_cast<uint8_t>(std::stoi(id.substr(2 * i, 2), nullptr, 16));
  auto& s = session_of(L);
  for (auto& h : nodes_with(L, "job")) {
    auto r = ask(L, h, "job", make_envelope<schema::JobQuery>([&](auto q) {
                   q.setStatus(kj::arrayPtr(job.data(), 32));
                 }));
    if (!r)
      continue;
    auto* j = new job_handle;
    j->id = id;
    j->host = h;
    j->job = job;
    j->payer = s.cluster ? &s.cluster->payer() : &s.c->self();
    j->steps = opened<schema::JobInfo>{*r}->getSteps();
    j->phase = opened<schema::JobInfo>{*r}->getPhase().cStr();
    auto** ud = static_cast<job_handle**>(lua_newuserdatauv(L, sizeof(job_handle*), 0));
    *ud = j;
    luaL_setmetatable(L, "aicon.job");
    j->runner = std::thread([j, c = s.c, sp = &s] { poll_remote(j, c, sp); });
    return 1;
  }
  luaL_error(L, "job.attach: no connected job host knows job %s", id.substr(0, 16).c_str());
  return 0;
}

int l_job_wait(lua_State* L) {
  auto* j = check_job(L);
  bool progress = false;
  if (lua_istable(L, 2))
    progress = opt_bool(L, 2, "job:wait", "progress");
  while (true) {
    {
      std::lock_guard<std::mutex> lk{j->mtx};
      if (j->finished)
        break;
      if (progress && j->steps > 0)
        std::fprintf(stderr, "\rstep %llu/%llu  loss %.4f  %.0f samples/s  allreduce %.2f ms   ",
                     static_cast<unsigned long long>(j->last.step + 1),
                     static_cast<unsigned long long>(j->steps), j->last.loss,
                     j->last.samples_per_s, j->last.allreduce_ms);
    }
    pump_events(L);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (j->runner.joinable())
    j->runner.join();
  // Every step's progress has been posted: let the handlers see all of it
  // before wait returns.
  session_of(L).handlers->flush();
  pump_events(L);
  if (progress)
    std::fprintf(stderr, "\n");
  if (!j->failure.empty())
    luaL_error(L, "train: %s", j->failure.c_str());
  push_metrics(L, *j);
  return 1;
}

caf::expected<envelope> ledger_query(lua_State* L, const char* fn,
                                     const std::function<void(schema::LedgerQuery::Builder)>& f);
uint64_t submit_tx(lua_State* L, const char* fn,
                   const std::function<void(schema::Transaction::Body::Builder)>& fill);

node_id ledger_node(lua_State* L, const char* fn);

/// A job handed to job host `agent`, which runs it whole; the handle polls
/// it, and the job goes on if this console goes away. With a budget
/// (`amount` > 0), the budget is first escrowed with terms naming the job
/// host the agent (at most `per_step` per trainer-step for K x steps);
/// without, the job host spends the trainers of hosts that trust it for
/// this console (its [host] trainer_clients); -1 (nothing pushed) when it
/// refuses to, for the caller to coordinate the job itself.
int submit_to_job_host(lua_State* L, const train::job_options& o, const node_id& agent,
                       uint64_t amount, uint64_t per_step, uint32_t k,
                       const std::vector<envelope>& grants = {}, bool stored_leases = false,
                       const std::vector<node_id>& hosts = {}) {
  const char* fn = "train";
  auto& s = session_of(L);
  const identity& payer = s.cluster && amount > 0 ? s.cluster->payer() : s.c->self();
  auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
  train::agent_terms terms;
  terms.agent = agent;
  terms.max_price = per_step;
  terms.units = uint64_t{k} * o.steps;
  terms.deadline_ms = now + 6 * 3600 * 1000;
  std::array<uint8_t, 32> dataset{};
  if (!o.dataset.empty()) {
    for (size_t i = 0; i < 32; ++i)
      dataset[i] = static_cast<uint8_t>(std::stoi(o.dataset.substr(2 * i, 2), nullptr, 16));
    terms.assets.push_back(dataset);
  }
  terms.assets.push_back(train::model_asset_of(o));
  caf::error escrowed;
  if (amount == 0) {
    // Unpaid: nothing to escrow.
  } else if (s.cluster) {
    escrowed = s.cluster->payer_tx([&](uint64_t n) {
      return train::make_escrow_lock(payer, s.cluster->chain_id(), n, o.job, amount, terms);
    });
  } else {
    auto chain = train::chain_id_of(
      [&](envelope q) { return ask(L, ledger_node(L, fn), "ledger", std::move(q)); });
    if (!chain)
      raise(L, fn, chain.error());
    uint64_t nonce = 0;
    {
      auto r = ledger_query(L, fn, [&](auto q) {
        q.setAccount(kj::arrayPtr(payer.id().bytes.data(), 32));
      });
      if (!r)
        raise(L, fn, r.error());
      nonce = opened<schema::AccountInfo>{*r}->getNonce() + 1;
    }
    auto bg = nodes_with(L, "block_generator");
    if (bg.empty())
      luaL_error(L, "%s: none of the connected hosts runs the block_generator role", fn);
    auto ack = ask(L, bg[0], "block_generator",
                   train::make_escrow_lock(payer, *chain, nonce, o.job, amount, terms));
    if (!ack)
      raise(L, fn, ack.error());
    escrowed = make_error(errc::timeout,
                          fmt::format("the escrow of {} was not final within 30 s", amount));
    for (int i = 0; i < 150; ++i) {
      auto r = ledger_query(L, fn, [&](auto q) {
        q.setAccount(kj::arrayPtr(payer.id().bytes.data(), 32));
      });
      if (r && opened<schema::AccountInfo>{*r}->getNonce() >= nonce) {
        escrowed = caf::none;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  if (escrowed)
    raise(L, fn, escrowed);
  capnp::MallocMessageBuilder mb;
  auto spec = mb.initRoot<schema::JobSpec>();
  fill_job_spec(spec, o, k);
  spec.setBudget(amount);
  spec.setPriority(o.priority);
  spec.setVerify(amount > 0 && !nodes_with(L, "rater").empty()); // verification is paid from the budget
  spec.setStoredLeases(stored_leases);
  auto named = spec.initHosts(static_cast<unsigned>(hosts.size()));
  for (unsigned i = 0; i < hosts.size(); ++i)
    named.set(i, kj::arrayPtr(hosts[i].bytes.data(), 32));
  auto submitted = ask(L, agent, "job", sign_job_submit(payer, spec.asReader(), o.job, now, grants));
  if (!submitted && amount == 0 && code_of(submitted.error()) == errc::forbidden) {
    // This console is not one of the job host's own clients: the caller
    // coordinates the unpaid job itself.
    std::printf("train: job host %s does not run unpaid jobs for this console (%s); "
                "coordinating the job from here\n",
                agent.short_hex().c_str(), what_of(submitted.error()).c_str());
    return -1;
  }
  if (!submitted)
    raise(L, fn, submitted.error());
  auto* j = new job_handle;
  j->steps = o.steps;
  j->id = to_hex({o.job.data(), 32});
  j->host = agent;
  j->job = o.job;
  j->payer = &payer;
  auto** ud = static_cast<job_handle**>(lua_newuserdatauv(L, sizeof(job_handle*), 0));
  *ud = j;
  luaL_setmetatable(L, "aicon.job");
  j->runner = std::thread([j, c = s.c, sp = &s] { poll_remote(j, c, sp); });
  return 1;
}

int l_train(lua_State* L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char* fn = "train";
  auto& s = session_of(L);
  train::job_options o;
  o.model = opt_string(L, 1, fn, "model").value_or(o.model);
  auto data = opt_string(L, 1, fn, "data");
  auto dataset = opt_string(L, 1, fn, "dataset");
  if (data.has_value() == dataset.has_value())
    luaL_error(L, "%s: give either data=path or dataset=id", fn);
  o.global_batch = static_cast<uint32_t>(opt_number(L, 1, fn, "batch").value_or(32));
  o.lr = static_cast<float>(opt_number(L, 1, fn, "lr").value_or(o.lr));
  o.momentum = static_cast<float>(opt_number(L, 1, fn, "momentum").value_or(o.momentum));
  if (auto name = opt_string(L, 1, fn, "optimizer")) {
    if (!train::parse_optimizer(*name))
      luaL_error(L, "%s: optimizer must be 'sgd' or 'adamw' (got '%s')", fn, name->c_str());
    o.optimizer = *name;
  }
  o.seed = static_cast<uint64_t>(opt_number(L, 1, fn, "seed").value_or(1));
  if (auto name = opt_string(L, 1, fn, "transport")) {
    auto t = train::parse_transport(*name);
    if (!t)
      luaL_error(L, "%s: transport must be 'stream', 'stream-plain', 'actor' or 'nccl' (got '%s')",
                 fn, name->c_str());
    o.transport = *t;
  }
  auto holdout = opt_number(L, 1, fn, "holdout").value_or(0.2);
  if (holdout < 0 || holdout >= 1)
    luaL_error(L, "%s: holdout must be in [0, 1) (got %f)", fn, holdout);
  o.test_percent = static_cast<uint32_t>(holdout * 100 + 0.5);
  auto hosts = nodes_with(L, "trainer");
  if (hosts.empty())
    luaL_error(L, "%s: none of the connected hosts runs the trainer role", fn);
  auto k = static_cast<uint32_t>(opt_number(L, 1, fn, "trainers").value_or(hosts.size()));
  if (k == 0)
    luaL_error(L, "%s: trainers must be at least 1", fn);
  auto budget = opt_number(L, 1, fn, "budget");
  auto priority = opt_number(L, 1, fn, "priority");
  // Without a budget the trainers are spread over the trainer hosts in
  // turn (the first hosts get one more when K does not divide evenly);
  // with one, the allocator places them.
  o.hosts = hosts;
  o.trainers_per_host = 1;
  for (uint32_t i = 0; i < k && !budget; ++i)
    o.per_host[hosts[i % hosts.size()]] += 1;
  if (!budget && k < hosts.size())
    o.hosts.resize(k);
  uint64_t rows = 0;
  uint64_t price = 0;
  std::optional<node_id> owner;
  auto job = opt_string(L, 1, fn, "job");
  if (data) {
    if (job)
      luaL_error(L, "%s: job= names the job a dataset's stored leases are for; data= needs none", fn);
    o.data_file = std::filesystem::absolute(*data).string();
  } else {
    // The job id is the system's: a budget's escrow names it; otherwise a
    // fresh one. job= is for leases an operator wrote on the data nodes.
    if (job) {
      auto job_id = node_id::from_hex(*job);
      if (!job_id)
        luaL_error(L, "%s: job: %s", fn, what_of(job_id.error()).c_str());
      std::memcpy(o.job.data(), job_id->bytes.data(), 32);
    } else {
      randombytes_buf(o.job.data(), 32);
    }
    o.data_nodes = nodes_with(L, "data_node");
    auto found = data::find_replicas(*s.c, o.data_nodes, *dataset);
    if (!found)
      raise(L, fn, found.error());
    opened<schema::DatasetManifest> m{found->second};
    o.dataset = to_hex({m->getDatasetId().begin(), 32});
    rows = m->getRows();
    price = m->getPrice();
    if (auto o_id = node_id::from_bytes({m->getOwner().begin(), m->getOwner().size()}))
      owner = *o_id;
  }
  auto steps = opt_number(L, 1, fn, "steps");
  auto epochs = opt_number(L, 1, fn, "epochs");
  if (steps && epochs)
    luaL_error(L, "%s: give steps or epochs, not both", fn);
  if (epochs) {
    if (*epochs <= 0)
      luaL_error(L, "%s: epochs must be > 0 (got %f)", fn, *epochs);
    if (rows == 0) {
      // A local file: its rows as the trainers will read them.
      data::csv_options csv;
      auto t = data::read_any(o.data_file, std::nullopt, csv, std::nullopt);
      if (!t)
        raise(L, fn, t.error());
      rows = t->rows;
    }
    auto train_rows = rows - rows * o.test_percent / 100;
    o.steps = std::max<uint64_t>(
      1, static_cast<uint64_t>(*epochs * static_cast<double>(train_rows) / o.global_batch));
  } else {
    o.steps = static_cast<uint64_t>(steps.value_or(100));
  }
  if (dataset && !job && !budget) {
    // No escrow: only the dataset's owner may grant its keys to a job.
    if (!owner || !(*owner == s.c->self().id()))
      luaL_error(L, "%s",
                 fmt::format("{}: dataset {} belongs to {}: give budget= (its price, {}, is "
                             "escrowed with the job and paid to its owner)",
                             fn, o.dataset.substr(0, 16), owner ? owner->short_hex() : "?", price)
                   .c_str());
    o.payer = &s.c->self();
  }
  // With a budget the job goes to a job host: the budget is escrowed on the
  // chain naming it the agent, and the allocator grants it K trainers
  // (gang) at most (budget - the dataset's price) / (K x steps) each per step.
  if (priority && !budget)
    luaL_error(L, "%s: priority needs budget= (jobs with a budget go through the allocator)", fn);
  if (budget) {
    if (*budget < 1)
      luaL_error(L, "%s: budget must be >= 1 (got %f)", fn, *budget);
    if (priority && (*priority < 0 || *priority > 1000))
      luaL_error(L, "%s: priority must be in 0..1000 (got %f)", fn, *priority);
    auto amount = static_cast<uint64_t>(*budget);
    if (amount <= price)
      luaL_error(L, "%s",
                 fmt::format("{}: insufficient budget: {} does not cover the dataset's price {} "
                             "and any training",
                             fn, amount, price)
                   .c_str());
    auto per_step = (amount - price) / (uint64_t{k} * o.steps);
    if (per_step == 0)
      luaL_error(L, "%s",
                 fmt::format("{}: insufficient budget: {} does not pay {} trainers x {} steps at a "
                             "price of at least 1",
                             fn, amount, k, o.steps)
                   .c_str());
    if (job)
      luaL_error(L, "%s: job= and budget= exclude each other (a budget's escrow names its own job)", fn);
    randombytes_buf(o.job.data(), 32);
    o.priority = priority ? static_cast<uint32_t>(*priority) : 0;
    auto job_hosts = nodes_with(L, "job");
    if (job_hosts.empty())
      luaL_error(L, "%s: budget= needs a connected host running the job role (it escrows, "
                 "verifies and settles the job, with or without this console)", fn);
    return submit_to_job_host(L, o, job_hosts[0], amount, per_step, k);
  }
  // Unpaid: a connected job host runs it (the job goes on without this
  // console). On a dataset of this console's, the console grants its keys
  // to each trainer host (signed DataGrants in the submission); with job=
  // the trainers (this console's trainer hosts) use the leases an operator
  // stored for that job.
  if (auto job_hosts = nodes_with(L, "job"); !job_hosts.empty()) {
    std::vector<envelope> grants;
    if (data) {
      randombytes_buf(o.job.data(), 32);
    } else if (job) {
      std::vector<node_id> named(hosts.begin(), hosts.end());
      if (int pushed = submit_to_job_host(L, o, job_hosts[0], 0, 0, k, {}, true, named);
          pushed >= 0)
        return pushed;
    } else {
      auto chain = train::chain_id_of(
        [&](envelope q) { return ask(L, ledger_node(L, fn), "ledger", std::move(q)); });
      if (!chain)
        raise(L, fn, chain.error());
      auto id = *train::dataset_asset_of(o); // o.dataset: found on the data nodes above
      auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::system_clock::now().time_since_epoch())
                                          .count());
      for (auto& h : hosts)
        grants.push_back(
          data::make_data_grant(s.c->self(), *chain, o.job, h, id, now + o.grant_ms));
    }
    if (!job)
      if (int pushed = submit_to_job_host(L, o, job_hosts[0], 0, 0, k, grants); pushed >= 0)
        return pushed;
  }
  auto* j = new job_handle;
  o.cancel = j->cancel;
  j->steps = o.steps;
  auto** ud = static_cast<job_handle**>(lua_newuserdatauv(L, sizeof(job_handle*), 0));
  *ud = j;
  luaL_setmetatable(L, "aicon.job");
  auto* sp = &s;
  auto job_name = fmt::format("local-{}", ++s.local_jobs);
  j->id = job_name;
  j->runner = std::thread([j, o, c = s.c, sp, job_name] {
    auto r = train::run_job(*c, o, [j, sp, &job_name](const train::step_report& rep) {
      {
        std::lock_guard<std::mutex> lk{j->mtx};
        j->last = rep;
      }
      sp->handlers->post({job_name, rep.step + 1, rep.loss, rep.samples_per_s, rep.trainers});
    });
    std::lock_guard<std::mutex> lk{j->mtx};
    if (r)
      j->result = std::move(*r);
    else
      j->failure = describe(r.error());
    j->finished = true;
  });
  return 1;
}

// ---- chain, wallet, asset ----------------------------------------------------------

node_id ledger_node(lua_State* L, const char* fn) {
  auto nodes = nodes_with(L, "ledger");
  if (nodes.empty())
    luaL_error(L, "%s: none of the connected hosts runs the ledger role", fn);
  return nodes[0];
}

caf::expected<envelope> ledger_query(lua_State* L, const char* fn,
                                     const std::function<void(schema::LedgerQuery::Builder)>& f) {
  return ask(L, ledger_node(L, fn), "ledger", make_envelope<schema::LedgerQuery>(f));
}

int l_chain_tip(lua_State* L) {
  auto r = ledger_query(L, "chain.tip", [](auto q) { q.setTip(); });
  if (!r)
    raise(L, "chain.tip", r.error());
  opened<schema::TipInfo> t{*r};
  if (!t)
    raise(L, "chain.tip", t.error());
  lua_newtable(L);
  set_int(L, "height", static_cast<uint64_t>(t->getHeight()));
  set_field(L, "hash", to_hex({t->getHash().begin(), t->getHash().size()}));
  return 1;
}

int l_chain_block(lua_State* L) {
  auto h = luaL_checkinteger(L, 1);
  if (h < 0)
    luaL_error(L, "chain.block: height must be >= 0 (got %d)", static_cast<int>(h));
  auto r = ledger_query(L, "chain.block", [h](auto q) { q.setBlockAt(static_cast<uint64_t>(h)); });
  if (!r)
    raise(L, "chain.block", r.error());
  opened<schema::Block> b{*r};
  if (!b)
    raise(L, "chain.block", b.error());
  auto hd = b->getHeader();
  lua_newtable(L);
  set_int(L, "height", static_cast<uint64_t>(hd.getHeight()));
  set_field(L, "generator", to_hex({hd.getGenerator().begin(), hd.getGenerator().size()}));
  set_field(L, "session", to_hex({hd.getSessionId().begin(), hd.getSessionId().size()}));
  set_int(L, "work", static_cast<uint64_t>(hd.getWorkUnits()));
  set_int(L, "txs", static_cast<uint64_t>(b->getTransactions().size()));
  set_int(L, "receipts", static_cast<uint64_t>(b->getReceipts().size()));
  return 1;
}

int l_wallet_balance(lua_State* L) {
  auto who = node_id::from_hex(luaL_checkstring(L, 1));
  if (!who)
    luaL_error(L, "wallet.balance: id: %s", what_of(who.error()).c_str());
  auto r = ledger_query(L, "wallet.balance",
                        [&](auto q) { q.setAccount(kj::arrayPtr(who->bytes.data(), 32)); });
  if (!r)
    raise(L, "wallet.balance", r.error());
  opened<schema::AccountInfo> a{*r};
  if (!a)
    raise(L, "wallet.balance", a.error());
  lua_newtable(L);
  set_int(L, "balance", static_cast<uint64_t>(a->getBalance()));
  set_int(L, "stake", static_cast<uint64_t>(a->getStake()));
  set_int(L, "nonce", static_cast<uint64_t>(a->getNonce()));
  return 1;
}

/// Signs `fill`'s transaction with this console's key (its wallet) at the
/// next nonce and submits it to a block generator; returns the nonce.
uint64_t submit_tx(lua_State* L, const char* fn,
                   const std::function<void(schema::Transaction::Body::Builder)>& fill) {
  auto& s = session_of(L);
  auto& me = s.c->self();
  auto r = ledger_query(L, fn, [&](auto q) { q.setAccount(kj::arrayPtr(me.id().bytes.data(), 32)); });
  if (!r)
    raise(L, fn, r.error());
  opened<schema::AccountInfo> a{*r};
  if (!a)
    raise(L, fn, a.error());
  auto nonce = a->getNonce() + 1;
  auto gens = nodes_with(L, "block_generator");
  if (gens.empty())
    luaL_error(L, "%s: none of the connected hosts runs the block_generator role", fn);
  auto tip = ledger_query(L, fn, [](auto q) { q.setTip(); });
  if (!tip)
    raise(L, fn, tip.error());
  opened<schema::TipInfo> t{*tip};
  if (!t)
    raise(L, fn, t.error());
  if (t->getChainId().size() != 32)
    luaL_error(L, "%s: the ledger did not say which chain it keeps (no chainId)", fn);
  ledger::hash256 chain;
  std::memcpy(chain.data(), t->getChainId().begin(), 32);
  auto ack = ask(L, gens[0], "block_generator",
                 ledger::make_signed_transaction(me, chain, nonce, fill));
  if (!ack)
    raise(L, fn, ack.error());
  return nonce;
}

node_id check_id(lua_State* L, int i, const char* fn, const char* what) {
  if (lua_type(L, i) != LUA_TSTRING)
    luaL_error(L, "%s: %s must be a string (got %s)", fn, what, luaL_typename(L, i));
  auto id = node_id::from_hex(lua_tostring(L, i));
  if (!id)
    luaL_error(L, "%s: %s: %s", fn, what, what_of(id.error()).c_str());
  return *id;
}

int l_wallet_transfer(lua_State* L) {
  const char* fn = "wallet.transfer";
  auto to = check_id(L, 1, fn, "to");
  if (lua_type(L, 2) != LUA_TNUMBER || lua_tonumber(L, 2) < 1)
    luaL_error(L, "%s: amount must be a number >= 1", fn);
  auto amount = static_cast<uint64_t>(lua_tonumber(L, 2));
  auto nonce = submit_tx(L, fn, [&](schema::Transaction::Body::Builder b) {
    auto t = b.initTransfer();
    t.setTo(kj::arrayPtr(to.bytes.data(), 32));
    t.setAmount(amount);
  });
  lua_pushinteger(L, static_cast<lua_Integer>(nonce));
  return 1;
}

int l_wallet_me(lua_State* L) {
  lua_pushstring(L, session_of(L).c->self().id().hex().c_str());
  return 1;
}

int l_asset_transfer(lua_State* L) {
  const char* fn = "asset.transfer";
  auto id = check_id(L, 1, fn, "asset id");
  auto to = check_id(L, 2, fn, "to");
  auto nonce = submit_tx(L, fn, [&](schema::Transaction::Body::Builder b) {
    auto t = b.initAssetTransfer();
    t.setAssetId(kj::arrayPtr(id.bytes.data(), 32));
    t.setTo(kj::arrayPtr(to.bytes.data(), 32));
  });
  lua_pushinteger(L, static_cast<lua_Integer>(nonce));
  return 1;
}

int l_asset_owner(lua_State* L) {
  auto id = node_id::from_hex(luaL_checkstring(L, 1)); // 32 bytes in hex
  if (!id)
    luaL_error(L, "asset.owner: id: %s", what_of(id.error()).c_str());
  auto r = ledger_query(L, "asset.owner",
                        [&](auto q) { q.setAsset(kj::arrayPtr(id->bytes.data(), 32)); });
  if (!r)
    raise(L, "asset.owner", r.error());
  opened<schema::AssetInfo> a{*r};
  if (!a)
    raise(L, "asset.owner", a.error());
  lua_pushstring(L, to_hex({a->getOwner().begin(), a->getOwner().size()}).c_str());
  return 1;
}

void register_table(lua_State* L, const char* name, const luaL_Reg* fns) {
  lua_newtable(L);
  luaL_setfuncs(L, fns, 0);
  lua_setglobal(L, name);
}

caf::expected<std::unique_ptr<session>> connect_session(const console_options& o) {
  if (o.connect.empty()) {
    // No hosts given: start an embedded cluster in this process.
    auto cl = embedded_cluster::start({});
    if (!cl)
      return make_error(code_of(cl.error()),
                        "starting the embedded cluster: " + what_of(cl.error()));
    auto s = std::make_unique<session>();
    s->cluster = std::move(*cl);
    s->c = &s->cluster->c();
    for (size_t i = 0; i < s->cluster->ids().size(); ++i)
      s->nodes.emplace_back(s->cluster->ids()[i], s->cluster->addresses()[i]);
    s->handlers = std::make_unique<remote_handlers>(*s->c);
    return s;
  }
  if (o.data_dir.empty())
    return make_error(errc::invalid_argument,
                      "--data-dir (this client's key and trusted hosts) is needed with --connect");
  client::options co;
  co.data_dir = o.data_dir;
  co.dev_open = o.dev_open;
  co.threads = 2;
  auto c = client::start(co);
  if (!c)
    return c.error();
  auto s = std::make_unique<session>();
  s->owned = std::move(*c);
  s->c = s->owned.get();
  for (auto& addr : o.connect) {
    auto id = s->c->connect(addr);
    if (!id)
      return id.error();
    s->nodes.emplace_back(*id, addr);
  }
  s->handlers = std::make_unique<remote_handlers>(*s->c);
  return s;
}

lua_State* new_state(session& s) {
  lua_State* L = luaL_newstate();
  luaL_openlibs(L);
  lua_pushlightuserdata(L, &s);
  lua_setfield(L, LUA_REGISTRYINDEX, "aicon.session");
  luaL_newmetatable(L, "aicon.job");
  static const luaL_Reg job_methods[] = {{"wait", l_job_wait},       {"status", l_job_status},
                                         {"cancel", l_job_cancel},   {"metrics", l_job_metrics},
                                         {"save", l_job_save},       {nullptr, nullptr}};
  lua_newtable(L);
  luaL_setfuncs(L, job_methods, 0);
  lua_pushcclosure(L, l_job_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_job_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  lua_register(L, "nodes", l_nodes);
  lua_register(L, "help", l_help);
  lua_register(L, "on", l_on);
  lua_register(L, "off", l_off);
  lua_register(L, "sleep", l_sleep);
  lua_register(L, "train", l_train);
  static const luaL_Reg dataset_fns[] = {{"put", l_dataset_put},
                                         {"list", l_dataset_list},
                                         {"preview", l_dataset_preview},
                                         {nullptr, nullptr}};
  register_table(L, "dataset", dataset_fns);
  static const luaL_Reg model_fns[] = {{"put", l_model_put}, {nullptr, nullptr}};
  register_table(L, "model", model_fns);
  static const luaL_Reg job_fns[] = {{"list", l_job_list}, {"attach", l_job_attach}, {nullptr, nullptr}};
  register_table(L, "job", job_fns);
  static const luaL_Reg chain_fns[] = {{"tip", l_chain_tip}, {"block", l_chain_block}, {nullptr, nullptr}};
  register_table(L, "chain", chain_fns);
  static const luaL_Reg wallet_fns[] = {{"balance", l_wallet_balance},
                                        {"transfer", l_wallet_transfer},
                                        {"me", l_wallet_me},
                                        {nullptr, nullptr}};
  register_table(L, "wallet", wallet_fns);
  static const luaL_Reg asset_fns[] = {{"owner", l_asset_owner},
                                       {"transfer", l_asset_transfer},
                                       {nullptr, nullptr}};
  register_table(L, "asset", asset_fns);
  return L;
}

/// Runs the chunk on the stack with a traceback-free error message.
int call(lua_State* L, int nargs, int nresults) {
  return lua_pcall(L, nargs, nresults, 0);
}

std::string show(lua_State* L, int i, int depth = 0) {
  switch (lua_type(L, i)) {
    case LUA_TSTRING: return depth ? fmt::format("\"{}\"", lua_tostring(L, i)) : lua_tostring(L, i);
    case LUA_TTABLE: {
      if (depth > 1)
        return "{...}";
      std::string out = "{";
      int abs = lua_absindex(L, i);
      lua_pushnil(L);
      int n = 0;
      while (lua_next(L, abs) != 0) {
        if (n++ > 20) {
          lua_pop(L, 2);
          out += ", ...";
          break;
        }
        std::string key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2)
                                                          : "[" + show(L, -2, depth + 1) + "]";
        if (n > 1)
          out += ", ";
        out += key;
        out += '=';
        out += show(L, -1, depth + 1);
        lua_pop(L, 1);
      }
      return out + "}";
    }
    default: return luaL_tolstring(L, i, nullptr) ? [&] {
        std::string s = lua_tostring(L, -1);
        lua_pop(L, 1);
        return s;
      }() : std::string{};
  }
}

/// Closes the Lua state (its running jobs are cancelled and joined), the
/// handler sessions on the hosts and the session itself (the embedded hosts,
/// or the client's actor system), all within 10 s. CAF 0.17 now and then
/// never finishes awaiting its detached threads at shutdown (seen after
/// Ctrl-D on a terminal: the main thread in
/// actor_system::await_detached_threads while a blocking actor inside
/// libcaf_core waits for a message); a console that is done must still
/// leave, and nothing durable is lost by leaving then: the embedded hosts'
/// stores are temporary (removed by stop_within's own watchdog) and a client
/// keeps no state. Past the limit it says which step was slow.
void leave(lua_State* L, std::unique_ptr<session> s, int exit_code) {
  constexpr auto limit = std::chrono::seconds(10);
  auto state = std::make_shared<std::pair<std::mutex, std::condition_variable>>();
  auto done = std::make_shared<bool>(false);
  auto step = std::make_shared<std::atomic<const char*>>("closing the Lua state");
  std::thread watchdog([state, done, step, limit, exit_code] {
    std::unique_lock<std::mutex> lk{state->first};
    if (state->second.wait_for(lk, limit, [&] { return *done; }))
      return;
    std::fprintf(stderr, "aicon: leaving took over %lld s (at: %s); leaving now\n",
                 static_cast<long long>(limit.count()), step->load());
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(exit_code);
  });
  lua_close(L);
  step->store("closing the handler sessions on the hosts");
  s->handlers.reset(); // while the client is up
  step->store("stopping the embedded hosts");
  embedded_cluster::stop_within(s->cluster, limit, exit_code);
  step->store("stopping the client's actor system");
  s.reset();
  {
    std::lock_guard<std::mutex> lk{state->first};
    *done = true;
  }
  state->second.notify_all();
  watchdog.join();
}

} // namespace

int run_cmd(const console_options& o) {
  auto s = connect_session(o);
  if (!s) {
    std::fprintf(stderr, "aicon run: %s\n", describe(s.error()).c_str());
    return 1;
  }
  lua_State* L = new_state(**s);
  lua_newtable(L);
  lua_pushstring(L, o.script.c_str());
  lua_rawseti(L, -2, 0);
  for (size_t i = 0; i < o.args.size(); ++i) {
    lua_pushstring(L, o.args[i].c_str());
    lua_rawseti(L, -2, static_cast<lua_Integer>(i + 1));
  }
  lua_setglobal(L, "arg");
  int rc = luaL_loadfile(L, o.script.c_str());
  if (rc == LUA_OK)
    rc = call(L, 0, 0);
  if (rc != LUA_OK)
    std::fprintf(stderr, "aicon run: %s\n", lua_tostring(L, -1));
  (*s)->handlers->flush();
  pump_events(L);
  leave(L, std::move(*s), rc == LUA_OK ? 0 : 1);
  return rc == LUA_OK ? 0 : 1;
}

int console_cmd(const console_options& o) {
  auto s = connect_session(o);
  if (!s) {
    std::fprintf(stderr, "aicon console: %s\n", describe(s.error()).c_str());
    return 1;
  }
  lua_State* L = new_state(**s);
  std::string history;
  if (auto home = std::getenv("HOME"))
    history = std::string{home} + "/.aicon_history";
  using_history();
  if (!history.empty())
    read_history(history.c_str());
  std::printf("aicon console (Lua 5.4): %zu host(s); help() lists the API, Ctrl-D leaves\n",
              (*s)->nodes.size());
  std::fflush(stdout);
  std::string buffer;
  while (true) {
    pump_events(L);
    char* line = readline(buffer.empty() ? "aicon> " : "   >> ");
    if (!line)
      break;
    std::string text = line;
    std::free(line);
    if (!buffer.empty())
      buffer += '\n';
    buffer += text;
    if (buffer.empty())
      continue;
    // An expression prints its value; a statement runs; an unfinished chunk
    // waits for more lines.
    int rc = luaL_loadbuffer(L, ("return " + buffer).c_str(), buffer.size() + 7, "=console");
    if (rc != LUA_OK) {
      lua_pop(L, 1);
      rc = luaL_loadbuffer(L, buffer.c_str(), buffer.size(), "=console");
      if (rc == LUA_ERRSYNTAX) {
        std::string msg = lua_tostring(L, -1);
        if (msg.size() >= 5 && msg.substr(msg.size() - 5) == "<eof>") {
          lua_pop(L, 1);
          continue; // more lines
        }
      }
    }
    add_history(buffer.c_str());
    (*s)->typed.push_back(buffer);
    if ((*s)->typed.size() > 1000)
      (*s)->typed.pop_front();
    buffer.clear();
    if (rc == LUA_OK) {
      int top = lua_gettop(L) - 1;
      rc = call(L, 0, LUA_MULTRET);
      if (rc == LUA_OK) {
        int n = lua_gettop(L) - top;
        std::string out;
        for (int i = 1; i <= n; ++i)
          out += (i > 1 ? "\t" : "") + std::string{show(L, top + i)};
        if (n > 0)
          std::printf("%s\n", out.c_str());
        lua_settop(L, top);
      }
    }
    if (rc != LUA_OK) {
      std::printf("error: %s\n", lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    std::fflush(stdout);
  }
  if (!history.empty())
    write_history(history.c_str());
  std::printf("\n");
  std::fflush(stdout);
  pump_events(L);
  leave(L, std::move(*s), 0);
  return 0;
}

} // namespace aicon
