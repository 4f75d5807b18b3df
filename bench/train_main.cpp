#include "bench/train.hpp"

int main(int argc, char** argv) {
  CLI::App app{"aicon training benchmark: samples/s and scaling on digits"};
  aicon::bench::train_options opts;
  aicon::bench::add_train_flags(app, opts);
  CLI11_PARSE(app, argc, argv);
  return aicon::bench::run_train(opts);
}
