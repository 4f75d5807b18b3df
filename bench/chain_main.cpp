#include "bench/chain.hpp"

int main(int argc, char** argv) {
  CLI::App app{"aicon chain benchmark: durable signed transfers per second"};
  aicon::bench::chain_options opts;
  aicon::bench::add_chain_flags(app, opts);
  CLI11_PARSE(app, argc, argv);
  return aicon::bench::run_chain(opts);
}
