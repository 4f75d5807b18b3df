#include "bench/sim.hpp"

#include <algorithm>
#include <chrono>
#include <queue>
#include <random>
#include <vector>

#include <fmt/format.h>

#include "sim/simulator.hpp"

namespace aicon::bench {

namespace {

using clock_type = std::chrono::steady_clock;

template <class T>
T pct(std::vector<T> v, double p) {
  if (v.empty())
    return T{};
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5))];
}

/// The floor under the simulator: the same number of events pushed and
/// popped through a priority queue of the same shape, no consensus, no
/// ledger.
double bare_loop_events_per_s(uint64_t events) {
  struct ev {
    uint64_t t, seq;
    uint32_t node;
    std::shared_ptr<int> payload;
  };
  auto later = [](const ev& a, const ev& b) { return std::tie(a.t, a.seq) > std::tie(b.t, b.seq); };
  std::priority_queue<ev, std::vector<ev>, decltype(later)> q{later};
  std::mt19937_64 rng{7};
  auto payload = std::make_shared<int>(1);
  auto start = clock_type::now();
  uint64_t seq = 0, now = 0, sum = 0;
  for (int i = 0; i < 64; ++i)
    q.push({rng() % 100, seq++, static_cast<uint32_t>(i % 4), payload});
  for (uint64_t done = 0; done < events; ++done) {
    auto e = q.top();
    q.pop();
    now = e.t;
    sum += e.node;
    q.push({now + 1 + rng() % 80, seq++, e.node, e.payload});
  }
  double secs = std::chrono::duration<double>(clock_type::now() - start).count();
  static volatile uint64_t sink; // keeps the loop's work from being optimized away
  sink = sum;
  return static_cast<double>(events) / std::max(secs, 1e-9);
}

} // namespace

void add_sim_flags(CLI::App& app, sim_bench_options& opts) {
  app.add_option("--seeds", opts.seeds, "seeds per scenario")->capture_default_str();
  app.add_option("--nodes", opts.nodes, "validators")->capture_default_str();
  app.add_flag("--quick", opts.quick, "a tiny run (ctest)");
}

int run_sim_bench(const sim_bench_options& opts) {
  struct scenario {
    const char* name;
    sim::sim_options o;
  };
  std::vector<scenario> scenarios;
  sim::sim_options calm;
  calm.nodes = opts.nodes;
  calm.byzantine = 0;
  calm.loss = calm.duplicate = 0;
  calm.partitions = calm.crashes = false;
  calm.fault_ms = 0;
  calm.settle_ms = 60000;
  scenarios.push_back({"no faults", calm});
  auto lossy = calm;
  lossy.loss = 0.10;
  lossy.fault_ms = 50000;
  lossy.settle_ms = 10000;
  scenarios.push_back({"10% message loss", lossy});
  auto split = calm;
  split.split_ms = 10000;
  split.heal_ms = 20000;
  split.fault_ms = 20000;
  split.settle_ms = 40000;
  scenarios.push_back({"partition 10-20 s, heals", split});
  sim::sim_options ci;
  ci.nodes = opts.nodes;
  scenarios.push_back({"CI mix (1 byzantine, all faults)", ci});
  auto real = ci;
  real.real_ledger = true;
  scenarios.push_back({"CI mix on the real ledger (LMDB)", real});
  int seeds = opts.quick ? 2 : std::max(opts.seeds, 1);
  fmt::print("# aicon bench sim: {} validators, {} seeds per scenario ({} on the real ledger), "
             "simulated 60 s each\n",
             opts.nodes, seeds, std::max(seeds / 10, 1));
  fmt::print("# finality = first proposal of a height to its first decision (simulated)\n");
  fmt::print("{:<34} {:>9} {:>11} {:>8} {:>16} {:>20} {:>7}\n", "scenario", "seeds/min", "events/s",
             "vs bare", "rounds p50/90/max", "ms p50/90/max", "#wrong");
  int wrong_total = 0;
  for (auto& s : scenarios) {
    int seeds_here = s.o.real_ledger ? std::max(seeds / 10, 1) : seeds;
    std::vector<uint32_t> rounds;
    std::vector<uint64_t> ms;
    uint64_t events = 0;
    int wrong = 0;
    auto start = clock_type::now();
    for (int i = 0; i < seeds_here; ++i) {
      auto o = s.o;
      o.seed = 1000 + static_cast<uint64_t>(i);
      auto r = sim::run(o);
      events += r.events;
      wrong += r.ok ? 0 : 1;
      if (!r.ok)
        fmt::print("  {}\n", r.violation);
      rounds.insert(rounds.end(), r.finality_rounds.begin(), r.finality_rounds.end());
      ms.insert(ms.end(), r.finality_ms.begin(), r.finality_ms.end());
    }
    double secs = std::chrono::duration<double>(clock_type::now() - start).count();
    double eps = static_cast<double>(events) / std::max(secs, 1e-9);
    double bare = bare_loop_events_per_s(events);
    fmt::print("{:<34} {:>9.0f} {:>11.0f} {:>8.3f} {:>16} {:>20} {:>7}\n", s.name, seeds_here * 60.0 / secs,
               eps, eps / bare,
               fmt::format("{}/{}/{}", pct(rounds, 0.5), pct(rounds, 0.9), pct(rounds, 1.0)),
               fmt::format("{}/{}/{}", pct(ms, 0.5), pct(ms, 0.9), pct(ms, 1.0)), wrong);
    wrong_total += wrong;
  }
  fmt::print("# vs bare: events/s against a bare priority-queue loop of the same event count in the\n"
             "# same run (the simulator's floor); #wrong: seeds that broke an invariant (must be 0)\n");
  return wrong_total == 0 ? 0 : 1;
}

} // namespace aicon::bench
