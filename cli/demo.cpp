#include "cli/demo.hpp"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include <fmt/format.h>
#include <sodium.h>

#include "actors/data_node/ingest.hpp"
#include "actors/job/economy.hpp"
#include "actors/job/job.hpp"
#include "actors/job/job_role.hpp"
#include "actors/ledger/hashing.hpp"
#include "actors/trainer/work.hpp"
#include "cli/embedded.hpp"
#include "cli/plot.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "schemas/chain.capnp.h"
#include "schemas/job.capnp.h"

#ifndef AICON_SOURCE_DIR
#define AICON_SOURCE_DIR "."
#endif

namespace aicon {

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

int fail(const std::string& what, const caf::error& err) {
  std::fprintf(stderr, "\naicon demo: %s: %s\n", what.c_str(), describe(err).c_str());
  return 1;
}

std::string short_id(const node_id& n) {
  return n.short_hex();
}

} // namespace

int run_demo(const demo_options& opts) {
  // The hosts' own warnings (peers dialing each other while they start,
  // links closing at the end) would drown the story: errors only.
  set_log_level(log_level::error);
  auto t_start = clock_type::now();
  auto data = opts.data.empty()
                ? (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string()
                : opts.data;
  std::error_code ec;
  std::filesystem::create_directories(opts.out, ec);
  if (ec)
    return fail("--out " + opts.out, make_error(errc::io_error, ec.message()));

  // 1. The data, ingested as the trainers will read it.
  data::csv_options csv;
  auto table = data::read_any(data, std::nullopt, csv, std::nullopt);
  if (!table)
    return fail("ingesting " + data, table.error());
  std::printf("aicon demo\n");
  std::printf("data      %s: %zu rows, %zu features, %u classes (standardized, 20%% held out)\n",
              std::filesystem::path{data}.filename().c_str(), table->rows, table->features,
              table->classes);

  // 2. The embedded cluster.
  auto cl = embedded_cluster::start({});
  if (!cl)
    return fail("starting the embedded cluster", cl.error());
  int exit_code = 1; // what a failed step returns; set to the result at the end
  struct bounded_stop {
    std::unique_ptr<embedded_cluster>& c;
    int& code;
    ~bounded_stop() {
      embedded_cluster::stop_within(c, std::chrono::seconds(30), code);
    }
  } stop_guard{*cl, exit_code};
  auto& net = **cl;
  std::printf("cluster   4 hosts in this process, own keys, mutual TLS on 127.0.0.1:\n");
  const char* what[] = {"ledger, block generator, allocator, rater (site west)",
                        "ledger, block generator, job host (site west)", "ledger, 2 trainers (site west)",
                        "ledger, 2 trainers (site east)"};
  for (size_t i = 0; i < 4; ++i)
    std::printf("          %s %s  %s\n", net.names()[i].c_str(), short_id(net.ids()[i]).c_str(),
                what[i]);

  // 3. The assets the job uses, registered on the chain by their owners with
  // a price per use, and the job's budget, escrowed.
  auto dataset_id = train::file_asset_id(data);
  if (!dataset_id)
    return fail("hashing " + data, dataset_id.error());
  auto spec = train::parse_spec(opts.model);
  if (!spec)
    return fail("--model " + opts.model, spec.error());
  auto model_asset = train::model_id(*spec);
  const uint64_t dataset_price = 500, model_price = 300;
  if (auto err = net.tx(
        net.data_owner(),
        [&](uint64_t n) {
          return train::make_asset_register(net.data_owner(), net.chain_id(), n, *dataset_id, "dataset",
                                            *dataset_id, dataset_price);
        }))
    return fail("registering the dataset", err);
  if (auto err = net.tx(
        net.model_owner(),
        [&](uint64_t n) {
          return train::make_asset_register(net.model_owner(), net.chain_id(), n, model_asset, "model",
                                            model_asset, model_price);
        }))
    return fail("registering the model", err);
  std::printf("assets    dataset %s (%s) owned by %s, %llu per job; model %s (%s) owned by %s, "
              "%llu per job\n",
              ledger::short_hex(*dataset_id).c_str(),
              std::filesystem::path{data}.filename().c_str(),
              short_id(net.data_owner().id()).c_str(),
              static_cast<unsigned long long>(dataset_price),
              ledger::short_hex(model_asset).c_str(), opts.model.c_str(),
              short_id(net.model_owner().id()).c_str(),
              static_cast<unsigned long long>(model_price));
  std::array<uint8_t, 32> job;
  randombytes_buf(job.data(), 32);
  const uint64_t trainers = 4, price = 1;
  const uint64_t escrow = trainers * opts.steps * price + dataset_price + model_price + 1000;
  // The job runs on the cluster's job host (c1) as the payer's agent: the
  // escrow's terms cap what it may pay trainers and list the assets whose
  // owners it may pay, and give it an hour to settle.
  const size_t job_host = 1;
  train::agent_terms terms;
  terms.agent = net.ids()[job_host];
  terms.max_price = price;
  terms.units = trainers * opts.steps;
  terms.deadline_ms = static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch() + std::chrono::hours(1))
      .count());
  terms.assets = {*dataset_id, model_asset};
  if (auto err = net.payer_tx([&](uint64_t n) {
        return train::make_escrow_lock(net.payer(), net.chain_id(), n, job, escrow, terms);
      }))
    return fail("escrow", err);
  std::printf("escrow    payer %s locked %llu for job %s (final at height %llu); agent: job host "
              "%s %s, trainers at most %llu per step each\n",
              short_id(net.payer().id()).c_str(), static_cast<unsigned long long>(escrow),
              ledger::short_hex(job).c_str(), static_cast<unsigned long long>(net.height()),
              net.names()[job_host].c_str(), short_id(terms.agent).c_str(),
              static_cast<unsigned long long>(price));

  // 4. The job, handed to the job host: it allocates, trains, has the work
  // verified, settles and registers the model; this process only watches.
  capnp::MallocMessageBuilder mb;
  auto spec_b = mb.initRoot<schema::JobSpec>();
  spec_b.setModel(opts.model);
  spec_b.setDataFile(std::filesystem::absolute(data).string());
  spec_b.setTrainers(trainers);
  spec_b.setSteps(opts.steps);
  spec_b.setBatch(opts.batch);
  spec_b.setLr(0.05f);
  spec_b.setMomentum(0.9f);
  spec_b.setHoldoutPercent(20);
  spec_b.setSeed(1);
  spec_b.setBudget(escrow);
  spec_b.setVerify(true);
  auto now_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
  auto submitted = net.ask(job_host, "job", sign_job_submit(net.payer(), spec_b.asReader(), job, now_ms), 30s);
  if (!submitted)
    return fail("submitting the job", submitted.error());
  std::printf("job       submitted to job host %s: %s x %llu steps on %llu trainers, verified, "
              "budget %llu\n",
              net.names()[job_host].c_str(), opts.model.c_str(),
              static_cast<unsigned long long>(opts.steps), static_cast<unsigned long long>(trainers),
              static_cast<unsigned long long>(escrow));
  std::vector<double> losses;
  std::string settled_event; // the job host's own account of what it paid
  uint32_t events_seen = 0;
  auto t_train = clock_type::now();
  uint64_t per_epoch = table->rows * 8 / 10 / opts.batch;
  std::optional<opened<schema::JobInfo>> last;
  envelope last_env;
  std::string phase;
  bool progress_open = false;
  for (;;) {
    auto r = net.watch(job_host, "job", make_envelope<schema::JobQuery>([&](auto q) {
                         q.setLogs(kj::arrayPtr(job.data(), 32));
                         q.setSince(events_seen);
                         q.setWithLosses(true);
                         q.setLossesSince(static_cast<uint32_t>(losses.size()));
                       }),
                       30s);
    if (!r)
      return fail("watching the job", r.error());
    last_env = *r;
    opened<schema::JobInfo> info{last_env};
    if (!info)
      return fail("watching the job", info.error());
    if (info->getLossesFrom() == losses.size())
      for (auto l : info->getLosses())
        losses.push_back(l);
    for (auto e : info->getEvents()) {
      std::string text = e.cStr();
      if (text.rfind("settled: ", 0) == 0)
        settled_event = text.substr(9);
      if (text.rfind("allocator", 0) == 0 || text.rfind("ring", 0) == 0) {
        if (progress_open)
          std::fprintf(stderr, "\n");
        progress_open = false;
        std::printf("allocate  %s\n", text.c_str());
      }
    }
    events_seen += info->getEvents().size();
    phase = info->getPhase().cStr();
    if (phase == "training" && info->getStep() > 0) {
      double elapsed = std::chrono::duration<double>(clock_type::now() - t_train).count();
      double rate = elapsed > 0 ? info->getStep() * opts.batch / elapsed : 0;
      double eta = rate > 0 ? (opts.steps - info->getStep()) * opts.batch / rate : 0;
      std::fprintf(stderr, "\rtrain     epoch %.2f  step %llu/%llu  loss %.4f  %.0f samples/s  "
                           "ETA %.0f s   ",
                   per_epoch ? static_cast<double>(info->getStep()) / per_epoch : 0.0,
                   static_cast<unsigned long long>(info->getStep()),
                   static_cast<unsigned long long>(opts.steps), info->getLoss(), rate, eta);
      progress_open = true;
    }
    if (phase == "done" || phase == "failed" || phase == "cancelled")
      break;
    std::this_thread::sleep_for(100ms);
  }
  if (progress_open)
    std::fprintf(stderr, "\n");
  opened<schema::JobInfo> info{last_env};
  if (phase != "done")
    return fail("the job", make_error(errc::internal, phase + ": " + info->getError().cStr()));
  double train_s = std::chrono::duration<double>(clock_type::now() - t_train).count();
  std::printf("trained   %s: held-out accuracy %.4f, test loss %.4f, %llu steps; the job took "
              "%.1f s from submission to settlement\n",
              opts.model.c_str(), info->getAccuracy(), info->getTestLoss(),
              static_cast<unsigned long long>(info->getStep()), train_s);

  // 5. Verification by the rater (asked by the job host).
  std::printf("verified  %s: steps of each re-executed from their evidence (detects 10%% faked "
              "steps with p >= 0.99); receipts countersigned\n",
              info->getVerified().cStr());
  std::string verified = info->getVerified().cStr();
  bool all_passed = !verified.empty()
                    && verified.substr(0, verified.find('/'))
                         == verified.substr(verified.find('/') + 1,
                                            verified.find(' ') - verified.find('/') - 1);

  // 6. The PoV blocks those receipts earn.
  std::array<uint8_t, 32> session{};
  std::memcpy(session.data(), info->getSession().begin(), 32);
  std::vector<std::pair<uint64_t, uint64_t>> session_blocks; // height, work units
  auto deadline = clock_type::now() + 60s;
  uint64_t scanned = 0;
  while (session_blocks.empty() && clock_type::now() < deadline) {
    for (auto h = scanned + 1; h <= net.height(); ++h) {
      auto blk = net.ask(1, "ledger", make_envelope<schema::LedgerQuery>([h](auto q) {
                           q.setBlockAt(h);
                         }),
                         10s);
      if (!blk)
        break;
      scanned = h;
      opened<schema::Block> b{*blk};
      if (b && b->getHeader().getSessionId().size() == 32
          && std::memcmp(b->getHeader().getSessionId().begin(), session.data(), 32) == 0)
        session_blocks.emplace_back(h, b->getHeader().getWorkUnits());
    }
    if (session_blocks.empty())
      std::this_thread::sleep_for(200ms);
  }
  if (session_blocks.empty())
    return fail("blocks", make_error(errc::timeout, "no block carried the session within 60 s"));
  for (auto [h, units] : session_blocks)
    std::printf("block     #%llu final: session %s, job %s, model %s, %llu verified work units\n",
                static_cast<unsigned long long>(h), ledger::short_hex(session).c_str(),
                ledger::short_hex(job).c_str(), ledger::short_hex(model_asset).c_str(),
                static_cast<unsigned long long>(units));

  // 7. Settlement (by the job host, within the terms) and the trained model.
  std::printf("settled   escrow %llu by the agent: %s; PoV reward minted by score (80%% "
              "trainers by verified work, 10%% dataset, 10%% model)\n",
              static_cast<unsigned long long>(escrow), settled_event.c_str());
  for (size_t i = 2; i < 4; ++i) {
    auto acct = net.account(net.ids()[i]);
    std::printf("          %s %s: balance %llu (work and reward), stake %llu\n",
                net.names()[i].c_str(), short_id(net.ids()[i]).c_str(),
                static_cast<unsigned long long>(acct ? std::get<0>(*acct) : 0),
                static_cast<unsigned long long>(acct ? std::get<2>(*acct) : 0));
  }
  for (auto* owner : {&net.data_owner(), &net.model_owner()}) {
    auto acct = net.account(owner->id());
    std::printf("          %s owner %s: balance %llu (price and reward)\n",
                owner == &net.data_owner() ? "dataset" : "model  ",
                short_id(owner->id()).c_str(),
                static_cast<unsigned long long>(acct ? std::get<0>(*acct) : 0));
  }
  auto payer_acct = net.account(net.payer().id());
  std::printf("          payer %s: balance %llu\n", short_id(net.payer().id()).c_str(),
              static_cast<unsigned long long>(payer_acct ? std::get<0>(*payer_acct) : 0));
  if (info->getModelAsset().size() == 32) {
    std::array<uint8_t, 32> asset{};
    std::memcpy(asset.data(), info->getModelAsset().begin(), 32);
    std::printf("model     trained weights registered as asset %s (trained-model) by the job "
                "host, owned by the payer\n",
                ledger::short_hex(asset).c_str());
  }

  // 8. The loss curve.
  auto csv_path = std::filesystem::path{opts.out} / "loss.csv";
  auto svg_path = std::filesystem::path{opts.out} / "loss.svg";
  {
    std::ofstream f{csv_path};
    f << "step,loss\n";
    for (size_t i = 0; i < losses.size(); ++i)
      f << fmt::format("{},{:.6f}\n", i, losses[i]);
    if (!f.flush())
      return fail("writing " + csv_path.string(), make_error(errc::io_error, "write failed"));
  }
  if (auto err = write_loss_svg(svg_path.string(), losses))
    return fail("writing " + svg_path.string(), err);
  std::printf("wrote     %s and %s\n", csv_path.c_str(), svg_path.c_str());
  double total = std::chrono::duration<double>(clock_type::now() - t_start).count();
  bool ok = info->getAccuracy() >= 0.95 && all_passed;
  exit_code = ok ? 0 : 1;
  std::printf("%s in %.1f s: held-out accuracy %.4f %s 0.95\n", ok ? "done" : "FAILED", total,
              info->getAccuracy(), info->getAccuracy() >= 0.95 ? ">=" : "<");
  return ok ? 0 : 1;
}

} // namespace aicon
