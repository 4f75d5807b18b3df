// A Lua 5.4 state for untrusted handler code: only the base (without load,
// loadfile, dofile, require), string, table, math and utf8 libraries; a
// memory cap enforced by its allocator; an instruction budget and a wall
// clock deadline per round (one call, or every call of one poll) enforced
// by a count hook that cannot be caught: once spent, every further
// instruction raises again, so pcall() only unwinds faster; string
// patterns whose backtracking could hold a core inside one C call are
// refused before they run; print() captured instead of written. The
// script role keeps one per console session.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <caf/error.hpp>
#include <caf/expected.hpp>
#include <memory>

struct lua_State;

namespace aicon::script {

/// A handler's event argument, pushed onto the Lua stack when it is called.
using push_args = std::function<int(lua_State*)>;

class sandbox {
public:
  struct options {
    uint64_t memory_bytes = 16ull << 20;
    uint64_t instructions_max = 5'000'000; ///< per round
    uint64_t wall_ms_max = 250;            ///< per round
    size_t output_max = 1000; ///< lines and replies kept until taken
    std::map<std::string, std::string> globals; ///< string globals (node, site)
  };

  /// Errors: the state cannot be made within the memory cap.
  static caf::expected<std::unique_ptr<sandbox>> make(options o);
  ~sandbox();
  sandbox(const sandbox&) = delete;
  sandbox& operator=(const sandbox&) = delete;

  /// Compiles `source` (text only, never bytecode), which must evaluate to
  /// a function, as the handler of `event`; an empty source removes it.
  /// Errors name the chunk and line (the source is placed at `line` of
  /// `chunk`, so they match what the author sees) or say it is no function.
  caf::error set_handler(const std::string& event, const std::string& source,
                         const std::string& chunk, uint32_t line);

  bool has_handler(const std::string& event) const {
    return handlers_.count(event) > 0;
  }
  bool empty() const {
    return handlers_.empty();
  }
  /// The events it has handlers for, in order.
  std::vector<std::string> handler_events() const {
    std::vector<std::string> out;
    for (auto& [event, _] : handlers_)
      out.push_back(event);
    return out;
  }

  /// Calls the handler of `event` (if any) with the arguments `args` pushes,
  /// under the instruction budget. What it prints goes to lines(); a non-nil
  /// result goes to replies() as "event\t<Lua literal>"; an error becomes a
  /// line "on(event) handler: <message>". The state stays usable.
  void call(const std::string& event, const push_args& args);

  /// Every call until end_round() draws on one budget of instructions and
  /// one deadline (a poll's events); once spent, the round's remaining
  /// calls are skipped and one line says how many. Outside a round each
  /// call has a budget of its own.
  void begin_round();
  void end_round();

  /// Takes what the handlers produced since the last take.
  std::vector<std::string> take_lines();
  std::vector<std::string> take_replies();
  uint64_t take_dropped();
  uint64_t events() const {
    return events_;
  }
  uint64_t memory_in_use() const {
    return used_;
  }

  /// Writes the value at `idx` as a Lua literal (numbers, strings, booleans,
  /// nil and tables of those, nested at most 8 deep; other types as their
  /// tostring() in a string). At most `limit` bytes; false when cut short.
  static bool literal(lua_State* L, int idx, std::string& out, size_t limit = 64 * 1024);

  /// The sandbox's print(): its arguments, tab-separated, as one line.
  static int print(lua_State* L);

private:
  sandbox() = default;
  static void* alloc(void* ud, void* ptr, size_t osize, size_t nsize);
  void push_line(std::string s, bool reply);

  options opts_;
  lua_State* L_ = nullptr;
  uint64_t used_ = 0;
  std::map<std::string, int> handlers_;
  std::vector<std::string> lines_, replies_;
  uint64_t dropped_ = 0;
  uint64_t events_ = 0;
  void start_budget();
  bool in_round_ = false;
  uint64_t skipped_ = 0; ///< calls skipped in this round after its budget was spent

public:
  // For the count hook (a free function): the budget left in this round,
  // its deadline, and whether it is spent (then every instruction raises).
  int64_t budget_left_ = 0;
  int64_t deadline_ns_ = 0; ///< steady clock
  bool spent_ = false;
  std::string spent_why_;
};

} // namespace aicon::script
