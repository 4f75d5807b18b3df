#include "runtime/ports.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mutex>
#include <random>
#include <set>

namespace aicon {

namespace {

/// Binds 127.0.0.1:`port` (0: any) and returns the port bound, or 0.
uint16_t try_bind(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return 0;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  socklen_t len = sizeof a;
  uint16_t got = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0
      && ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    got = ntohs(a.sin_port);
  ::close(fd);
  return got;
}

} // namespace

uint16_t pick_loopback_port() {
  static std::mutex mtx;
  static std::set<uint16_t> given;
  static std::mt19937 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lk{mtx};
  std::uniform_int_distribution<int> dist{20000, 32767};
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto port = static_cast<uint16_t>(dist(rng));
    if (given.count(port))
      continue;
    if (try_bind(port) == port) {
      given.insert(port);
      return port;
    }
  }
  auto port = try_bind(0);
  if (port)
    given.insert(port);
  return port;
}

} // namespace aicon
