#include "bench/chain.hpp"

#include <chrono>
#include <cstdio>
#include <thread>

#include <fmt/format.h>
#include <sodium.h>

#include "actors/ledger/chain.hpp"
#include "actors/ledger/work.hpp"
#include "runtime/identity.hpp"
#include "runtime/temp_dir.hpp"

namespace aicon::bench {

namespace {

using clock_type = std::chrono::steady_clock;
using ledger::chain;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

aicon::identity key(uint32_t n) {
  std::array<uint8_t, 32> seed{};
  std::memcpy(seed.data(), &n, sizeof(n));
  seed[31] = 0xbe;
  return aicon::identity::from_seed(seed);
}

void progress(const char* what, int done, int total, clock_type::time_point t0) {
  auto secs = seconds_since(t0);
  auto rate = done / std::max(secs, 1e-9);
  std::fprintf(stderr, "\r  %s %d/%d  %.1f/s  ETA %.0f s   ", what, done, total, rate,
               (total - done) / std::max(rate, 1e-9));
  if (done == total)
    std::fprintf(stderr, "\n");
}

} // namespace

void add_chain_flags(CLI::App& app, chain_options& opts) {
  app.add_option("--blocks", opts.blocks, "blocks to commit (default 20)")->check(CLI::Range(1, 100000));
  app.add_option("--txs", opts.txs, "transfers per block (default 1000)")->check(CLI::Range(1, 100000));
  app.add_flag("--quick", opts.quick, "tiny run for ctest (2 blocks of 100)");
  app.add_option("--dir", opts.dir, "keep the stores in DIR (DIR/target, DIR/genesis.toml)");
}

int run_chain(const chain_options& in) {
  auto opts = in;
  if (opts.quick) {
    opts.blocks = 2;
    opts.txs = 100;
  }
  auto tmp = temp_dir::create("aicon-bench-chain");
  if (!tmp) {
    std::fprintf(stderr, "bench: %s\n", describe(tmp.error()).c_str());
    return 2;
  }
  // Genesis: one generator (committee of one), wallets with room to pay.
  auto generator = key(0);
  const uint32_t wallets = 1000;
  ledger::genesis_config g;
  g.time_ms = 1'700'000'000'000;
  g.candidates = {{generator.id(), 1}};
  g.authorities = {generator.id()}; // countersigns the blocks' work receipts
  g.committee_size = 1;
  g.initial_difficulty = 1;
  std::vector<aicon::identity> people;
  for (uint32_t i = 1; i <= wallets; ++i) {
    people.push_back(key(i));
    g.allocations.push_back({people.back().id(), 1'000'000'000, 0});
  }
  std::filesystem::path root = opts.dir.empty() ? tmp->path() : std::filesystem::path{opts.dir};
  if (!opts.dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(root, ec);
    if (auto err = write_file_atomic(root / "genesis.toml", ledger::to_toml(g), 0644)) {
      std::fprintf(stderr, "bench: %s\n", describe(err).c_str());
      return 2;
    }
  }
  // Build the blocks once on a scratch store (signing and proposing are not
  // what is measured), then commit them to a fresh store and time that.
  std::vector<envelope> blocks;
  {
    auto scratch = chain::open(*tmp / "scratch", g); // always thrown away
    if (!scratch) {
      std::fprintf(stderr, "bench: %s\n", describe(scratch.error()).c_str());
      return 2;
    }
    std::vector<uint64_t> nonces(wallets, 0);
    auto chain = ledger::chain_id(g);
    auto t0 = clock_type::now();
    for (int b = 0; b < opts.blocks; ++b) {
      ledger::block_draft d;
      for (int k = 0; k < opts.txs; ++k) {
        auto from = static_cast<uint32_t>((b * opts.txs + k) % wallets);
        auto to = (from + 1 + static_cast<uint32_t>(k) % 7) % wallets;
        d.transactions.push_back(ledger::make_signed_transaction(
          people[from], chain, ++nonces[from], [&](schema::Transaction::Body::Builder body) {
            auto t = body.initTransfer();
            t.setTo(kj::arrayPtr(people[to].id().bytes.data(), 32));
            t.setAmount(1 + static_cast<uint64_t>(k % 13));
          }));
      }
      d.time_ms = g.time_ms + 2000 * static_cast<uint64_t>(b + 1);
      d.receipts = {ledger::make_work_receipt(
        generator, generator, ledger::work_facts{.seq = static_cast<uint64_t>(b + 1), .units = 1})};
      std::vector<std::pair<size_t, caf::error>> refused;
      auto blk = (*scratch)->propose(generator, d, &refused);
      if (!blk || !refused.empty()) {
        std::fprintf(stderr, "bench: cannot build block %d\n", b);
        return 2;
      }
      auto voted = chain::add_vote(*blk, generator);
      if (auto err = (*scratch)->append(voted)) {
        std::fprintf(stderr, "bench: %s\n", describe(err).c_str());
        return 2;
      }
      blocks.push_back(std::move(voted));
      progress("building blocks", b + 1, opts.blocks, t0);
    }
  }
  auto total_tx = static_cast<double>(opts.blocks) * opts.txs;
  // 1. aicon: append every block to a fresh store (durable commits).
  double aicon_secs = 0;
  double committed_tx = 0;
  uint64_t wrong = 0;
  {
    auto target = chain::open(root / "target", g);
    if (!target) {
      std::fprintf(stderr, "bench: %s\n", describe(target.error()).c_str());
      return 2;
    }
    // A store kept from an earlier (possibly killed) run resumes at its tip:
    // the blocks are built deterministically, so they are the same blocks.
    auto resume = (*target)->tip();
    if (!resume) {
      std::fprintf(stderr, "bench: %s\n", describe(resume.error()).c_str());
      return 2;
    }
    if (resume->height > 0)
      std::fprintf(stderr, "  resuming at height %llu\n",
                   static_cast<unsigned long long>(resume->height));
    auto t0 = clock_type::now();
    for (size_t b = resume->height; b < blocks.size(); ++b) {
      if (auto err = (*target)->append(blocks[b])) {
        std::fprintf(stderr, "\nbench: block %zu refused: %s\n", b, describe(err).c_str());
        ++wrong;
        break;
      }
      progress("committing", static_cast<int>(b + 1), opts.blocks, t0);
    }
    aicon_secs = seconds_since(t0);
    committed_tx = static_cast<double>(blocks.size() - resume->height) * opts.txs;
  }
  // 2. Ceiling: raw ed25519 verification of the same signatures on all cores.
  std::vector<std::vector<uint8_t>> msgs;
  std::vector<std::array<uint8_t, 64>> sigs;
  std::vector<node_id> authors;
  for (auto& blk : blocks) {
    opened<schema::Block> b{blk};
    for (auto stx : b->getTransactions()) {
      msgs.push_back(ledger::signing_bytes(stx.getTx()));
      std::array<uint8_t, 64> s;
      std::memcpy(s.data(), stx.getSignature().begin(), 64);
      sigs.push_back(s);
      authors.push_back(*node_id::from_bytes({stx.getTx().getAuthor().begin(), 32}));
    }
  }
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  double verify_secs = 0;
  {
    std::atomic<uint64_t> bad{0};
    auto t0 = clock_type::now();
    std::vector<std::thread> pool;
    for (unsigned k = 0; k < threads; ++k)
      pool.emplace_back([&, k] {
        for (size_t i = k; i < msgs.size(); i += threads)
          if (crypto_sign_verify_detached(sigs[i].data(), msgs[i].data(), msgs[i].size(),
                                          authors[i].bytes.data())
              != 0)
            ++bad;
      });
    for (auto& th : pool)
      th.join();
    verify_secs = seconds_since(t0);
    wrong += bad.load();
  }
  // 3. Ceiling: raw LMDB durable commits of the same bytes (each block's
  // words plus its touched account records, one synced commit per block).
  double lmdb_secs = 0;
  {
    auto env = store::environment::open(*tmp / "raw");
    if (!env) {
      std::fprintf(stderr, "bench: %s\n", describe(env.error()).c_str());
      return 2;
    }
    std::vector<uint8_t> value(24, 7);
    auto t0 = clock_type::now();
    for (size_t b = 0; b < blocks.size(); ++b) {
      auto t = store::txn::begin(**env, true);
      auto key_h = store::height_key(b + 1);
      caf::error err = t->put(store::db::blocks, key_h,
                              {reinterpret_cast<const uint8_t*>(blocks[b].words.data()),
                               blocks[b].size_bytes()});
      opened<schema::Block> blk{blocks[b]};
      for (auto stx : blk->getTransactions()) {
        if (err)
          break;
        err = t->put(store::db::accounts, {stx.getTx().getAuthor().begin(), 32}, value);
        if (!err)
          err = t->put(store::db::accounts,
                       {stx.getTx().getBody().getTransfer().getTo().begin(), 32}, value);
      }
      if (!err)
        err = t->commit();
      if (err) {
        std::fprintf(stderr, "bench: %s\n", describe(err).c_str());
        return 2;
      }
    }
    lmdb_secs = seconds_since(t0);
  }
  auto aicon_rate = committed_tx / std::max(aicon_secs, 1e-9);
  auto verify_rate = total_tx / verify_secs;
  auto lmdb_rate = total_tx / lmdb_secs;
  auto ceiling = std::min(verify_rate, lmdb_rate);
  std::printf("# aicon bench chain: %d blocks x %d signed transfers, %zu wallets, %u cores\n",
              opts.blocks, opts.txs, static_cast<size_t>(wallets), threads);
  std::printf("# aicon = chain::append (all signatures verified on %u threads, every rule, "
              "state root, LMDB commit with fsync)\n", threads);
  std::printf("%-36s %14s %9s\n", "what", "tx/s", "vs lower");
  std::printf("%-36s %14.0f %9.3f\n", "aicon durable commit", aicon_rate, aicon_rate / ceiling);
  std::printf("%-36s %14.0f %9.3f\n", "ceiling: raw ed25519 verify (all cores)", verify_rate,
              verify_rate / ceiling);
  std::printf("%-36s %14.0f %9.3f\n", "ceiling: raw LMDB synced commits", lmdb_rate,
              lmdb_rate / ceiling);
  std::printf("# #wrong %llu; target >= 20000 tx/s and >= 0.7 of the lower ceiling: %s\n",
              static_cast<unsigned long long>(wrong),
              aicon_rate >= 20000 && aicon_rate / ceiling >= 0.7 ? "met" : "missed");
  return wrong == 0 ? 0 : 1;
}

} // namespace aicon::bench
