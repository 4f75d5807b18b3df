// `aicon sim`: runs the deterministic simulator for one seed (replay, with
// --trace) or a range of seeds, printing a progress line, every violation
// with the command that replays it, and a summary.
#pragma once

#include <CLI/CLI.hpp>

#include "sim/simulator.hpp"

namespace aicon::sim {

struct sim_cmd_options {
  sim_options sim;
  uint64_t seeds = 1;           ///< how many seeds, from sim.seed on
  std::string mutation;         ///< "ignore-lock": plant the lock bug
  bool stop_at_first = false;   ///< stop at the first violation
};

void add_sim_flags(CLI::App& app, sim_cmd_options& o);
/// Exit code: 0 when every seed held every invariant, 1 otherwise, 2 for bad flags.
int run_sim_cmd(sim_cmd_options o);

} // namespace aicon::sim
