#include "bench/train.hpp"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "actors/job/job.hpp"
#include "bench/host_process.hpp"
#include "runtime/error.hpp"
#include "runtime/temp_dir.hpp"

namespace aicon::bench {

void add_train_flags(CLI::App& app, train_options& opts) {
  app.add_option("--data", opts.data, "labelled CSV/NPY/IDX (default: tests/data/digits.csv.gz)");
  app.add_option("--models", opts.models, "model specs, comma-separated");
  app.add_option("--steps", opts.steps, "steps per run (default 200)");
  app.add_option("--batch", opts.batch, "global batch (default 64)");
  app.add_flag("--quick", opts.quick, "tiny run (ctest): 20 steps, the small model");
  app.add_option("--csv", opts.csv, "also write the table to this CSV file");
}

int run_train(const train_options& opts_in) {
  auto opts = opts_in;
  if (opts.quick) {
    opts.steps = 20;
    opts.models = "mlp:64-64-10";
  }
  if (opts.data.empty())
    opts.data = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string();
  auto fail = [](const caf::error& err) {
    std::fprintf(stderr, "bench train: %s\n", describe(err).c_str());
    return 2;
  };
  auto tmp = temp_dir::create("aicon-bench-train");
  if (!tmp)
    return fail(tmp.error());
  trainer_mesh mesh;
  if (auto err = start_trainer_mesh(mesh, tmp->path(), 2))
    return fail(err);
  std::printf("# aicon bench train: %s, global batch %u, %llu steps per run, ring (stream transport, AES-GCM) over "
              "`aicon host` processes on 127.0.0.1, %u cores\n",
              std::filesystem::path{opts.data}.filename().c_str(), opts.batch,
              static_cast<unsigned long long>(opts.steps), std::thread::hardware_concurrency());
  std::printf("%-20s %8s %6s %12s %12s %11s\n", "model", "trainers", "hosts", "samples/s",
              "allreduce ms", "efficiency");
  std::ofstream csv;
  if (!opts.csv.empty()) {
    csv.open(opts.csv);
    csv << "model,trainers,hosts,samples_per_s,allreduce_ms,efficiency\n";
  }
  std::stringstream models{opts.models};
  for (std::string model; std::getline(models, model, ',');) {
    double base = 0;
    struct shape {
      uint32_t hosts, per_host;
    };
    for (auto [hosts, per_host] : {shape{1, 1}, shape{2, 1}, shape{2, 2}}) {
      train::job_options o;
      o.hosts.assign(mesh.ids.begin(), mesh.ids.begin() + hosts);
      o.trainers_per_host = per_host;
      o.steps = opts.steps;
      o.model = model;
      o.global_batch = opts.batch;
      o.data_file = opts.data;
      o.checkpoint_every = static_cast<uint32_t>(opts.steps); // only at the end
      std::chrono::steady_clock::time_point first;
      double allreduce_ms = 0;
      uint64_t seen = 0;
      auto r = train::run_job(*mesh.c, o, [&](const train::step_report& s) {
        if (seen++ == 0)
          first = std::chrono::steady_clock::now(); // after the first step: no join, no warm-up
        else
          allreduce_ms += s.allreduce_ms;
      });
      auto end = std::chrono::steady_clock::now();
      if (!r)
        return fail(r.error());
      // The end includes evaluation and the final checkpoint: small against the steps.
      double secs = std::chrono::duration<double>(end - first).count();
      double rate = (opts.steps - 1) * static_cast<double>(opts.batch) / secs;
      uint32_t n = hosts * per_host;
      if (n == 1)
        base = rate;
      double eff = base > 0 ? rate / (n * base) : 0;
      double ar = seen > 1 ? allreduce_ms / (seen - 1) : 0;
      std::printf("%-20s %8u %6u %12.0f %12.2f %11.2f\n", model.c_str(), n, hosts, rate, ar, eff);
      std::fflush(stdout);
      if (csv)
        csv << fmt::format("{},{},{},{:.0f},{:.3f},{:.3f}\n", model, n, hosts, rate, ar, eff);
    }
  }
  return 0;
}

} // namespace aicon::bench
