// The script sandbox that runs on(event, fn) handlers inside a host: what
// handlers can and cannot reach, and that a bad handler (syntax, a loop, a
// memory bomb, a flood of prints) is stopped by name while the state stays
// usable.
#include <boost/test/unit_test.hpp>

#include <chrono>

#include <lua.hpp>

#include "actors/script/sandbox.hpp"
#include "runtime/error.hpp"

using namespace aicon;
using aicon::script::sandbox;

namespace {

std::unique_ptr<sandbox> make_box(uint64_t memory = 4ull << 20, uint64_t instructions = 200'000,
                                  size_t output = 1000) {
  sandbox::options o;
  o.memory_bytes = memory;
  o.instructions_max = instructions;
  o.output_max = output;
  // Only the wall-clock test relies on time: elsewhere a loaded machine must
  // not stop a handler before the limit the test is about.
  o.wall_ms_max = 60'000;
  o.globals = {{"node", "abcd"}, {"site", "west"}};
  auto b = sandbox::make(o);
  BOOST_REQUIRE_MESSAGE(b, (b ? std::string{} : describe(b.error())));
  return std::move(*b);
}

script::push_args ints(std::vector<lua_Integer> xs) {
  return [xs](lua_State* L) {
    for (auto x : xs)
      lua_pushinteger(L, x);
    return static_cast<int>(xs.size());
  };
}

std::string set(sandbox& b, const std::string& event, const std::string& src, uint32_t line = 1) {
  auto err = b.set_handler(event, src, "=console", line);
  return err ? what_of(err) : std::string{};
}

} // namespace

BOOST_AUTO_TEST_SUITE(script)

BOOST_AUTO_TEST_CASE(handlers_print_return_and_keep_their_globals) {
  auto b = make_box();
  BOOST_TEST(set(*b, "block", "function(h) n = (n or 0) + 1; print('block', h, node, site); "
                              "return {h = h, n = n, tag = 'x\\n\"y'} end") == "");
  b->call("block", ints({7}));
  b->call("block", ints({8}));
  b->call("peer", ints({1})); // no handler: nothing happens
  auto lines = b->take_lines();
  BOOST_REQUIRE_EQUAL(lines.size(), 2u);
  BOOST_TEST(lines[0] == "block\t7\tabcd\twest");
  BOOST_TEST(lines[1] == "block\t8\tabcd\twest");
  auto replies = b->take_replies();
  BOOST_REQUIRE_EQUAL(replies.size(), 2u);
  BOOST_TEST(b->events() == 2u);
  BOOST_TEST(b->take_lines().empty());
  // A reply is a Lua literal: loading it back gives the same table.
  auto text = replies[1].substr(replies[1].find('\t') + 1);
  lua_State* L = luaL_newstate();
  BOOST_REQUIRE(luaL_loadbufferx(L, ("return " + text).c_str(), text.size() + 7, "=r", "t")
                == LUA_OK);
  BOOST_REQUIRE(lua_pcall(L, 0, 1, 0) == LUA_OK);
  lua_getfield(L, -1, "h");
  BOOST_TEST(lua_tointeger(L, -1) == 8);
  lua_getfield(L, -2, "n");
  BOOST_TEST(lua_tointeger(L, -1) == 2);
  lua_getfield(L, -3, "tag");
  BOOST_TEST(std::string{lua_tostring(L, -1)} == "x\n\"y");
  lua_close(L);
  // Removing the handler: no more calls.
  BOOST_TEST(set(*b, "block", "") == "");
  b->call("block", ints({9}));
  BOOST_TEST(b->events() == 2u);
}

BOOST_AUTO_TEST_CASE(nothing_outside_the_sandbox_is_reachable) {
  auto b = make_box();
  BOOST_TEST(set(*b, "block", "function() return io == nil and os == nil and load == nil and "
                              "loadfile == nil and dofile == nil and require == nil and "
                              "package == nil and debug == nil and string.dump == nil and "
                              "collectgarbage == nil and coroutine == nil end") == "");
  b->call("block", ints({}));
  auto r = b->take_replies();
  BOOST_REQUIRE_EQUAL(r.size(), 1u);
  BOOST_TEST(r[0] == "block\ttrue");
  BOOST_TEST(set(*b, "peer", "function() os.execute('true') end") == "");
  b->call("peer", ints({}));
  auto lines = b->take_lines();
  BOOST_REQUIRE_EQUAL(lines.size(), 1u);
  BOOST_TEST(lines[0].find("on(peer) handler: console:1: attempt to index a nil value "
                           "(global 'os')") == 0, lines[0]);
}

BOOST_AUTO_TEST_CASE(bad_sources_are_refused_by_chunk_and_line) {
  auto b = make_box();
  auto syntax = set(*b, "block", "function(h)\n  print(h\nend", 12);
  BOOST_TEST(syntax.find("on(block): console:14:") == 0, syntax);
  auto not_fn = set(*b, "block", "42", 3);
  BOOST_TEST(not_fn == "on(block): the handler is not a function (it evaluates to a number)",
             not_fn);
  // Text only: precompiled bytecode is refused.
  auto bytecode = set(*b, "block", std::string{"\x1bLua"} + "\x54\x00", 1);
  BOOST_TEST(bytecode.find("on(block): ") == 0, bytecode);
  BOOST_TEST(!b->has_handler("block"));
  // A failed replacement keeps the handler that was there.
  BOOST_TEST(set(*b, "block", "function() return 1 end") == "");
  BOOST_TEST(set(*b, "block", "function( end") != "");
  b->call("block", ints({}));
  BOOST_TEST(b->take_replies().size() == 1u);
}

BOOST_AUTO_TEST_CASE(a_runaway_loop_and_a_memory_bomb_are_stopped_and_the_state_goes_on) {
  auto b = make_box(4ull << 20, 200'000);
  BOOST_TEST(set(*b, "block", "function(h) if h == 1 then while true do end end; "
                              "if h == 2 then local t = {} for i = 1, 1e9 do "
                              "t[i] = string.rep('x', 1000) .. i end end; return h end") == "");
  b->call("block", ints({1}));
  b->call("block", ints({2}));
  b->call("block", ints({3}));
  auto lines = b->take_lines();
  BOOST_REQUIRE_EQUAL(lines.size(), 2u);
  BOOST_TEST(lines[0].find("ran over its budget of instructions") != std::string::npos, lines[0]);
  BOOST_TEST(lines[1].find("not enough memory") != std::string::npos, lines[1]);
  auto r = b->take_replies();
  BOOST_REQUIRE_EQUAL(r.size(), 1u);
  BOOST_TEST(r[0] == "block\t3");
  BOOST_TEST(b->memory_in_use() <= (4ull << 20));
}

BOOST_AUTO_TEST_CASE(pcall_cannot_swallow_the_budget) {
  // Once the budget is spent every instruction raises: a handler that
  // catches the error and loops again is stopped all the same, having run
  // hardly more than its budget.
  auto b = make_box(4ull << 20, 200'000);
  BOOST_TEST(set(*b, "block", "function(h) local n = 0; "
                              "for i = 1, 1000 do n = n + 1; pcall(function() while true do end "
                              "end) end; return n end") == "");
  auto t0 = std::chrono::steady_clock::now();
  b->call("block", ints({1}));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - t0).count();
  auto lines = b->take_lines();
  BOOST_REQUIRE_EQUAL(lines.size(), 1u);
  BOOST_TEST(lines[0].find("ran over its budget of instructions") != std::string::npos, lines[0]);
  BOOST_TEST(b->take_replies().empty()); // n never came back
  BOOST_TEST(ms < 2000, ms << " ms for 200,000 instructions");
  // The state goes on, with a fresh budget for the next event.
  BOOST_TEST(set(*b, "peer", "function(x) return x + 1 end") == "");
  b->call("peer", ints({41}));
  auto r = b->take_replies();
  BOOST_REQUIRE_EQUAL(r.size(), 1u);
  BOOST_TEST(r[0] == "peer\t42");
}

BOOST_AUTO_TEST_CASE(a_c_function_cannot_hold_the_host) {
  // Lua's matcher backtracks inside one C call, out of the count hook's
  // sight: such patterns are refused before they run; a modest one works.
  auto b = make_box();
  BOOST_TEST(set(*b, "block", "function(h) if h == 1 then "
                              "return string.find(string.rep('a', 200), 'a*a*a*a*b') end; "
                              "if h == 2 then return ('k=v'):match('^(%w+)=(%w+)$') end; "
                              "if h == 3 then return #string.rep('', 1e15) end; "
                              "if h == 4 then return select('#', ('x'):rep(200):gsub('x', 'y')) "
                              "end end") == "");
  auto t0 = std::chrono::steady_clock::now();
  for (lua_Integer h : {1, 2, 3, 4})
    b->call("block", ints({h}));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST(ms < 1000, ms << " ms");
  auto lines = b->take_lines();
  BOOST_REQUIRE_EQUAL(lines.size(), 1u);
  BOOST_TEST(lines[0].find("refused: the pattern has 4 repetitions") != std::string::npos,
             lines[0]);
  auto r = b->take_replies();
  BOOST_REQUIRE_EQUAL(r.size(), 3u);
  BOOST_TEST(r[0] == "block\t\"k\"");
  BOOST_TEST(r[1] == "block\t0");
  BOOST_TEST(r[2] == "block\t2");
}

BOOST_AUTO_TEST_CASE(one_round_has_one_budget_however_many_events) {
  // A poll carrying 10,000 events runs its handlers under one budget: the
  // round stops when it is spent and says how the rest went.
  auto b = make_box(4ull << 20, 200'000);
  BOOST_TEST(set(*b, "progress", "function(p) local x = 0; for i = 1, 20000 do x = x + i end; "
                                 "return p end") == "");
  auto t0 = std::chrono::steady_clock::now();
  b->begin_round();
  for (lua_Integer i = 0; i < 10000; ++i)
    b->call("progress", ints({i}));
  b->end_round();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST(ms < 2000, ms << " ms");
  auto replies = b->take_replies();
  BOOST_TEST(replies.size() < 10u, replies.size() << " events ran in one round");
  auto lines = b->take_lines();
  BOOST_REQUIRE_EQUAL(lines.size(), 2u);
  BOOST_TEST(lines[0].find("ran over its budget of instructions") != std::string::npos, lines[0]);
  BOOST_TEST(lines[1].find("further events are skipped") != std::string::npos, lines[1]);
  // A new round starts with a full budget.
  b->begin_round();
  b->call("progress", ints({7}));
  b->end_round();
  auto again = b->take_replies();
  BOOST_REQUIRE_EQUAL(again.size(), 1u);
  BOOST_TEST(again[0] == "progress\t7");
}

BOOST_AUTO_TEST_CASE(the_wall_clock_stops_a_slow_handler) {
  // Plenty of instructions, little time: the deadline stops it.
  sandbox::options o;
  o.instructions_max = 4'000'000'000;
  o.wall_ms_max = 100;
  auto b = sandbox::make(o);
  BOOST_REQUIRE(b);
  BOOST_TEST(set(**b, "block", "function() while true do end end") == "");
  auto t0 = std::chrono::steady_clock::now();
  (*b)->call("block", ints({}));
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
              std::chrono::steady_clock::now() - t0).count();
  BOOST_TEST(ms < 1000, ms << " ms");
  auto lines = (*b)->take_lines();
  BOOST_REQUIRE_EQUAL(lines.size(), 1u);
  BOOST_TEST(lines[0].find("ran past its time") != std::string::npos, lines[0]);
}

BOOST_AUTO_TEST_CASE(output_is_bounded_and_what_was_dropped_is_counted) {
  auto b = make_box(4ull << 20, 5'000'000, 100);
  BOOST_TEST(set(*b, "peer", "function() for i = 1, 5000 do print(i) end end") == "");
  b->call("peer", ints({}));
  BOOST_TEST(b->take_lines().size() == 100u);
  BOOST_TEST(b->take_dropped() == 4900u);
  BOOST_TEST(b->take_dropped() == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
