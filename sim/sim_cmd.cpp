#include "sim/sim_cmd.hpp"

#include <chrono>

#include <fmt/format.h>

namespace aicon::sim {

namespace {

/// The command line that runs exactly this seed again.
std::string replay_command(const sim_options& s, const std::string& mutation) {
  auto cmd = fmt::format("aicon sim --seed {} --nodes {} --byzantine {} --loss {} --duplicate {} "
                         "--delay-max-ms {} --skew-ms {} --fault-ms {} --settle-ms {} --interval-ms {}",
                         s.seed, s.nodes, s.byzantine, s.loss, s.duplicate, s.delay_ms_max,
                         s.skew_ms_max, s.fault_ms, s.settle_ms, s.interval_ms);
  if (!s.partitions)
    cmd += " --no-partitions";
  if (!s.crashes)
    cmd += " --no-crashes";
  if (s.split_ms)
    cmd += fmt::format(" --split-ms {} --heal-ms {}", s.split_ms, s.heal_ms);
  if (s.real_ledger)
    cmd += " --ledger";
  if (!mutation.empty())
    cmd += " --mutation " + mutation;
  return cmd;
}

} // namespace

void add_sim_flags(CLI::App& app, sim_cmd_options& o) {
  auto& s = o.sim;
  app.add_option("--seed", s.seed, "the (first) seed; a failing run prints its seed, and --seed replays it")->capture_default_str();
  app.add_option("--seeds", o.seeds, "how many seeds to run, from --seed on")->capture_default_str();
  app.add_option("--nodes", s.nodes, "validators (the committee)")->capture_default_str();
  app.add_option("--byzantine", s.byzantine, "validators that double vote, equivocate and propose invalid blocks")->capture_default_str();
  app.add_option("--loss", s.loss, "message loss probability while faults run")->capture_default_str();
  app.add_option("--duplicate", s.duplicate, "message duplication probability while faults run")->capture_default_str();
  app.add_option("--delay-max-ms", s.delay_ms_max, "network delay upper bound (uniform from 1 ms)")->capture_default_str();
  app.add_option("--skew-ms", s.skew_ms_max, "clock offset bound per node")->capture_default_str();
  app.add_option("--fault-ms", s.fault_ms, "faults (loss, partitions, crashes, slow links) run this long")->capture_default_str();
  app.add_option("--settle-ms", s.settle_ms, "then a good network this long, in which blocks must resume")->capture_default_str();
  app.add_option("--interval-ms", s.interval_ms, "idle-block target interval")->capture_default_str();
  app.add_flag("!--no-partitions", s.partitions, "no random partitions");
  app.add_flag("!--no-crashes", s.crashes, "no crashes and restarts");
  app.add_option("--split-ms", s.split_ms, "one fixed partition (two halves) at this time");
  app.add_option("--heal-ms", s.heal_ms, "healed at this time");
  app.add_flag("--ledger", s.real_ledger, "each node keeps a real ledger::chain (LMDB, ed25519, every chain rule); ~100x slower");
  app.add_option("--mutation", o.mutation, "plant a bug the checker must find: ignore-lock");
  app.add_flag("--stop", o.stop_at_first, "stop at the first violation");
  app.add_flag("--trace", s.trace, "print every proposal, vote, decision and fault (use with one seed)");
}

int run_sim_cmd(sim_cmd_options o) {
  if (!o.mutation.empty() && o.mutation != "ignore-lock") {
    fmt::print(stderr, "aicon sim: --mutation must be ignore-lock, not '{}'\n", o.mutation);
    return 2;
  }
  if (o.sim.nodes == 0 || o.seeds == 0) {
    fmt::print(stderr, "aicon sim: --nodes and --seeds must be at least 1\n");
    return 2;
  }
  if (o.sim.byzantine > o.sim.nodes) {
    fmt::print(stderr, "aicon sim: --byzantine {} is more than the {} nodes\n", o.sim.byzantine,
               o.sim.nodes);
    return 2;
  }
  for (auto [name, p] : {std::pair{"--loss", o.sim.loss}, std::pair{"--duplicate", o.sim.duplicate}})
    if (!(p >= 0 && p <= 1)) {
      fmt::print(stderr, "aicon sim: {} must be a probability in [0, 1] (got {})\n", name, p);
      return 2;
    }
  if (o.sim.delay_ms_max == 0 || (o.sim.split_ms > 0 && o.sim.heal_ms <= o.sim.split_ms)) {
    fmt::print(stderr, "aicon sim: --delay-max-ms must be > 0 and --heal-ms after --split-ms\n");
    return 2;
  }
  o.sim.mutation_ignore_lock = o.mutation == "ignore-lock";
  auto start = std::chrono::steady_clock::now();
  auto last_line = start;
  uint64_t failed = 0, events = 0, heights = 0, evidence = 0, ran = 0;
  std::vector<uint64_t> bad;
  for (uint64_t i = 0; i < o.seeds; ++i) {
    auto opts = o.sim;
    opts.seed = o.sim.seed + i;
    auto r = run(opts);
    ++ran;
    events += r.events;
    heights += r.heights;
    evidence += r.evidence;
    if (!r.ok) {
      ++failed;
      bad.push_back(opts.seed);
      fmt::print("VIOLATION {}\n  replay: {} --trace\n", r.violation, replay_command(opts, o.mutation));
      if (o.stop_at_first)
        break;
    } else if (o.seeds == 1) {
      fmt::print("seed {}: ok, {} events, {} heights final, {} transfers, {} double votes punished, "
                 "highest round {}\n",
                 opts.seed, r.events, r.heights, r.txs_final, r.evidence, r.max_round);
    }
    auto now = std::chrono::steady_clock::now();
    if (o.seeds > 1 && (now - last_line > std::chrono::seconds(2) || i + 1 == o.seeds)) {
      last_line = now;
      double secs = std::chrono::duration<double>(now - start).count();
      double rate = (i + 1) / secs;
      fmt::print("  {}/{} seeds, {:.0f} seeds/s, {} violations, ETA {:.0f} s\n", i + 1, o.seeds, rate,
                 failed, (o.seeds - i - 1) / rate);
    }
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("aicon sim: {} seed(s) from {}, {} nodes ({} byzantine), {} violation(s); {} events "
             "({:.0f}/s), {} heights final, {} double votes punished, {:.1f} s\n",
             ran, o.sim.seed, o.sim.nodes, o.sim.byzantine, failed, events, events / secs, heights,
             evidence, secs);
  return failed == 0 ? 0 : 1;
}

} // namespace aicon::sim
