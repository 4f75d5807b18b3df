#include "runtime/log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <string>

namespace aicon {

namespace {
std::atomic<int> g_level{static_cast<int>(log_level::info)};
}

void set_log_level(log_level level) {
  g_level = static_cast<int>(level);
}

void log_line(log_level level, std::string_view text) {
  if (static_cast<int>(level) < g_level.load(std::memory_order_relaxed))
    return;
  using namespace std::chrono;
  auto now = system_clock::now();
  auto secs = system_clock::to_time_t(now);
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  static constexpr const char* names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  auto line = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {:5} {}\n",
                          tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                          tm.tm_min, tm.tm_sec, ms, names[static_cast<int>(level)], text);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

} // namespace aicon
