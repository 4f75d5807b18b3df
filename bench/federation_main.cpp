#include "bench/federation.hpp"

int main(int argc, char** argv) {
  CLI::App app{"aicon federation benchmark: chain catch-up and gossip convergence"};
  aicon::bench::federation_options opts;
  aicon::bench::add_federation_flags(app, opts);
  CLI11_PARSE(app, argc, argv);
  return aicon::bench::run_federation(opts);
}
