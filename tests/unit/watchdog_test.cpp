#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>
#include <vector>

#include <future>

#include <fmt/format.h>

#include "runtime/client.hpp"
#include "runtime/conn_watchdog.hpp"
#include "runtime/error.hpp"
#include "runtime/identity.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace std::chrono_literals;

namespace {

struct listener {
  int fd = -1;
  uint16_t port = 0;
  std::vector<int> accepted;
  listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
    BOOST_REQUIRE(::listen(fd, 16) == 0);
    socklen_t len = sizeof(addr);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~listener() {
    for (int a : accepted)
      ::close(a);
    ::close(fd);
  }
  int accept_one() {
    int a = ::accept(fd, nullptr, nullptr);
    accepted.push_back(a);
    return a;
  }
};

int connect_to(uint16_t port) {
  int fd = test::tcp_connect(port);
  BOOST_REQUIRE(fd >= 0);
  return fd;
}

/// Whether the peer closed `fd` within `timeout`.
bool closed_by_peer(int fd, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0)
    return false;
  char c;
  return ::read(fd, &c, 1) == 0;
}

} // namespace

BOOST_AUTO_TEST_SUITE(watchdog)

BOOST_AUTO_TEST_CASE(silent_connection_is_cut_and_talking_one_kept) {
  listener l;
  limits lim;
  lim.idle_connection_ms = 300;
  lim.watchdog_period_ms = 100;
  int silent = connect_to(l.port);
  int talking = connect_to(l.port);
  l.accept_one();
  int talking_srv = l.accept_one();
  conn_watchdog dog{l.port, lim};
  // Keep one connection talking while the other says nothing.
  for (int i = 0; i < 10; ++i) {
    BOOST_REQUIRE(::write(talking, "x", 1) == 1);
    char c;
    BOOST_REQUIRE(::read(talking_srv, &c, 1) == 1);
    std::this_thread::sleep_for(100ms);
  }
  BOOST_TEST(closed_by_peer(silent, 2000ms));
  BOOST_TEST(!closed_by_peer(talking, 50ms));
  BOOST_TEST(dog.cut() >= 1u);
  ::close(silent);
  ::close(talking);
}

BOOST_AUTO_TEST_CASE(a_trickling_client_is_cut_at_the_handshake_deadline) {
  listener l;
  limits lim;
  lim.idle_connection_ms = 60000;
  lim.handshake_bytes_min = 600;
  lim.handshake_deadline_ms = 800;
  lim.watchdog_period_ms = 100;
  int trickle = connect_to(l.port);
  int bulk = connect_to(l.port);
  l.accept_one();
  l.accept_one();
  std::string kib(2048, 'k');
  BOOST_REQUIRE(::write(bulk, kib.data(), kib.size()) == static_cast<ssize_t>(kib.size()));
  conn_watchdog dog{l.port, lim};
  bool cut = false;
  for (int i = 0; i < 30 && !cut; ++i) { // one byte every 100 ms: never idle
    if (::write(trickle, "t", 1) != 1)
      break;
    cut = closed_by_peer(trickle, 100ms);
  }
  BOOST_TEST(cut);
  BOOST_TEST(!closed_by_peer(bulk, 50ms));
  ::close(trickle);
  ::close(bulk);
}

BOOST_AUTO_TEST_CASE(a_fresh_connection_is_not_taken_for_an_old_one) {
  // Each socket's age is its own (kept by inode): a connection that starts
  // its handshake now is not cut because an older one has been open for
  // longer than the handshake deadline (it once shared the oldest's age).
  listener l;
  limits lim;
  lim.idle_connection_ms = 60000;
  lim.handshake_bytes_min = 600;
  lim.handshake_deadline_ms = 500;
  lim.watchdog_period_ms = 100000; // scan by hand
  int old_conn = connect_to(l.port);
  int old_srv = l.accept_one();
  std::string kib(2048, 'k');
  BOOST_REQUIRE(::write(old_conn, kib.data(), kib.size()) == static_cast<ssize_t>(kib.size()));
  std::vector<char> sink(kib.size());
  BOOST_REQUIRE(::recv(old_srv, sink.data(), sink.size(), MSG_WAITALL) == 2048);
  conn_watchdog dog{l.port, lim};
  BOOST_TEST(dog.scan() == 0u);
  std::this_thread::sleep_for(700ms); // the old one is now past the deadline
  int fresh = connect_to(l.port);
  l.accept_one();
  BOOST_REQUIRE(::write(fresh, "hello", 5) == 5); // a handshake just begun
  BOOST_TEST(dog.scan() == 0u);
  BOOST_TEST(!closed_by_peer(fresh, 50ms));
  std::this_thread::sleep_for(700ms); // now it is past the deadline itself
  BOOST_TEST(dog.scan() == 1u);
  BOOST_TEST(closed_by_peer(fresh, 500ms));
  BOOST_TEST(!closed_by_peer(old_conn, 50ms));
  ::close(fresh);
  ::close(old_conn);
}

BOOST_AUTO_TEST_CASE(without_a_completed_tls_handshake_bytes_alone_do_not_keep_a_connection) {
  // A host requires the TLS handshake to finish by the deadline: a client
  // that sends kilobytes but never completes one (parked inside a record)
  // is cut all the same.
  listener l;
  limits lim;
  lim.idle_connection_ms = 60000;
  lim.handshake_bytes_min = 600;
  lim.handshake_deadline_ms = 400;
  lim.watchdog_period_ms = 100000; // scan by hand
  int parked = connect_to(l.port);
  l.accept_one();
  std::string kib(2048, 'k');
  BOOST_REQUIRE(::write(parked, kib.data(), kib.size()) == static_cast<ssize_t>(kib.size()));
  conn_watchdog dog{l.port, lim, true};
  BOOST_TEST(dog.scan() == 0u); // still within the deadline
  std::this_thread::sleep_for(600ms);
  BOOST_TEST(dog.scan() == 1u);
  BOOST_TEST(closed_by_peer(parked, 500ms));
  ::close(parked);
}

BOOST_AUTO_TEST_CASE(connections_over_the_per_address_bound_are_cut) {
  listener l;
  limits lim;
  lim.idle_connection_ms = 60000;
  lim.connections_per_address_max = 2;
  lim.watchdog_period_ms = 100000; // scan by hand
  std::vector<int> clients;
  for (int i = 0; i < 4; ++i) {
    clients.push_back(connect_to(l.port));
    l.accept_one();
  }
  conn_watchdog dog{l.port, lim};
  BOOST_TEST(dog.scan() == 2u);
  int closed = 0;
  for (int c : clients)
    closed += closed_by_peer(c, 500ms) ? 1 : 0;
  BOOST_TEST(closed == 2);
  for (int c : clients)
    ::close(c);
}

BOOST_AUTO_TEST_CASE(a_dial_to_a_silent_listener_never_holds_a_shutdown) {
  // A port that completes TCP handshakes (its backlog) and never speaks TLS:
  // a stale peer address now someone else's. Dialing it must fail, and
  // stopping the dialer's actor system must not wait on it (CAF 0.17's
  // blocking handshake; bounded by tls_handshake_timeout_s).
  listener silent;
  test::temp_dir dir;
  BOOST_REQUIRE(create_identity(dir.path()));
  auto t0 = std::chrono::steady_clock::now();
  auto done = std::async(std::launch::async, [&] {
    client::options o;
    o.data_dir = dir.path();
    o.threads = 1;
    auto c = client::start(o);
    if (!c)
      return "start: " + describe(c.error());
    auto r = (*c)->connect(fmt::format("127.0.0.1:{}", silent.port));
    std::string out = r ? std::string{"connected"} : describe(r.error());
    c->reset(); // the actor system stops here
    return out;
  });
  BOOST_REQUIRE_MESSAGE(done.wait_for(60s) == std::future_status::ready,
                        "a dial to a silent listener held the client's shutdown for 60 s");
  auto what = done.get();
  BOOST_TEST_MESSAGE("dial to a silent listener: " << what << " after "
                     << std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - t0).count() << " ms");
  BOOST_TEST(what != "connected");
  BOOST_TEST(what.find("start:") == std::string::npos, what);
}

BOOST_AUTO_TEST_SUITE_END()
