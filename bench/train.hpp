// bench/train: samples/s of data-parallel training on digits with 1, 2 and
// 4 trainers (1 host x 1, 2 hosts x 1, 2 hosts x 2; `aicon host` processes
// with the trainer role on 127.0.0.1), and the scaling efficiency
// (samples/s at n) / (n x samples/s at 1), for a small and a wider MLP.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace aicon::bench {

struct train_options {
  std::string data;                  ///< default: the source tree's tests/data/digits.csv.gz
  std::string models = "mlp:64-64-10,mlp:64-512-512-10";
  uint64_t steps = 200;
  std::string batches = "64,256"; ///< global batches, comma-separated
  std::string transports = "stream"; ///< ring transports, comma-separated (transport.hpp)
  bool quick = false;
  std::string csv;
};

void add_train_flags(CLI::App& app, train_options& opts);
int run_train(const train_options& opts);

} // namespace aicon::bench
