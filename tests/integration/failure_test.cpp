#include <future>

#include <csignal>
#include <sys/stat.h>

#include "fixtures.hpp"

using namespace aicon;
using namespace aicon::test;

BOOST_AUTO_TEST_SUITE(failure)

BOOST_AUTO_TEST_CASE(a_killed_peer_is_noticed_and_pending_requests_fail) {
  host_pair hp;
  auto c = hp.client_of(hp.a);
  auto echo_a = c->lookup("echo@" + hp.a.id.hex());
  BOOST_REQUIRE(echo_a);
  // A request that B would answer only after 30 s, pending when B dies.
  auto pending = std::async(std::launch::async, [&] {
    return c->request(*echo_a, echo_request(7, "echo@" + hp.b.id.hex(), 30000), 60s);
  });
  std::this_thread::sleep_for(500ms);
  auto killed_at = std::chrono::steady_clock::now();
  BOOST_REQUIRE(hp.hb.proc->stop(SIGKILL, 5s) == 128 + SIGKILL);
  BOOST_TEST(hp.ha.proc->wait_for_log("peer down " + hp.b.id.short_hex(), 5s).has_value(),
             hp.ha.proc->log_text());
  BOOST_REQUIRE(pending.wait_for(10s) == std::future_status::ready);
  auto result = pending.get();
  auto took = std::chrono::steady_clock::now() - killed_at;
  BOOST_REQUIRE(!result);
  BOOST_TEST(code_of(result.error()) == errc::peer_down, describe(result.error()));
  BOOST_TEST(describe(result.error()).find(hp.b.id.short_hex()) != std::string::npos,
             describe(result.error()));
  BOOST_TEST((took < 5s));
  // New requests fail fast and say why.
  auto now = c->request(*echo_a, echo_request(8, "echo@" + hp.b.id.hex()), 10s);
  BOOST_REQUIRE(!now);
  BOOST_TEST(code_of(now.error()) == errc::peer_down, describe(now.error()));
}

BOOST_AUTO_TEST_CASE(a_restarted_peer_is_linked_again) {
  host_pair hp;
  auto port_b = hp.hb.port;
  BOOST_REQUIRE(hp.hb.proc->stop(SIGKILL, 5s) == 128 + SIGKILL);
  BOOST_REQUIRE(hp.ha.proc->wait_for_log("peer down", 5s));
  // Same key, same port.
  hp.hb = start_host(hp.config_b(port_b), hp.root / "b2.log");
  auto deadline = std::chrono::steady_clock::now() + 20s;
  auto count_up = [&] {
    auto text = hp.ha.proc->log_text();
    size_t n = 0;
    for (auto pos = text.find("peer up"); pos != std::string::npos; pos = text.find("peer up", pos + 1))
      ++n;
    return n;
  };
  while (count_up() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  BOOST_REQUIRE_MESSAGE(count_up() >= 2, hp.ha.proc->log_text());
  auto c = hp.client_of(hp.a);
  auto echo_a = c->lookup("echo@" + hp.a.id.hex());
  BOOST_REQUIRE(echo_a);
  auto reply = c->request(*echo_a, echo_request(1, "echo@" + hp.b.id.hex()), 10s);
  BOOST_TEST(static_cast<bool>(reply), why(reply));
}

BOOST_AUTO_TEST_SUITE_END()
