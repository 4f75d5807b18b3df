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
#include "actors/ledger/hashing.hpp"
#include "actors/trainer/work.hpp"
#include "cli/embedded.hpp"
#include "cli/plot.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "schemas/chain.capnp.h"

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
                        "ledger, block generator (site west)", "ledger, 2 trainers (site west)",
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
  if (auto err = net.payer_tx(
        [&](uint64_t n) { return train::make_escrow_lock(net.payer(), net.chain_id(), n, job, escrow); }))
    return fail("escrow", err);
  std::printf("escrow    payer %s locked %llu for job %s (final at height %llu)\n",
              short_id(net.payer().id()).c_str(), static_cast<unsigned long long>(escrow),
              ledger::short_hex(job).c_str(), static_cast<unsigned long long>(net.height()));

  // 4. Allocation and training.
  train::job_options o;
  o.allocator = net.chain_host();
  o.payer = &net.payer();
  o.trainers = trainers;
  o.max_price = price;
  o.data_site = "west";
  o.job = job;
  o.verifier = net.chain_host();
  o.model = opts.model;
  o.steps = opts.steps;
  o.global_batch = opts.batch;
  o.data_file = std::filesystem::absolute(data).string();
  o.dataset_asset = *dataset_id;
  std::vector<train::step_report> curve;
  double step_seconds = 0, allreduce_seconds = 0;
  auto t_train = clock_type::now();
  uint64_t per_epoch = table->rows * 8 / 10 / opts.batch;
  auto progress = [&](const train::step_report& s) {
    curve.push_back(s);
    step_seconds += s.samples_per_s > 0 ? opts.batch / s.samples_per_s : 0;
    allreduce_seconds += s.allreduce_ms / 1000.0;
    if (s.step % 10 == 0 || s.step + 1 == opts.steps) {
      double elapsed = std::chrono::duration<double>(clock_type::now() - t_train).count();
      double rate = elapsed > 0 ? (s.step + 1) * opts.batch / elapsed : 0;
      double eta = rate > 0 ? (opts.steps - s.step - 1) * opts.batch / rate : 0;
      std::fprintf(stderr, "\rtrain     epoch %.2f  step %llu/%llu  loss %.4f  %.0f samples/s  "
                           "ETA %.0f s   ",
                   per_epoch ? static_cast<double>(s.step + 1) / per_epoch : 0.0,
                   static_cast<unsigned long long>(s.step + 1),
                   static_cast<unsigned long long>(opts.steps), s.loss, rate, eta);
    }
  };
  auto result = train::run_job(net.c(), o, progress);
  std::fprintf(stderr, "\n");
  if (!result)
    return fail("training", result.error());
  for (auto& e : result->events)
    if (e.rfind("allocator", 0) == 0)
      std::printf("allocate  %s\n", e.c_str());
  double train_s = std::chrono::duration<double>(clock_type::now() - t_train).count();
  double sps = train_s > 0 ? result->steps * opts.batch / train_s : 0;
  std::printf("trained   %s: held-out accuracy %.4f, test loss %.4f, %llu steps in %.1f s, "
              "%.0f samples/s, allreduce %.0f%% of step time\n",
              opts.model.c_str(), result->accuracy, result->test_loss,
              static_cast<unsigned long long>(result->steps), train_s, sps,
              step_seconds > 0 ? 100 * allreduce_seconds / step_seconds : 0.0);

  // 5. Verification by the rater.
  auto height_before = net.height();
  auto chain = train::chain_id_of([&](envelope q) { return net.ask(0, "ledger", std::move(q), 10s); });
  if (!chain)
    return fail("verification: the chain id", chain.error());
  auto rated = net.ask(0, "rater", train::make_rate_request(o, *result, net.payer(), *chain), 120s);
  if (!rated)
    return fail("verification", rated.error());
  auto rating = train::parse_rating(*rated);
  if (!rating)
    return fail("verification", rating.error());
  size_t passed = 0;
  for (auto& v : rating->verdicts)
    passed += v.passed ? 1 : 0;
  std::printf("verified  %zu/%zu trainers passed: %u steps each re-executed from their evidence "
              "(detects 10%% faked steps with p >= 0.99) in %llu ms; %u receipts countersigned\n",
              passed, rating->verdicts.size(), rating->samples_per_trainer,
              static_cast<unsigned long long>(rating->verify_ms), rating->receipts);
  for (auto& v : rating->verdicts)
    if (!v.passed)
      std::printf("          rank %u on %s FAILED: %s\n", v.rank, short_id(v.trainer).c_str(),
                  v.why.c_str());

  // 6. The PoV blocks those receipts earn.
  std::vector<std::pair<uint64_t, uint64_t>> session_blocks; // height, work units
  auto deadline = clock_type::now() + 60s;
  uint64_t scanned = height_before;
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
          && std::memcmp(b->getHeader().getSessionId().begin(), result->session.data(), 32) == 0)
        session_blocks.emplace_back(h, b->getHeader().getWorkUnits());
    }
    if (session_blocks.empty())
      std::this_thread::sleep_for(200ms);
  }
  if (session_blocks.empty())
    return fail("blocks", make_error(errc::timeout, "no block carried the session within 60 s"));
  for (auto [h, units] : session_blocks)
    std::printf("block     #%llu final: session %s, job %s, model %s, %llu verified work units\n",
                static_cast<unsigned long long>(h), ledger::short_hex(result->session).c_str(),
                ledger::short_hex(job).c_str(),
                ledger::short_hex(model_asset).c_str(),
                static_cast<unsigned long long>(units));

  // 7. Settlement and the trained model.
  auto ledger_of_c1 = [&](envelope q) { return net.ask(1, "ledger", std::move(q), 10s); };
  auto dataset_terms = train::terms_of(ledger_of_c1, *dataset_id);
  if (!dataset_terms)
    return fail("settlement: the dataset's terms", dataset_terms.error());
  auto model_terms = train::terms_of(ledger_of_c1, model_asset);
  if (!model_terms)
    return fail("settlement: the model's terms", model_terms.error());
  auto plan = train::plan_settlement(escrow, *rating, result->steps, price, net.payer().id(),
                                     *dataset_terms, *model_terms);
  if (!plan.why.empty())
    return fail("settlement", make_error(errc::invalid_argument, plan.why));
  if (auto err = net.payer_tx(
        [&](uint64_t n) { return train::make_settle(net.payer(), net.chain_id(), n, job, plan); }))
    return fail("settlement", err);
  std::array<uint8_t, 32> asset{};
  if (auto err = net.payer_tx(
        [&](uint64_t n) {
          return train::make_model_asset(net.payer(), net.chain_id(), n, result->checkpoint, &asset);
        }))
    return fail("model asset", err);
  std::printf("settled   escrow %llu: trainers %llu (%llu per step each), dataset owner %llu, "
              "model owner %llu, %llu refunded to the payer; PoV reward %llu minted by score "
              "(80%% trainers by verified work, 10%% dataset, 10%% model)\n",
              static_cast<unsigned long long>(escrow), static_cast<unsigned long long>(plan.trainers),
              static_cast<unsigned long long>(price), static_cast<unsigned long long>(plan.dataset),
              static_cast<unsigned long long>(plan.model),
              static_cast<unsigned long long>(plan.refund),
              static_cast<unsigned long long>(rating->minted));
  std::map<node_id, uint64_t> reward_of;
  for (auto& [w, a] : rating->rewards)
    reward_of[w] += a;
  std::map<node_id, uint64_t> paid_of;
  for (auto& [w, a] : plan.payouts)
    paid_of[w] += a;
  for (size_t i = 2; i < 4; ++i) {
    auto acct = net.account(net.ids()[i]);
    std::printf("          %s %s: work %llu + reward %llu = balance %llu (stake %llu)\n",
                net.names()[i].c_str(), short_id(net.ids()[i]).c_str(),
                static_cast<unsigned long long>(paid_of[net.ids()[i]]),
                static_cast<unsigned long long>(reward_of[net.ids()[i]]),
                static_cast<unsigned long long>(acct ? std::get<0>(*acct) : 0),
                static_cast<unsigned long long>(acct ? std::get<2>(*acct) : 0));
  }
  for (auto* owner : {&net.data_owner(), &net.model_owner()}) {
    auto acct = net.account(owner->id());
    std::printf("          %s owner %s: price %llu + reward %llu = balance %llu\n",
                owner == &net.data_owner() ? "dataset" : "model  ",
                short_id(owner->id()).c_str(),
                static_cast<unsigned long long>(paid_of[owner->id()]),
                static_cast<unsigned long long>(reward_of[owner->id()]),
                static_cast<unsigned long long>(acct ? std::get<0>(*acct) : 0));
  }
  auto payer_acct = net.account(net.payer().id());
  std::printf("          payer %s: balance %llu\n", short_id(net.payer().id()).c_str(),
              static_cast<unsigned long long>(payer_acct ? std::get<0>(*payer_acct) : 0));
  std::printf("model     trained weights registered as asset %s (trained-model), owned by the "
              "payer\n",
              ledger::short_hex(asset).c_str());

  // 8. The loss curve.
  auto csv_path = std::filesystem::path{opts.out} / "loss.csv";
  auto svg_path = std::filesystem::path{opts.out} / "loss.svg";
  {
    std::ofstream f{csv_path};
    f << "step,loss,samples_per_s,allreduce_ms,trainers\n";
    for (auto& s : curve)
      f << fmt::format("{},{:.6f},{:.1f},{:.3f},{}\n", s.step, s.loss, s.samples_per_s,
                       s.allreduce_ms, s.trainers);
    if (!f.flush())
      return fail("writing " + csv_path.string(), make_error(errc::io_error, "write failed"));
  }
  std::vector<double> losses;
  for (auto& s : curve)
    losses.push_back(s.loss);
  if (auto err = write_loss_svg(svg_path.string(), losses))
    return fail("writing " + svg_path.string(), err);
  std::printf("wrote     %s and %s\n", csv_path.c_str(), svg_path.c_str());
  double total = std::chrono::duration<double>(clock_type::now() - t_start).count();
  bool ok = result->accuracy >= 0.95 && passed == rating->verdicts.size();
  exit_code = ok ? 0 : 1;
  std::printf("%s in %.1f s: held-out accuracy %.4f %s 0.95\n", ok ? "done" : "FAILED", total,
              result->accuracy, result->accuracy >= 0.95 ? ">=" : "<");
  return ok ? 0 : 1;
}

} // namespace aicon
