#include "runtime/conn_watchdog.hpp"
#include "runtime/openssl_fix.hpp"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <linux/tcp.h> // struct tcp_info with tcpi_bytes_received
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "runtime/log.hpp"

namespace aicon {

conn_watchdog::conn_watchdog(uint16_t listen_port, const limits& lim, bool require_tls)
  : port_(listen_port), lim_(lim), require_tls_(require_tls) {
  thread_ = std::thread{[this] { run(); }};
}

conn_watchdog::~conn_watchdog() {
  {
    std::lock_guard<std::mutex> guard{mtx_};
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void conn_watchdog::run() {
  std::unique_lock<std::mutex> lock{mtx_};
  while (!stop_) {
    cv_.wait_for(lock, std::chrono::milliseconds(lim_.watchdog_period_ms));
    if (stop_)
      break;
    lock.unlock();
    scan();
    lock.lock();
  }
}

namespace {

struct accepted_socket {
  int fd = -1;
  std::string peer_ip;
  uint16_t peer_port = 0;
  uint32_t idle_ms = 0;
  uint64_t bytes_received = 0;
  ino_t inode = 0;
  bool tls_done = false; ///< completed its TLS handshake (openssl_fix.hpp)
  std::chrono::steady_clock::time_point first_seen{};
};

bool local_port_of(int fd, uint16_t& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return false;
  if (addr.ss_family == AF_INET)
    port = ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  else if (addr.ss_family == AF_INET6)
    port = ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
  else
    return false;
  return true;
}

bool peer_of(int fd, std::string& ip, uint16_t& port) {
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    return false; // the listening socket has no peer
  char buf[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET) {
    auto in = reinterpret_cast<sockaddr_in*>(&addr);
    inet_ntop(AF_INET, &in->sin_addr, buf, sizeof(buf));
    port = ntohs(in->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    auto in6 = reinterpret_cast<sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof(buf));
    port = ntohs(in6->sin6_port);
  } else {
    return false;
  }
  ip = buf;
  return true;
}

} // namespace

size_t conn_watchdog::scan() {
  std::lock_guard<std::mutex> scanning{scan_mtx_};
  std::vector<accepted_socket> found;
  DIR* dir = opendir("/proc/self/fd");
  if (!dir)
    return 0;
  while (auto* ent = readdir(dir)) {
    char* end = nullptr;
    long fd = std::strtol(ent->d_name, &end, 10);
    if (*end != '\0' || fd < 0 || fd == dirfd(dir))
      continue;
    struct stat st;
    if (fstat(static_cast<int>(fd), &st) != 0 || !S_ISSOCK(st.st_mode))
      continue;
    uint16_t local_port = 0;
    if (!local_port_of(static_cast<int>(fd), local_port) || local_port != port_)
      continue;
    // Work on a duplicate: if CAF closes `fd` and the number is reused for
    // another socket meanwhile, our shutdown() still hits the socket we
    // examined (a dup shares the open file description).
    int dup_fd = ::fcntl(static_cast<int>(fd), F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0)
      continue;
    accepted_socket s;
    s.fd = dup_fd;
    s.inode = st.st_ino; // the socket's identity across scans (fd numbers are reused)
    uint16_t again = 0;
    tcp_info info{};
    socklen_t len = sizeof(info);
    if (!local_port_of(dup_fd, again) || again != port_ || !peer_of(dup_fd, s.peer_ip, s.peer_port)
        || getsockopt(dup_fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) {
      ::close(dup_fd);
      continue;
    }
    s.idle_ms = info.tcpi_last_data_recv;
    s.bytes_received = info.tcpi_bytes_received;
    s.tls_done = require_tls_ && tls_handshake_done(static_cast<int>(fd));
    found.push_back(s);
  }
  closedir(dir);
  // Remember when each socket (by inode) was first seen, to keep the oldest.
  auto now = std::chrono::steady_clock::now();
  std::map<ino_t, std::chrono::steady_clock::time_point> seen;
  for (auto& s : found) {
    auto i = first_seen_.find(s.inode);
    s.first_seen = i == first_seen_.end() ? now : i->second;
    seen.emplace(s.inode, s.first_seen);
  }
  first_seen_ = std::move(seen);
  struct close_dups {
    std::vector<accepted_socket>& v;
    ~close_dups() {
      for (auto& s : v)
        ::close(s.fd);
    }
  } guard{found};
  size_t cut = 0;
  std::map<std::string, std::vector<accepted_socket*>> by_ip;
  for (auto& s : found) {
    auto age_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - s.first_seen).count();
    // A client that trickles bytes is never idle; one that has not sent even
    // a handshake's worth of bytes by the deadline is cut all the same.
    if (s.bytes_received < lim_.handshake_bytes_min
        && static_cast<uint64_t>(age_ms) > lim_.handshake_deadline_ms) {
      log_warning("cutting connection from {}:{}: {} bytes in {} ms, no complete handshake "
                  "(handshake_deadline_ms={})",
                  s.peer_ip, s.peer_port, s.bytes_received, age_ms, lim_.handshake_deadline_ms);
      ::shutdown(s.fd, SHUT_RDWR);
      ++cut;
      continue;
    }
    // Bytes alone prove nothing: a stranger can park inside one TLS record.
    if (require_tls_ && !s.tls_done
        && static_cast<uint64_t>(age_ms) > lim_.handshake_deadline_ms) {
      log_warning("cutting connection from {}:{}: {} bytes in {} ms and no completed TLS "
                  "handshake (handshake_deadline_ms={})",
                  s.peer_ip, s.peer_port, s.bytes_received, age_ms, lim_.handshake_deadline_ms);
      ::shutdown(s.fd, SHUT_RDWR);
      ++cut;
      continue;
    }
    if (s.idle_ms > lim_.idle_connection_ms) {
      log_warning("cutting connection from {}:{}: no data for {} ms (idle_connection_ms={})",
                  s.peer_ip, s.peer_port, s.idle_ms, lim_.idle_connection_ms);
      ::shutdown(s.fd, SHUT_RDWR);
      ++cut;
      continue;
    }
    by_ip[s.peer_ip].push_back(&s);
  }
  for (auto& [ip, socks] : by_ip) {
    if (socks.size() <= lim_.connections_per_address_max)
      continue;
    // Keep the longest-standing links; cut the newest.
    std::sort(socks.begin(), socks.end(),
              [](auto* a, auto* b) { return a->first_seen < b->first_seen; });
    for (size_t k = lim_.connections_per_address_max; k < socks.size(); ++k) {
      log_warning("cutting connection from {}:{}: over connections_per_address_max={}", ip,
                  socks[k]->peer_port, lim_.connections_per_address_max);
      ::shutdown(socks[k]->fd, SHUT_RDWR);
      ++cut;
    }
  }
  cut_ += cut;
  return cut;
}

} // namespace aicon
