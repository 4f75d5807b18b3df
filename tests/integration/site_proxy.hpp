// A TCP forwarder on 127.0.0.1 standing for the WAN link between two sites:
// hosts of one site reach a host of the other through it. It can add a
// one-way delay (so measured round trips differ between and within sites)
// and be cut (every connection closed, new ones closed at once) and healed.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>

namespace aicon::test {

class site_proxy {
public:
  site_proxy(uint16_t target_port, std::chrono::milliseconds one_way_delay);
  ~site_proxy();
  site_proxy(const site_proxy&) = delete;
  site_proxy& operator=(const site_proxy&) = delete;

  uint16_t port() const {
    return port_;
  }
  void cut() {
    cut_.store(true);
  }
  void heal() {
    cut_.store(false);
  }

private:
  void run();

  uint16_t target_;
  std::chrono::milliseconds delay_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> cut_{false};
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

} // namespace aicon::test
