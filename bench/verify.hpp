// bench/verify: the rater's cost as a fraction of the training compute it
// checks, at the default sample size (k = 44 steps per trainer: 10% faked
// steps caught with p >= 0.99). In process, on digits: 4 trainers' local
// gradients for every step (the training compute), then the rater's
// re-execution of k steps per trainer (schedule, rows, gradient, digest).
// Aim: <= 5%.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace aicon::bench {

struct verify_options {
  std::string data;       ///< default: the source tree's digits
  std::string model = "mlp:64-64-10";
  std::string steps = "400,1000,2000";
  uint32_t trainers = 4;
  uint32_t batch = 64;
  bool quick = false;
};

void add_verify_flags(CLI::App& app, verify_options& opts);
int run_verify(const verify_options& opts);

} // namespace aicon::bench
