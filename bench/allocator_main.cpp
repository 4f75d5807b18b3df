#include "bench/allocator.hpp"

int main(int argc, char** argv) {
  CLI::App app{"aicon allocator benchmark: decisions/s and latency vs a linear scan"};
  aicon::bench::allocator_options opts;
  aicon::bench::add_allocator_flags(app, opts);
  CLI11_PARSE(app, argc, argv);
  return aicon::bench::run_allocator(opts);
}
