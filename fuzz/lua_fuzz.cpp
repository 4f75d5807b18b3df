// Handler source a console ships to a host's script role: compiled in the
// sandbox (text only) and, when it is a function, called with an event, all
// under small budgets. Nothing it does may crash, hang or escape.
#include <lua.hpp>

#include "actors/script/sandbox.hpp"
#include "fuzz/fuzz.hpp"

using namespace aicon;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  script::sandbox::options o;
  o.memory_bytes = 2u << 20;
  o.instructions_max = 20'000;
  o.wall_ms_max = 50;
  o.output_max = 16;
  auto box = script::sandbox::make(o);
  if (!box)
    return 0;
  std::string source{reinterpret_cast<const char*>(data), size};
  if ((*box)->set_handler("block", source, "=fuzz", 1))
    return 0;
  (*box)->call("block", [](lua_State* L) {
    lua_pushinteger(L, 42);
    lua_pushstring(L, "0123abcd");
    return 2;
  });
  (void) (*box)->take_lines();
  (void) (*box)->take_replies();
  return 0;
}

std::vector<std::string> aicon_fuzz_seeds() {
  return {
    "function(h, x) return h + 1 end",
    "function(h) print('block', h) return {h = h, s = tostring(h)} end",
    "function(h) local t = {} for i = 1, 10 do t[i] = ('x'):rep(i) end return #t end",
    "function(h, x) return x:find('%d+') end",
    "function() local ok = pcall(function() while true do end end) return ok end",
    "function(h) return string.format('%5.2f', h / 3) end",
  };
}
