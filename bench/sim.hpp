// bench/sim: the simulator's speed (events/s beside a bare event loop of
// the same size, seeds per minute) and the finality latency it measures
// (rounds and simulated ms, p50/p90/max) under no faults, 10% message loss,
// a partition that heals, and the CI batch's mix with a Byzantine member.
#pragma once

#include <CLI/CLI.hpp>

namespace aicon::bench {

struct sim_bench_options {
  int seeds = 40;     ///< seeds per scenario
  uint32_t nodes = 4;
  bool quick = false; ///< tiny run for ctest
};

void add_sim_flags(CLI::App& app, sim_bench_options& opts);
int run_sim_bench(const sim_bench_options& opts);

} // namespace aicon::bench
