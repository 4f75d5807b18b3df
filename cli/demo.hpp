// `aicon demo`: the whole loop on an embedded cluster, no config needed:
// ingest digits, escrow a budget, allocate 4 CPU trainers, train an MLP over
// the ring, verify the work, commit the PoV blocks, settle and register the
// trained model; a live progress line, a summary, the loss curve as CSV and
// SVG in the output dir. Exit 0 only when the held-out accuracy is >= 0.95
// and every step of the loop succeeded.
#pragma once

#include <string>

namespace aicon {

struct demo_options {
  std::string out = "aicon-demo-out"; ///< loss.csv, loss.svg
  std::string data;                   ///< default: the source tree's digits
  std::string model = "mlp:64-64-10";
  uint64_t steps = 400;
  uint32_t batch = 32;
};

/// Runs the demo; returns the exit code.
int run_demo(const demo_options& opts);

} // namespace aicon
