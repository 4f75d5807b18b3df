// `aicon demo`: a small network in one process, no config needed.
#pragma once

namespace aicon {

struct demo_options {
  int hosts = 3;      ///< hosts to start (2..8)
  int rounds = 200;   ///< echo round trips per pair
};

/// Runs the demo; returns the exit code.
int run_demo(const demo_options& opts);

} // namespace aicon
