// Cuts accepted connections that CAF 0.17 would otherwise keep forever: one
// that has received no byte for idle_connection_ms (a client that never
// starts or never finishes its TLS handshake; a healthy link receives a BASP
// heartbeat every heartbeat_interval_ms), and connections from one IP
// address beyond connections_per_address_max.
//
// It runs in its own thread, finds this process's sockets accepted on the
// listen port through /proc/self/fd, reads TCP_INFO and calls shutdown() on
// the ones to cut; CAF then sees end-of-stream and closes them itself, so no
// descriptor is closed behind CAF's back.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "runtime/limits.hpp"

namespace aicon {

class conn_watchdog {
public:
  /// require_tls: an accepted connection that has not completed its TLS
  /// handshake (openssl_fix.hpp) by handshake_deadline_ms is cut however
  /// many bytes it sent (a stranger parked inside one TLS record). Hosts
  /// set it; the plain-socket unit tests do not.
  conn_watchdog(uint16_t listen_port, const limits& lim, bool require_tls = false);
  ~conn_watchdog();

  conn_watchdog(const conn_watchdog&) = delete;
  conn_watchdog& operator=(const conn_watchdog&) = delete;

  /// Connections cut so far.
  uint64_t cut() const {
    return cut_.load();
  }

  /// One scan (also used by tests); returns the number of connections cut.
  size_t scan();

private:
  void run();

  uint16_t port_;
  limits lim_;
  bool require_tls_ = false;
  /// When each accepted socket (by inode) was first seen; guarded by
  /// scan_mtx_ (the watchdog thread and tests may both scan).
  std::mutex scan_mtx_;
  std::map<unsigned long, std::chrono::steady_clock::time_point> first_seen_;
  std::atomic<uint64_t> cut_{0};
  std::mutex mtx_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

} // namespace aicon
