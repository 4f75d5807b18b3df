// Temporary directories and loopback sockets for the unit and integration
// tests.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <stdexcept>

#include "runtime/error.hpp"
#include "runtime/temp_dir.hpp"

namespace aicon::test {

/// A fresh directory for one test, removed afterwards.
class temp_dir {
public:
  temp_dir() : dir_(create()) {
  }
  const std::filesystem::path& path() const {
    return dir_.path();
  }
  std::filesystem::path operator/(const std::string& name) const {
    return dir_ / name;
  }

private:
  static aicon::temp_dir create() {
    auto dir = aicon::temp_dir::create("aicon-test");
    if (!dir)
      throw std::runtime_error(describe(dir.error()));
    return std::move(*dir);
  }
  aicon::temp_dir dir_;
};

/// A blocking TCP connection to 127.0.0.1:port, or -1.
inline int tcp_connect(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

} // namespace aicon::test
