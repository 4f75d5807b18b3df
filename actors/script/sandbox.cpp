#include "actors/script/sandbox.hpp"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>
#include <lua.hpp>

#include "runtime/error.hpp"

namespace aicon::script {

namespace {

constexpr int hook_every = 1000; // instructions between two budget checks
constexpr size_t line_max = 4096;

sandbox* owner(lua_State* L) {
  sandbox* s = nullptr;
  std::memcpy(&s, lua_getextraspace(L), sizeof(s));
  return s;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
           std::chrono::steady_clock::now().time_since_epoch())
    .count();
}

void count_hook(lua_State* L, lua_Debug*) {
  auto* s = owner(L);
  if (!s->spent_) {
    s->budget_left_ -= hook_every;
    if (s->budget_left_ < 0)
      s->spent_why_ = "stopped: it ran over its budget of instructions "
                      "(script_instructions_max, per event or poll)";
    else if (now_ns() > s->deadline_ns_)
      s->spent_why_ = "stopped: it ran past its time (script_wall_ms_max, per event or poll)";
    else
      return;
    s->spent_ = true;
    // From now on every instruction raises: a pcall() around the loop
    // catches one error and the very next instruction raises again.
    lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
  }
  luaL_error(L, "%s", s->spent_why_.c_str());
}

/// Counts a pattern's quantifiers: `unbounded` (*, +, -) and `optional` (?),
/// skipping escapes (%x) and sets ([...]).
void count_quantifiers(std::string_view p, int& unbounded, int& optional) {
  unbounded = optional = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '%') {
      if (i + 1 < p.size() && (p[i + 1] == 'b'))
        i += 3; // %bxy
      else if (i + 1 < p.size() && p[i + 1] == 'f') {
        i += 1; // %f[set]: the set follows
      } else
        ++i;
    } else if (c == '[') {
      ++i;
      if (i < p.size() && p[i] == '^')
        ++i;
      if (i < p.size() && p[i] == ']')
        ++i; // a leading ] is part of the set
      while (i < p.size() && p[i] != ']') {
        if (p[i] == '%')
          ++i;
        ++i;
      }
    } else if (c == '*' || c == '+' || c == '-') {
      if (i > 0)
        ++unbounded;
    } else if (c == '?') {
      if (i > 0)
        ++optional;
    }
  }
}

/// Steps Lua's backtracking matcher may take, at worst, for a pattern with
/// these quantifiers on a subject of n bytes, tried at every start.
double pattern_cost(size_t n, int unbounded, int optional) {
  return std::pow(static_cast<double>(n) + 1, unbounded + 1) * std::pow(2.0, optional);
}

/// Beyond this, one C call could hold the host's core for seconds (Lua's
/// matcher does about 10^8 simple steps a second here).
constexpr double pattern_cost_max = 2e7;

/// string.find/match/gmatch/gsub: refuse a pattern whose worst case is over
/// pattern_cost_max, then call the original (upvalue 1).
int guarded_pattern(lua_State* L) {
  size_t n = 0, pn = 0;
  luaL_checklstring(L, 1, &n);
  const char* p = luaL_checklstring(L, 2, &pn);
  bool plain = lua_toboolean(L, 4) && lua_isinteger(L, lua_upvalueindex(2))
               && lua_tointeger(L, lua_upvalueindex(2)) == 1; // find(s, p, init, plain)
  if (!plain) {
    int unbounded = 0, optional = 0;
    count_quantifiers({p, pn}, unbounded, optional);
    if (pattern_cost(n, unbounded, optional) > pattern_cost_max)
      return luaL_error(L, "refused: the pattern has %d repetitions (*, +, -) and %d optional "
                           "items (?) over a %d-byte string; its matching could hold the host "
                           "(at most %d steps)",
                        unbounded, optional, static_cast<int>(n),
                        static_cast<int>(pattern_cost_max));
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/// string.rep: "" repeated any number of times is "" (the original loops
/// n times even then); a result over the memory cap is refused at once.
int guarded_rep(lua_State* L) {
  size_t l = 0, lsep = 0;
  luaL_checklstring(L, 1, &l);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (n <= 0 || l + lsep == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  if (static_cast<double>(l + lsep) * static_cast<double>(n) > 1e9)
    return luaL_error(L, "not enough memory: string.rep of %d bytes", static_cast<int>(l + lsep));
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

int panic(lua_State* L) {
  // Every call into the state is protected; reaching here is a bug.
  std::fprintf(stderr, "aicon script sandbox: unprotected Lua error: %s\n",
               lua_tostring(L, -1) ? lua_tostring(L, -1) : "?");
  std::abort();
}

void quote(std::string_view s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    if (c == '"' || c == '\\')
      (out += '\\') += static_cast<char>(c);
    else if (c < 32 || c >= 127)
      out += fmt::format("\\{:03d}", c);
    else
      out += static_cast<char>(c);
  }
  out += '"';
}

bool literal_at(lua_State* L, int idx, std::string& out, size_t limit, int depth) {
  idx = lua_absindex(L, idx);
  if (out.size() > limit)
    return false;
  switch (lua_type(L, idx)) {
    case LUA_TNIL: out += "nil"; return true;
    case LUA_TBOOLEAN: out += lua_toboolean(L, idx) ? "true" : "false"; return true;
    case LUA_TNUMBER:
      if (lua_isinteger(L, idx)) {
        out += fmt::format("{}", static_cast<long long>(lua_tointeger(L, idx)));
      } else {
        double v = lua_tonumber(L, idx);
        if (std::isnan(v))
          out += "(0/0)";
        else if (std::isinf(v))
          out += v > 0 ? "(1/0)" : "(-1/0)";
        else
          out += fmt::format("{:.17g}", v);
      }
      return true;
    case LUA_TSTRING: {
      size_t n = 0;
      const char* p = lua_tolstring(L, idx, &n);
      quote({p, n}, out);
      return out.size() <= limit;
    }
    case LUA_TTABLE: {
      if (depth >= 8) {
        out += "\"<table nested too deep>\"";
        return true;
      }
      out += '{';
      lua_pushnil(L);
      while (lua_next(L, idx) != 0) {
        out += '[';
        bool ok = literal_at(L, -2, out, limit, depth + 1);
        out += "]=";
        ok = ok && literal_at(L, -1, out, limit, depth + 1);
        out += ',';
        lua_pop(L, 1);
        if (!ok) {
          lua_pop(L, 1);
          return false;
        }
      }
      out += '}';
      return out.size() <= limit;
    }
    default: {
      size_t n = 0;
      const char* p = luaL_tolstring(L, idx, &n);
      quote({p, n}, out);
      lua_pop(L, 1);
      return out.size() <= limit;
    }
  }
}

/// What a protected call into the state needs; passed as a light userdata
/// so that nothing outside the pcall allocates.
struct call_ctx {
  sandbox* box = nullptr;
  int handler_ref = LUA_NOREF;
  const push_args* args = nullptr;
  std::string reply; ///< the literal of a non-nil result
  bool reply_cut = false;
  // set_handler
  const std::string* code = nullptr;
  const std::string* chunk = nullptr;
  int new_ref = LUA_NOREF;
};

int protected_call(lua_State* L) {
  auto* c = static_cast<call_ctx*>(lua_touserdata(L, 1));
  lua_rawgeti(L, LUA_REGISTRYINDEX, c->handler_ref);
  int n = (*c->args)(L);
  lua_call(L, n, 1);
  if (!lua_isnil(L, -1))
    c->reply_cut = !sandbox::literal(L, -1, c->reply);
  return 0;
}

int protected_compile(lua_State* L) {
  auto* c = static_cast<call_ctx*>(lua_touserdata(L, 1));
  if (luaL_loadbufferx(L, c->code->data(), c->code->size(), c->chunk->c_str(), "t") != LUA_OK)
    return lua_error(L);
  lua_call(L, 0, 1);
  if (!lua_isfunction(L, -1))
    return luaL_error(L, "the handler is not a function (it evaluates to a %s)",
                      luaL_typename(L, -1));
  c->new_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

int open_libraries(lua_State* L) {
  static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                                  {LUA_TABLIBNAME, luaopen_table},
                                  {LUA_STRLIBNAME, luaopen_string},
                                  {LUA_MATHLIBNAME, luaopen_math},
                                  {LUA_UTF8LIBNAME, luaopen_utf8}};
  for (auto& lib : libs) {
    luaL_requiref(L, lib.name, lib.func, 1);
    lua_pop(L, 1);
  }
  // Nothing that reads files, loads code or steers the collector.
  for (auto name : {"dofile", "loadfile", "load", "collectgarbage"}) {
    lua_pushnil(L);
    lua_setglobal(L, name);
  }
  lua_getglobal(L, LUA_STRLIBNAME);
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  // C functions are not metered by the count hook: the ones whose running
  // time a caller controls are guarded (the string metatable's __index is
  // this same table, so s:find() is guarded too).
  int kind = 0;
  for (auto name : {"find", "match", "gmatch", "gsub"}) {
    lua_getfield(L, -1, name);
    lua_pushinteger(L, ++kind); // 1: find (which has a plain mode)
    lua_pushcclosure(L, guarded_pattern, 2);
    lua_setfield(L, -2, name);
  }
  lua_getfield(L, -1, "rep");
  lua_pushcclosure(L, guarded_rep, 1);
  lua_setfield(L, -2, "rep");
  lua_pop(L, 1);
  lua_pushcfunction(L, &sandbox::print);
  lua_setglobal(L, "print");
  auto* g = static_cast<std::map<std::string, std::string>*>(lua_touserdata(L, 1));
  for (auto& [k, v] : *g) {
    lua_pushlstring(L, v.data(), v.size());
    lua_setglobal(L, k.c_str());
  }
  return 0;
}

} // namespace

void* sandbox::alloc(void* ud, void* ptr, size_t osize, size_t nsize) {
  auto* s = static_cast<sandbox*>(ud);
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    std::free(ptr);
    s->used_ -= old;
    return nullptr;
  }
  if (nsize > old && s->used_ + (nsize - old) > s->opts_.memory_bytes)
    return nullptr; // Lua raises "not enough memory" in the handler
  void* p = std::realloc(ptr, nsize);
  if (p)
    s->used_ = s->used_ - old + nsize;
  return p;
}

int sandbox::print(lua_State* L) {
  auto* s = owner(L);
  std::string line;
  int n = lua_gettop(L);
  for (int i = 1; i <= n; ++i) {
    size_t len = 0;
    const char* p = luaL_tolstring(L, i, &len);
    if (i > 1)
      line += '\t';
    line.append(p, len);
    lua_pop(L, 1);
    if (line.size() > line_max) {
      line.resize(line_max);
      line += " ...";
      break;
    }
  }
  s->push_line(std::move(line), false);
  return 0;
}

void sandbox::push_line(std::string s, bool reply) {
  auto& to = reply ? replies_ : lines_;
  if (lines_.size() + replies_.size() >= opts_.output_max) {
    ++dropped_;
    return;
  }
  to.push_back(std::move(s));
}

caf::expected<std::unique_ptr<sandbox>> sandbox::make(options o) {
  std::unique_ptr<sandbox> s{new sandbox};
  s->opts_ = std::move(o);
  s->L_ = lua_newstate(&sandbox::alloc, s.get());
  if (!s->L_)
    return make_error(errc::internal, "cannot make a Lua state within script_memory_bytes");
  lua_State* L = s->L_;
  lua_atpanic(L, panic);
  sandbox* self = s.get();
  std::memcpy(lua_getextraspace(L), &self, sizeof(self));
  // Opening the libraries allocates: do it protected.
  lua_pushcfunction(L, open_libraries);
  lua_pushlightuserdata(L, &s->opts_.globals);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK)
    return make_error(errc::internal, fmt::format("cannot open the sandbox's libraries: {}",
                                                  lua_tostring(L, -1)));
  lua_sethook(L, count_hook, LUA_MASKCOUNT, hook_every);
  return s;
}

sandbox::~sandbox() {
  if (L_)
    lua_close(L_);
}

caf::error sandbox::set_handler(const std::string& event, const std::string& source,
                                const std::string& chunk, uint32_t line) {
  lua_State* L = L_;
  if (auto old = handlers_.find(event); old != handlers_.end()) {
    if (!source.empty()) {
      // Replaced only once the new one compiles (below).
    } else {
      luaL_unref(L, LUA_REGISTRYINDEX, old->second);
      handlers_.erase(old);
      return caf::none;
    }
  }
  if (source.empty())
    return caf::none;
  std::string name = chunk;
  if (name.empty() || name.size() > 200 || (name[0] != '=' && name[0] != '@'))
    name = "=handler";
  // The source starts at `line` of its chunk: error messages then name the
  // line its author sees.
  std::string code(line > 1 && line < 1'000'000 ? line - 1 : 0, '\n');
  code += "return ";
  code += source;
  call_ctx c;
  c.box = this;
  c.code = &code;
  c.chunk = &name;
  start_budget();
  lua_pushcfunction(L, protected_compile);
  lua_pushlightuserdata(L, &c);
  int rc = lua_pcall(L, 1, 0, 0);
  lua_sethook(L, count_hook, LUA_MASKCOUNT, hook_every);
  if (rc != LUA_OK) {
    std::string msg = lua_tostring(L, -1) ? lua_tostring(L, -1) : "error object is not a string";
    lua_settop(L, 0);
    return make_error(errc::invalid_argument, fmt::format("on({}): {}", event, msg));
  }
  if (auto old = handlers_.find(event); old != handlers_.end())
    luaL_unref(L, LUA_REGISTRYINDEX, old->second);
  handlers_[event] = c.new_ref;
  lua_settop(L, 0);
  return caf::none;
}

void sandbox::call(const std::string& event, const push_args& args) {
  auto h = handlers_.find(event);
  if (h == handlers_.end())
    return;
  ++events_;
  if (!in_round_)
    start_budget();
  else if (spent_) {
    if (skipped_++ == 0)
      push_line(fmt::format("on({}) handler: this poll's budget is spent; its further "
                            "events are skipped", event),
                false);
    return;
  }
  lua_State* L = L_;
  call_ctx c;
  c.box = this;
  c.handler_ref = h->second;
  c.args = &args;
  lua_pushcfunction(L, protected_call);
  lua_pushlightuserdata(L, &c);
  int rc = lua_pcall(L, 1, 0, 0);
  lua_sethook(L, count_hook, LUA_MASKCOUNT, hook_every); // back to sampling
  if (rc != LUA_OK) {
    std::string msg = lua_tostring(L, -1) ? lua_tostring(L, -1) : "error object is not a string";
    push_line(fmt::format("on({}) handler: {}", event, msg), false);
  } else if (!c.reply.empty()) {
    if (c.reply_cut)
      push_line(fmt::format("on({}) handler: its result was over 64 KiB and is dropped", event),
                false);
    else
      push_line(event + "\t" + c.reply, true);
  }
  lua_settop(L, 0);
}

void sandbox::start_budget() {
  budget_left_ = static_cast<int64_t>(opts_.instructions_max);
  deadline_ns_ = now_ns() + static_cast<int64_t>(opts_.wall_ms_max) * 1'000'000;
  spent_ = false;
  skipped_ = 0;
}

void sandbox::begin_round() {
  start_budget();
  in_round_ = true;
}

void sandbox::end_round() {
  in_round_ = false;
  spent_ = false;
  lua_sethook(L_, count_hook, LUA_MASKCOUNT, hook_every);
}

std::vector<std::string> sandbox::take_lines() {
  return std::exchange(lines_, {});
}
std::vector<std::string> sandbox::take_replies() {
  return std::exchange(replies_, {});
}
uint64_t sandbox::take_dropped() {
  return std::exchange(dropped_, 0);
}

bool sandbox::literal(lua_State* L, int idx, std::string& out, size_t limit) {
  return literal_at(L, idx, out, limit, 0);
}

} // namespace aicon::script
