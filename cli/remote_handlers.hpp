// The console's side of on(event, fn): handlers live in a script role on a
// host (actors/script); this keeps one session per host, polls them every
// 250 ms from a thread of its own (which also keeps the sessions alive while
// the prompt waits), hands them the progress of this console's jobs, and
// queues what the handlers printed or returned for the Lua thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <caf/error.hpp>

#include "runtime/identity.hpp"

namespace aicon {

class client;

class remote_handlers {
public:
  /// One thing a handler produced, in arrival order.
  struct item {
    node_id host;
    bool reply = false;
    std::string event; ///< for a reply
    std::string text;  ///< a printed line, or the reply's Lua literal
  };

  struct progress {
    std::string job;
    uint64_t step = 0;
    double loss = 0;
    double samples_per_s = 0;
    uint32_t trainers = 0;
  };

  explicit remote_handlers(client& c);
  ~remote_handlers(); ///< closes every session and stops the poller

  /// Installs `source` as the handler of `event` on `host` (moving it there
  /// if another host had it). Errors: the host's reason (syntax, not a
  /// function, too many sessions) or the link's.
  caf::error set(const node_id& host, const std::string& event, const std::string& source,
                 const std::string& chunk, uint32_t line);
  /// Removes the handler of `event` wherever it is.
  caf::error remove(const std::string& event);

  void post(progress p);
  std::vector<item> take();

  /// Polls every session once now (handing over the progress posted so
  /// far), so that take() then holds everything the handlers made of it.
  void flush();

private:
  caf::error send_handler(const node_id& host, const std::array<uint8_t, 16>& key,
                          const std::string& event, const std::string& source,
                          const std::string& chunk, uint32_t line);
  std::optional<node_id> holder(const std::string& event) const;
  void poll_loop();

  client& c_;
  mutable std::mutex mtx_;
  std::mutex poll_mtx_; ///< one poll round at a time (the thread's or flush())
  struct host_session {
    std::array<uint8_t, 16> key{};
    std::set<std::string> events;
  };
  std::map<node_id, host_session> hosts_;
  std::deque<progress> progress_;
  std::deque<item> items_;
  std::atomic<bool> stop_{false};
  std::thread poller_;
};

} // namespace aicon
