#include "site_proxy.hpp"

#include <deque>
#include <stdexcept>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace aicon::test {

namespace {

using clock_type = std::chrono::steady_clock;

struct chunk {
  clock_type::time_point due;
  std::vector<char> bytes;
  size_t sent = 0;
};

/// One proxied connection: the client side `a`, the target side `b`.
struct pipe_pair {
  int a = -1, b = -1;
  std::deque<chunk> to_b, to_a;
  bool dead = false;
};

void set_nonblocking(int fd) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/// Reads what `from` has into `q`, due after `delay`; false at end of stream.
bool pump_in(int from, std::deque<chunk>& q, std::chrono::milliseconds delay) {
  char buf[65536];
  for (;;) {
    auto n = ::read(from, buf, sizeof buf);
    if (n > 0) {
      q.push_back(chunk{clock_type::now() + delay, std::vector<char>(buf, buf + n), 0});
      continue;
    }
    if (n == 0)
      return false;
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
  }
}

/// Writes what is due in `q` to `to`; false when the socket failed.
bool pump_out(int to, std::deque<chunk>& q) {
  auto now = clock_type::now();
  while (!q.empty() && q.front().due <= now) {
    auto& c = q.front();
    auto n = ::send(to, c.bytes.data() + c.sent, c.bytes.size() - c.sent, MSG_NOSIGNAL);
    if (n < 0)
      return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    c.sent += static_cast<size_t>(n);
    if (c.sent < c.bytes.size())
      return true;
    q.pop_front();
  }
  return true;
}

} // namespace

site_proxy::site_proxy(uint16_t target_port, std::chrono::milliseconds one_way_delay)
  : target_(target_port), delay_(one_way_delay) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0
      || ::listen(listen_fd_, 64) != 0)
    throw std::runtime_error("site_proxy: cannot listen on 127.0.0.1");
  socklen_t len = sizeof addr;
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  set_nonblocking(listen_fd_);
  thread_ = std::thread([this] { run(); });
}

site_proxy::~site_proxy() {
  stop_.store(true);
  thread_.join();
  ::close(listen_fd_);
}

void site_proxy::run() {
  std::vector<pipe_pair> pairs;
  auto close_pair = [](pipe_pair& p) {
    if (p.a >= 0)
      ::close(p.a);
    if (p.b >= 0)
      ::close(p.b);
    p.a = p.b = -1;
    p.dead = true;
  };
  while (!stop_.load()) {
    if (cut_.load())
      for (auto& p : pairs)
        close_pair(p);
    std::erase_if(pairs, [](const pipe_pair& p) { return p.dead; });
    std::vector<pollfd> fds;
    fds.push_back({listen_fd_, POLLIN, 0});
    for (auto& p : pairs) {
      fds.push_back({p.a, static_cast<short>(POLLIN | (p.to_a.empty() ? 0 : POLLOUT)), 0});
      fds.push_back({p.b, static_cast<short>(POLLIN | (p.to_b.empty() ? 0 : POLLOUT)), 0});
    }
    // Wake for the next due chunk, or every 20 ms to notice cut/stop.
    int timeout = 20;
    auto now = clock_type::now();
    for (auto& p : pairs)
      for (auto* q : {&p.to_a, &p.to_b})
        if (!q->empty()) {
          auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(q->front().due - now)
                      .count();
          timeout = std::min<int>(timeout, static_cast<int>(std::max<int64_t>(ms, 0)));
        }
    ::poll(fds.data(), fds.size(), timeout);
    if (fds[0].revents & POLLIN) {
      for (;;) {
        int c = ::accept(listen_fd_, nullptr, nullptr);
        if (c < 0)
          break;
        if (cut_.load()) {
          ::close(c);
          continue;
        }
        int t = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addr.sin_port = htons(target_);
        if (::connect(t, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
          ::close(t);
          ::close(c);
          continue;
        }
        set_nonblocking(c);
        set_nonblocking(t);
        pairs.push_back(pipe_pair{c, t, {}, {}, false});
      }
    }
    for (size_t i = 0; i < pairs.size(); ++i) {
      auto& p = pairs[i];
      if (p.dead)
        continue;
      bool ok = pump_in(p.a, p.to_b, delay_) && pump_in(p.b, p.to_a, delay_)
                && pump_out(p.b, p.to_b) && pump_out(p.a, p.to_a);
      if (!ok)
        close_pair(p);
    }
  }
  for (auto& p : pairs)
    close_pair(p);
}

} // namespace aicon::test
