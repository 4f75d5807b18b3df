// The README's quick start, exactly as written: examples/two-hosts.sh, two
// `aicon host` processes, `aicon ping`.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

#include "fixtures.hpp"

using namespace aicon;
using namespace aicon::test;

namespace {

/// A port the OS has just handed out (then released) for the script's
/// fixed-port configs.
uint16_t free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

} // namespace

BOOST_AUTO_TEST_SUITE(examples)

BOOST_AUTO_TEST_CASE(two_hosts_quick_start) {
  test::temp_dir root;
  auto port_a = free_port(), port_b = free_port();
  ::setenv("AICON", aicon_binary().c_str(), 1);
  ::setenv("AICON_PORT_A", std::to_string(port_a).c_str(), 1);
  ::setenv("AICON_PORT_B", std::to_string(port_b).c_str(), 1);
  auto setup = run_command({"/bin/bash", std::string{AICON_SOURCE_DIR} + "/examples/two-hosts.sh",
                            (root / "th").string()});
  BOOST_REQUIRE_MESSAGE(setup.exit_code == 0, setup.output);
  auto b = start_host(root / "th" / "b.toml", root / "b.log");
  auto a = start_host(root / "th" / "a.toml", root / "a.log");
  BOOST_TEST(a.port == port_a);
  BOOST_TEST(b.port == port_b);
  BOOST_REQUIRE_MESSAGE(a.proc->wait_for_log("peer up", 15s), a.proc->log_text());
  auto ping = run_command({aicon_binary(), "ping", fmt::format("127.0.0.1:{}", port_b),
                           "--data-dir", (root / "th" / "a").string(), "--count", "5"});
  BOOST_TEST(ping.exit_code == 0, ping.output);
  BOOST_TEST(ping.output.find("0 wrong") != std::string::npos, ping.output);
  // Running the script again keeps the keys (idempotent).
  auto again = run_command({"/bin/bash", std::string{AICON_SOURCE_DIR} + "/examples/two-hosts.sh",
                            (root / "th").string()});
  BOOST_TEST(again.exit_code == 0, again.output);
  BOOST_TEST(again.output.find(setup.output.substr(7, 64)) != std::string::npos, again.output);
}

BOOST_AUTO_TEST_SUITE_END()
