# The script role: a sandboxed Lua actor inside a host that runs the event
# handlers a console registers with on(event, fn). Handlers run here, next to
# the ledger and the directory they watch; what they print or return goes
# back to the console when it polls.
@0xd0f96acc2a0b3f93;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct ScriptHandler {
  # Sets (or with an empty source, removes) the handler of one event in one
  # console's session; the session (a Lua state of its own) is made on first
  # use. Answered with ScriptOutput, or an ErrorReply naming what was wrong
  # (unknown event, syntax error, not a function, too many sessions).
  session @0 :Data;   # 16 random bytes chosen by the console
  event @1 :Text;     # "block", "progress" or "peer"
  source @2 :Text;    # a Lua function expression: "function(h, hash) ... end"
  chunk @3 :Text;     # where it was written, for error messages ("=console", "@job.lua")
  line @4 :UInt32;    # the line it starts on there
}

struct ProgressEvent {
  job @0 :Text;           # the job's id (hex) or the console's name for it
  step @1 :UInt64;        # steps done
  loss @2 :Float64;
  samplesPerS @3 :Float64;
  trainers @4 :UInt32;
}

struct ScriptPoll {
  # Keeps a session alive (it ends after script_idle_ms without a poll),
  # hands it the job progress the console saw (a job's coordinator runs in
  # the process that submitted it) and collects what the handlers produced.
  session @0 :Data;
  progress @1 :List(ProgressEvent);
}

struct ScriptOutput {
  lines @0 :List(Text);     # printed by handlers, and their errors, in order
  replies @1 :List(Text);   # what handlers returned (non-nil), as "event\tvalue"
  dropped @2 :UInt64;       # lines or replies dropped since the last poll (bounded buffer)
  events @3 :UInt64;        # events handled in this session so far
}

struct ScriptClose {
  # Ends a session at once; answered with its last ScriptOutput.
  session @0 :Data;
}

struct ScriptList {
  # Asks the script role which console sessions it runs (for `aicon status`).
}

struct ScriptSessionInfo {
  id @0 :Text;            # the first 8 hex digits of the session key
  events @1 :List(Text);  # the events it has handlers for
  handled @2 :UInt64;     # events its handlers were called for so far
  memoryBytes @3 :UInt64; # what its Lua state holds
  idleMs @4 :UInt64;      # since its console last polled
}

struct ScriptSessions {
  sessions @0 :List(ScriptSessionInfo);
}
