#include "bench/train.hpp"

#include "actors/data_node/ingest.hpp"
#include "actors/trainer/model.hpp"
#include "actors/trainer/torch_model.hpp"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
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
  app.add_option("--batches", opts.batches, "global batches, comma-separated (default 64,256)");
  app.add_option("--transport", opts.transports,
                 "ring transports, comma-separated: stream (AES-GCM, the default), stream-plain "
                 "(in clear, like MPI and Horovod), actor");
  app.add_flag("--quick", opts.quick, "tiny run (ctest): 20 steps, the small model, batch 64");
  app.add_option("--csv", opts.csv, "also write the table to this CSV file");
}

int run_train(const train_options& opts_in) {
  auto opts = opts_in;
  if (opts.quick) {
    opts.steps = 20;
    opts.models = "mlp:64-64-10";
    opts.batches = "64";
  }
  if (opts.data.empty())
    opts.data = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string();
  auto fail = [](const caf::error& err) {
    std::fprintf(stderr, "bench train: %s\n", describe(err).c_str());
    return 2;
  };
  if (opts.steps < 10)
    return fail(make_error(errc::invalid_argument, "--steps: at least 10"));
  std::vector<train::transport> vias;
  {
    std::stringstream ts{opts.transports};
    for (std::string t; std::getline(ts, t, ',');) {
      auto v = train::parse_transport(t);
      if (!v || *v == train::transport::NCCL)
        return fail(make_error(errc::invalid_argument,
                               fmt::format("--transport {}: expected stream, stream-plain or actor",
                                           t)));
      vias.push_back(*v);
    }
  }
  auto tmp = temp_dir::create("aicon-bench-train");
  if (!tmp)
    return fail(tmp.error());
  // A torch model's file must be readable by the trainers: its directory
  // joins their data_files.
  std::vector<std::filesystem::path> model_dirs;
  {
    std::stringstream ms{opts.models};
    for (std::string m; std::getline(ms, m, ',');)
      if (auto spec = train::parse_spec(m); spec && spec->kind == "torch")
        model_dirs.push_back(std::filesystem::absolute(spec->file).parent_path());
  }
  trainer_mesh mesh;
  if (auto err = start_trainer_mesh(mesh, tmp->path(), 2, model_dirs))
    return fail(err);
  // The trainers run the whole job on their own (one TrainStep per rank);
  // the rate is rank 0's wall time per step (end of a step to the end of
  // the next), the first tenth of the steps (warm-up) left out. "req/step"
  // counts the coordinator's requests that steps wait for beyond the one
  // that starts the run; "polls/s" its progress polls, which run beside
  // the steps.
  const uint64_t warm = opts.steps / 10;
  std::printf("# aicon bench train: %s, %llu steps per run (the first %llu not timed), ring "
              "over `aicon host` processes on 127.0.0.1 (stream = AES-GCM frames, plain = in "
              "clear), %u cores\n",
              std::filesystem::path{opts.data}.filename().c_str(),
              static_cast<unsigned long long>(opts.steps), static_cast<unsigned long long>(warm),
              std::thread::hardware_concurrency());
  std::printf("%-20s %-6s %8s %6s %6s %12s %12s %9s %8s %11s\n", "model", "via", "trainers",
              "hosts", "batch", "samples/s", "allreduce ms", "req/step", "polls/s", "efficiency");
  std::ofstream csv;
  if (!opts.csv.empty()) {
    csv.open(opts.csv);
    csv << "model,transport,trainers,hosts,batch,samples_per_s,allreduce_ms,requests_per_step,"
           "polls_per_s,efficiency\n";
  }
  auto digits = data::read_any(opts.data, std::nullopt, data::csv_options{}, std::nullopt);
  if (!digits)
    return fail(digits.error());
  // A job's samples/s (rank 0's wall time per step) and mean allreduce time
  // over its steps after the warm-up; `what` names the row in an error.
  struct timed_run {
    double rate = 0, allreduce_ms = 0;
    train::job_result result;
  };
  auto timed_job = [&](const train::job_options& o,
                       const std::string& what) -> caf::expected<timed_run> {
    double allreduce = 0, secs = 0;
    uint64_t timed = 0;
    auto r = train::run_job(*mesh.c, o, [&](const train::step_report& s) {
      if (s.step < warm || s.samples_per_s <= 0)
        return;
      ++timed;
      allreduce += s.allreduce_ms;
      secs += o.global_batch / s.samples_per_s;
    });
    if (!r)
      return r.error();
    if (timed == 0 || secs <= 0)
      return make_error(errc::internal, "no timed step came back" + what);
    return timed_run{static_cast<double>(timed) * o.global_batch / secs,
                     allreduce / static_cast<double>(timed), std::move(*r)};
  };
  std::stringstream models{opts.models};
  for (std::string model; std::getline(models, model, ',');) {
    auto spec = train::parse_spec(model);
    auto label = spec && spec->kind == "torch"
                   ? "torch:" + std::filesystem::path{spec->file}.filename().string()
                   : model;
    for (auto via : vias) {
      std::string via_name = via == train::transport::STREAM_PLAIN ? "plain"
                                                                   : train::transport_name(via);
      std::stringstream batches{opts.batches};
      for (std::string batch_text; std::getline(batches, batch_text, ',');) {
        auto batch = static_cast<uint32_t>(std::stoul(batch_text));
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
          o.global_batch = batch;
          o.data_file = opts.data;
          o.checkpoint_every = static_cast<uint32_t>(opts.steps); // only at the end
          o.transport = via;
          auto run = timed_job(o, "");
          if (!run)
            return fail(run.error());
          double rate = run->rate;
          auto* r = &run->result;
          uint32_t n = hosts * per_host;
          if (n == 1)
            base = rate;
          double eff = base > 0 ? rate / (n * base) : 0;
          double ar = run->allreduce_ms;
          double req = static_cast<double>(r->step_requests - n) / static_cast<double>(opts.steps);
          double polls = r->seconds > 0 ? static_cast<double>(r->polls) / r->seconds : 0;
          std::printf("%-20s %-6s %8u %6u %6u %12.0f %12.2f %9.3f %8.1f %11.2f\n", label.c_str(),
                      via_name.c_str(), n, hosts, batch, rate, ar, req, polls, eff);
          if (n == 1 && spec && spec->kind == "torch") {
            // The baseline: a bare libtorch loop on the same module and data,
            // in this process, one thread like the trainers.
            auto bare = train::torch_module::bare_samples_per_s(
              spec->file, digits->x.data(), digits->y.data(), digits->rows, batch,
              opts.steps - warm, 0.02f);
            if (!bare)
              return fail(bare.error());
            std::printf("%-20s %-6s %8s %6s %6u %12.0f %12s %9s %8s %11s   aicon / bare = %.2f\n",
                        "  bare libtorch loop", "-", "1", "-", batch, *bare, "-", "-", "-", "-",
                        rate / *bare);
          }
          if (csv)
            csv << fmt::format("{},{},{},{},{},{:.0f},{:.3f},{:.4f},{:.2f},{:.3f}\n", model,
                               via_name, n, hosts, batch, rate, ar, req, polls, eff);
          if (n == 2 && per_host == 1) {
            // What verification costs the ring: the same job keeping every
            // step's weights on disk for a rater and, on a stream, signing
            // and checking what each rank sends its partner.
            train::job_options v = o;
            v.keep_evidence = true;
            auto verified = timed_job(v, " (verified)");
            if (!verified)
              return fail(verified.error());
            double v_rate = verified->rate;
            double v_eff = base > 0 ? v_rate / (2 * base) : 0;
            std::printf("%-20s %-6s %8s %6s %6u %12.0f %12s %9s %8s %11.2f   verified / ring = %.2f\n",
                        "  2 x 1, verified", via_name.c_str(), "2", "2", batch, v_rate, "-", "-",
                        "-", v_eff, v_rate / rate);
            if (csv)
              csv << fmt::format("{},{}-verified,2,2,{},{:.0f},,,,{:.3f}\n", model, via_name, batch,
                                 v_rate, v_eff);
          }
          if (n == 2 && per_host == 1 && batch % 2 == 0) {
            // What this machine allows two trainers at all: the same two
            // hosts each training a ring of one on half the batch, at the
            // same time, no allreduce between them. Its efficiency is the
            // bound the ring's is measured against (the two processes
            // share the cores, caches and memory bandwidth).
            auto alone = [&](size_t h) {
              train::job_options a = o;
              a.hosts = {mesh.ids[h]};
              a.trainers_per_host = 1;
              a.global_batch = batch / 2;
              auto res = timed_job(a, " (no-ring bound)");
              if (!res)
                return caf::expected<double>{res.error()};
              return caf::expected<double>{res->rate};
            };
            auto second = std::async(std::launch::async, alone, size_t{1});
            auto first = alone(0);
            auto other = second.get();
            if (!first)
              return fail(first.error());
            if (!other)
              return fail(other.error());
            double bound = *first + *other;
            double bound_eff = base > 0 ? bound / (2 * base) : 0;
            std::printf("%-20s %-6s %8s %6s %6u %12.0f %12s %9s %8s %11.2f   ring / no ring = %.2f\n",
                        "  2 x 1, no ring", "-", "2", "2", batch, bound, "-", "-", "-", bound_eff,
                        rate / bound);
            if (csv)
              csv << fmt::format("{},no-ring,2,2,{},{:.0f},,,,{:.3f}\n", model, batch, bound,
                                 bound_eff);
          }
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}

} // namespace aicon::bench
