#include "bench/verify.hpp"

int main(int argc, char** argv) {
  CLI::App app{"aicon verification benchmark: the rater's cost vs the training it checks"};
  aicon::bench::verify_options opts;
  aicon::bench::add_verify_flags(app, opts);
  CLI11_PARSE(app, argc, argv);
  return aicon::bench::run_verify(opts);
}
