// Finding the source text of a Lua function, so that on(event, fn) can ship
// the handler to a host's script role instead of running it here. Lua keeps
// no source, only the chunk name and the lines a function spans; the text of
// that chunk (the script file, or what was typed at the console) is searched
// for a `function ... end` on those lines that compiles to the same bytecode.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

struct lua_State;

namespace aicon {

struct handler_source {
  std::string text;  ///< "function(...) ... end", exactly as written
  std::string chunk; ///< its chunk name ("=console", "@job.lua")
  uint32_t line = 1; ///< the line it starts on there
};

/// Texts that were run under a chunk name, newest first (the console keeps
/// what was typed; a file chunk is read from disk).
using chunk_texts = std::function<std::vector<std::string>(const std::string& chunk)>;

/// The source of the Lua function at `idx`. Errors say why it cannot run
/// elsewhere: a C function, one that uses local variables from outside it
/// (named), or one whose text cannot be found.
caf::expected<handler_source> handler_source_of(lua_State* L, int idx, const chunk_texts& texts);

} // namespace aicon
