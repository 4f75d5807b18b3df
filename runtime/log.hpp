// One log line per event, to stderr, with a UTC timestamp. Thread-safe: each
// line is written with a single call.
#pragma once

#include <string_view>

#include <fmt/format.h>

namespace aicon {

enum class log_level { debug, info, warning, error };

/// Sets the lowest level printed (default: info).
void set_log_level(log_level level);

void log_line(log_level level, std::string_view text);

template <class... Ts>
void log_info(fmt::format_string<Ts...> f, Ts&&... xs) {
  log_line(log_level::info, fmt::format(f, std::forward<Ts>(xs)...));
}

template <class... Ts>
void log_warning(fmt::format_string<Ts...> f, Ts&&... xs) {
  log_line(log_level::warning, fmt::format(f, std::forward<Ts>(xs)...));
}

template <class... Ts>
void log_error(fmt::format_string<Ts...> f, Ts&&... xs) {
  log_line(log_level::error, fmt::format(f, std::forward<Ts>(xs)...));
}

template <class... Ts>
void log_debug(fmt::format_string<Ts...> f, Ts&&... xs) {
  log_line(log_level::debug, fmt::format(f, std::forward<Ts>(xs)...));
}

} // namespace aicon
