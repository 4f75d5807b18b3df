#include "cli/lua_source.hpp"

#include <cctype>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <lua.hpp>

#include "runtime/error.hpp"

namespace aicon {

namespace {

int append(lua_State*, const void* p, size_t n, void* ud) {
  static_cast<std::string*>(ud)->append(static_cast<const char*>(p), n);
  return 0;
}

/// Stripped bytecode of the function on top of L's stack.
std::string dump_of(lua_State* L) {
  std::string out;
  lua_dump(L, append, &out, 1);
  return out;
}

bool word_at(const std::string& s, size_t pos, const std::string& w) {
  if (s.compare(pos, w.size(), w) != 0)
    return false;
  auto ident = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; };
  if (pos > 0 && ident(s[pos - 1]))
    return false;
  return pos + w.size() >= s.size() || !ident(s[pos + w.size()]);
}

std::vector<size_t> line_starts(const std::string& text) {
  std::vector<size_t> starts{0};
  for (size_t i = 0; i < text.size(); ++i)
    if (text[i] == '\n')
      starts.push_back(i + 1);
  return starts;
}

void stop_hook(lua_State* L, lua_Debug*) {
  luaL_error(L, "too long");
}

struct candidate {
  std::string text;
  std::string dump;
  int nparams = 0;
  bool vararg = false;
};

/// Every `function ... end` starting on line `first` and ending on line
/// `last` of `text` that compiles, alone, to a function: compiled and
/// evaluated in a bare state (no libraries) so that nothing the text might
/// do runs in the console.
std::vector<candidate> candidates(const std::string& text, int first, int last) {
  std::vector<candidate> out;
  auto starts = line_starts(text);
  if (first < 1 || last < first || static_cast<size_t>(last) > starts.size())
    return out;
  auto line_end = [&](int l) {
    return static_cast<size_t>(l) < starts.size() ? starts[l] : text.size();
  };
  std::vector<size_t> begins, ends;
  for (size_t p = starts[first - 1]; p < line_end(first); ++p)
    if (word_at(text, p, "function"))
      begins.push_back(p);
  for (size_t p = starts[last - 1]; p < line_end(last); ++p)
    if (word_at(text, p, "end"))
      ends.push_back(p + 3);
  for (auto b : begins)
    for (auto e : ends) {
      if (e <= b || out.size() > 64)
        continue;
      std::string sub = text.substr(b, e - b);
      std::string code(static_cast<size_t>(first - 1), '\n');
      code += "return " + sub;
      lua_State* T = luaL_newstate();
      lua_sethook(T, stop_hook, LUA_MASKCOUNT, 100000);
      if (luaL_loadbufferx(T, code.data(), code.size(), "=candidate", "t") == LUA_OK
          && lua_pcall(T, 0, 1, 0) == LUA_OK && lua_isfunction(T, -1)
          && !lua_iscfunction(T, -1)) {
        candidate c;
        c.text = sub;
        lua_pushvalue(T, -1);
        lua_Debug ar;
        lua_getinfo(T, ">u", &ar);
        c.nparams = ar.nparams;
        c.vararg = ar.isvararg;
        c.dump = dump_of(T);
        out.push_back(std::move(c));
      }
      lua_close(T);
    }
  return out;
}

} // namespace

caf::expected<handler_source> handler_source_of(lua_State* L, int idx, const chunk_texts& texts) {
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TFUNCTION)
    return make_error(errc::invalid_argument,
                      fmt::format("the handler must be a function (got {})",
                                  luaL_typename(L, idx)));
  if (lua_iscfunction(L, idx))
    return make_error(errc::invalid_argument,
                      "the handler must be a Lua function written in this console or script "
                      "(got a C function such as print); wrap it: function(...) print(...) end");
  for (int i = 1;; ++i) {
    const char* name = lua_getupvalue(L, idx, i);
    if (!name)
      break;
    lua_pop(L, 1);
    if (std::string{name} != "_ENV")
      return make_error(errc::invalid_argument,
                        fmt::format("the handler uses the local '{}' from outside it; handlers "
                                    "run inside the host and see only their arguments and "
                                    "globals of their own (return a value and take it with "
                                    "reply=)",
                                    *name ? name : "?"));
  }
  lua_pushvalue(L, idx);
  lua_Debug ar;
  lua_getinfo(L, ">Su", &ar);
  int nparams = ar.nparams;
  bool vararg = ar.isvararg;
  std::string chunk = ar.source ? ar.source : "";
  int first = ar.linedefined, last = ar.lastlinedefined;
  lua_pushvalue(L, idx);
  std::string want = dump_of(L);
  lua_pop(L, 1);

  std::vector<std::string> sources;
  if (!chunk.empty() && chunk[0] == '@') {
    std::ifstream in{chunk.substr(1), std::ios::binary};
    std::stringstream ss;
    ss << in.rdbuf();
    if (in)
      sources.push_back(ss.str());
  } else if (!chunk.empty() && chunk[0] == '=') {
    sources = texts(chunk);
  } else {
    sources.push_back(chunk); // loaded from a string: the name is the text
  }
  std::vector<candidate> alike;
  for (auto& text : sources)
    for (auto& c : candidates(text, first, last)) {
      if (c.dump == want)
        return handler_source{c.text, chunk, static_cast<uint32_t>(first)};
      if (c.nparams == nparams && c.vararg == vararg)
        alike.push_back(std::move(c));
    }
  // Nested in another function its upvalue indices differ from a top-level
  // one's: accept the single function of that shape on those lines.
  if (alike.size() == 1)
    return handler_source{alike[0].text, chunk, static_cast<uint32_t>(first)};
  return make_error(errc::invalid_argument,
                    fmt::format("cannot find the handler's source (lines {}-{} of {}); write it "
                                "as function(...) ... end in the script or at the prompt, or "
                                "pass its source as a string",
                                first, last, chunk.empty() ? "?" : chunk.substr(1)));
}

} // namespace aicon
