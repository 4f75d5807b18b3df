// bench/allocator: allocation decisions per second and their p50/p99
// latency with 100,000 registered offers (in process), beside a naive linear
// scan over the same offers choosing the same trainers, measured in the
// same run. Target: >= 50,000 decisions/s and p99 < 1 ms.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace aicon::bench {

struct allocator_options {
  uint32_t offers = 100000;
  uint32_t sites = 32;
  uint32_t decisions = 20000;
  uint32_t k = 4;
  bool quick = false;
  std::string csv;
};

void add_allocator_flags(CLI::App& app, allocator_options& opts);
int run_allocator(const allocator_options& opts);

} // namespace aicon::bench
