#include "bench/verify.hpp"

#include <chrono>
#include <cstdio>
#include <sstream>

#include <fmt/format.h>

#include "actors/data_node/ingest.hpp"
#include "actors/rater/verify.hpp"
#include "runtime/error.hpp"

namespace aicon::bench {

namespace {
using clock_type = std::chrono::steady_clock;
}

void add_verify_flags(CLI::App& app, verify_options& opts) {
  app.add_option("--data", opts.data, "labelled CSV/NPY/IDX (default: tests/data/digits.csv.gz)");
  app.add_option("--model", opts.model, "model spec (default mlp:64-64-10)");
  app.add_option("--steps", opts.steps, "job lengths, comma-separated (default 400,1000,2000)");
  app.add_option("--trainers", opts.trainers, "trainers (default 4)");
  app.add_option("--batch", opts.batch, "global batch (default 64)");
  app.add_flag("--quick", opts.quick, "tiny run (ctest)");
}

int run_verify(const verify_options& in) {
  auto opts = in;
  if (opts.quick)
    opts.steps = "60";
  if (opts.data.empty())
    opts.data = std::string{AICON_SOURCE_DIR} + "/tests/data/digits.csv.gz";
  data::csv_options csv;
  auto t = data::read_any(opts.data, std::nullopt, csv, std::nullopt);
  if (!t) {
    std::fprintf(stderr, "bench verify: %s\n", describe(t.error()).c_str());
    return 2;
  }
  data::fit_and_apply(*t, data::transform::kind::standardize);
  auto split = train::split_rows(*t, 20, 2026);
  auto spec = train::parse_spec(opts.model);
  if (!spec) {
    std::fprintf(stderr, "bench verify: %s\n", describe(spec.error()).c_str());
    return 2;
  }
  // A TorchScript file (torch:FILE): the rater loads it as a trainer does.
  if (auto err = train::load_torch(*spec)) {
    std::fprintf(stderr, "bench verify: %s\n", describe(err).c_str());
    return 2;
  }
  const uint32_t k = rater::sample_size(0.1, 0.99);
  std::printf("# aicon bench verify: %s on %s, %u trainers, global batch %u; rater samples k = %u "
              "steps per trainer (10%% faked caught with p >= %.4f)\n",
              opts.model.c_str(), std::filesystem::path{opts.data}.filename().c_str(),
              opts.trainers, opts.batch, k, rater::detection_probability(0.1, k));
  std::printf("# training = every trainer's local gradient + digest each step (the compute the "
              "rater checks); verify = the rater re-executing k steps per trainer\n");
  std::printf("%-7s %12s %12s %10s %8s\n", "steps", "train ms", "verify ms", "overhead",
              "failed");
  std::stringstream ss{opts.steps};
  int misses = 0;
  for (std::string part; std::getline(ss, part, ',');) {
    uint64_t steps = std::stoull(part);
    auto m = train::model::init(*spec, 7);
    train::sgd opt;
    opt.lr = 0.05f;
    opt.momentum = 0.9f;
    opt.trainable = m.trainable_count(); // a torch model's buffers follow their own rule
    std::vector<std::vector<float>> weights;
    std::vector<std::vector<train::digest>> log(opts.trainers);
    double train_ms = 0;
    for (uint64_t s = 0; s < steps; ++s) {
      auto [epoch, cursor] = train::schedule_of(s, split.train.rows, opts.batch);
      auto perm = train::epoch_permutation(static_cast<uint32_t>(split.train.rows), 7, epoch);
      weights.emplace_back(m.params().begin(), m.params().end());
      std::vector<float> sum(m.params().size(), 0.0f);
      auto t0 = clock_type::now();
      for (uint32_t r = 0; r < opts.trainers; ++r) {
        auto idx = train::batch_slice(perm, cursor, opts.batch, r, opts.trainers);
        auto [g, loss] = train::local_gradient(m, split.train, idx, opts.batch);
        log[r].push_back(train::step_digest(weights.back(), idx, g));
        for (size_t i = 0; i < g.size(); ++i)
          sum[i] += g[i];
      }
      train_ms += std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
      opt.step(m.params(), sum);
    }
    rater::hash256 seed{};
    seed[0] = static_cast<uint8_t>(steps);
    size_t failed = 0;
    auto t1 = clock_type::now();
    for (uint32_t r = 0; r < opts.trainers; ++r) {
      rater::step_context ctx{*spec, 7, opts.batch, r, opts.trainers};
      for (auto s : rater::choose_steps(seed, r, steps, k)) {
        auto [epoch, cursor] = train::schedule_of(s, split.train.rows, opts.batch);
        auto perm = train::epoch_permutation(static_cast<uint32_t>(split.train.rows), 7, epoch);
        rater::step_claim c{s, epoch, cursor, weights[s],
                            train::batch_slice(perm, cursor, opts.batch, r, opts.trainers),
                            log[r][s]};
        failed += rater::check_step(ctx, split, c).empty() ? 0 : 1;
      }
    }
    double verify_ms = std::chrono::duration<double, std::milli>(clock_type::now() - t1).count();
    double overhead = verify_ms / train_ms;
    bool miss = overhead > 0.05;
    misses += miss ? 1 : 0;
    std::printf("%-7llu %12.1f %12.1f %9.1f%% %8zu%s\n", static_cast<unsigned long long>(steps),
                train_ms, verify_ms, 100 * overhead, failed, miss ? "  > 5%" : "");
    if (failed > 0)
      return 1;
  }
  std::printf("# overhead ~ k / steps plus the epoch permutation the rater rebuilds per sample: "
              "the 5%% aim needs jobs of about %u+ steps at k = %u (%d row(s) above it)\n",
              k * 20 + k * 3, k, misses);
  return 0;
}

} // namespace aicon::bench
