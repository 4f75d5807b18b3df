// The script role: runs the handlers consoles register with on(event, fn)
// inside this host, each console's in a sandboxed Lua state of its own
// (see sandbox.hpp). It watches the local ledger for committed blocks and
// the directory for peers going up or down, calls the handlers, and keeps
// what they print or return until the console polls (ScriptPoll). Job
// progress comes with the polls: a job's coordinator runs in the process
// that submitted it.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "runtime/access.hpp"
#include "runtime/system.hpp"

namespace aicon {

caf::expected<caf::actor> spawn_script(caf::actor_system& sys, const role_context& ctx);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row script_access[] = {
  {"ScriptHandler", "the console that opened the session", "the 16-byte session id, a secret capability (random, never listed whole)", "`not_found`"},
  {"ScriptPoll", "the console that opened the session", "the session id", "`not_found`"},
  {"ScriptClose", "the console that opened the session", "the session id", "`not_found`"},
  {"ScriptList", "any admitted peer", "(public) 4 bytes of each session id, its events and use", "-"},
};

} // namespace aicon
