#include "bench/data.hpp"

int main(int argc, char** argv) {
  CLI::App app{"aicon data benchmark: shard fetch + verify + decrypt from another process"};
  aicon::bench::data_options opts;
  aicon::bench::add_data_flags(app, opts);
  CLI11_PARSE(app, argc, argv);
  return aicon::bench::run_data(opts);
}
