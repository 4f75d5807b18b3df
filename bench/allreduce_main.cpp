#include "bench/allreduce.hpp"

int main(int argc, char** argv) {
  CLI::App app{"aicon allreduce benchmark: actor ring across host processes vs MPI_Allreduce"};
  aicon::bench::allreduce_options opts;
  aicon::bench::add_allreduce_flags(app, opts);
  CLI11_PARSE(app, argc, argv);
  return aicon::bench::run_allreduce(opts);
}
