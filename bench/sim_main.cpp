#include "bench/sim.hpp"

int main(int argc, char** argv) {
  CLI::App app{"aicon sim benchmark: simulator speed and finality latency"};
  aicon::bench::sim_bench_options opts;
  aicon::bench::add_sim_flags(app, opts);
  CLI11_PARSE(app, argc, argv);
  return aicon::bench::run_sim_bench(opts);
}
