#include "actors/job/economy.hpp"

#include <cstring>
#include <map>

#include <fmt/format.h>
#include <sodium.h>

#include "actors/ledger/state.hpp"
#include "runtime/error.hpp"
#include "schemas/chain.capnp.h"
#include "schemas/rater.capnp.h"
#include "schemas/trainer.capnp.h"

namespace aicon::train {

envelope make_rate_request(const job_options& o, const job_result& r, const node_id& payer,
                           uint64_t reward) {
  return make_envelope<schema::RateRequest>([&](schema::RateRequest::Builder b) {
    b.setJob(kj::arrayPtr(o.job.data(), 32));
    b.setSession(kj::arrayPtr(r.session.data(), 32));
    auto c = b.initConfig();
    c.setModel(o.model);
    c.setSeed(o.seed);
    c.setGlobalBatch(o.global_batch);
    c.setDataFile(o.data_file);
    c.setTestPercent(o.test_percent);
    c.setSplitSeed(o.split_seed);
    c.setStandardize(o.standardize);
    auto ranks = b.initRanks(static_cast<unsigned>(r.rank_hosts.size()));
    for (unsigned i = 0; i < r.rank_hosts.size(); ++i)
      ranks.set(i, kj::arrayPtr(r.rank_hosts[i].bytes.data(), 32));
    auto logs = b.initLogs(static_cast<unsigned>(r.logs.size()));
    for (unsigned i = 0; i < r.logs.size(); ++i) {
      opened<schema::SessionLog> l{r.logs[i]};
      if (l)
        logs.setWithCaveats(i, l.root());
    }
    b.setReward(reward);
    b.setPayer(kj::arrayPtr(payer.bytes.data(), 32));
  });
}

caf::expected<rating> parse_rating(const envelope& reply) {
  opened<schema::RateResult> r{reply};
  if (!r)
    return r.error();
  rating out;
  for (auto v : r->getVerdicts()) {
    rank_verdict x;
    x.rank = v.getRank();
    auto id = node_id::from_bytes({v.getTrainer().begin(), v.getTrainer().size()});
    if (!id)
      return id.error();
    x.trainer = *id;
    x.passed = v.getPassed();
    x.why = v.getWhy();
    x.units = v.getUnits();
    out.verdicts.push_back(std::move(x));
  }
  out.samples_per_trainer = r->getSamplesPerTrainer();
  out.receipts = r->getReceipts();
  out.slashed = r->getSlashed();
  out.minted = r->getMinted();
  out.verify_ms = r->getVerifyMs();
  for (auto s : r->getRewards()) {
    auto id = node_id::from_bytes({s.getWallet().begin(), s.getWallet().size()});
    if (id)
      out.rewards.emplace_back(*id, s.getAmount());
  }
  return out;
}

settle_plan plan_settlement(uint64_t escrow, const rating& verdicts, uint64_t steps,
                            uint64_t price_per_step) {
  settle_plan plan;
  std::map<node_id, uint64_t> due;
  unsigned __int128 total = 0;
  for (auto& v : verdicts.verdicts)
    if (v.passed) {
      due[v.trainer] += steps * price_per_step;
      total += steps * price_per_step;
    }
  if (total > escrow) {
    plan.why = fmt::format("the escrow ({}) does not cover the verified work ({})", escrow,
                           static_cast<uint64_t>(total));
    return plan;
  }
  for (auto& [who, amount] : due)
    if (amount > 0)
      plan.payouts.emplace_back(who, amount);
  plan.refund = escrow - static_cast<uint64_t>(total);
  return plan;
}

envelope make_settle(const identity& payer, uint64_t nonce, const std::array<uint8_t, 32>& job,
                     const settle_plan& plan) {
  return ledger::make_signed_transaction(payer, nonce, [&](schema::Transaction::Body::Builder b) {
    auto s = b.initSettle();
    s.setJobId(kj::arrayPtr(job.data(), 32));
    auto p = s.initPayouts(static_cast<unsigned>(plan.payouts.size()));
    for (unsigned i = 0; i < plan.payouts.size(); ++i) {
      p[i].setTo(kj::arrayPtr(plan.payouts[i].first.bytes.data(), 32));
      p[i].setAmount(plan.payouts[i].second);
    }
  });
}

envelope make_escrow_lock(const identity& payer, uint64_t nonce,
                          const std::array<uint8_t, 32>& job, uint64_t amount) {
  return ledger::make_signed_transaction(payer, nonce, [&](schema::Transaction::Body::Builder b) {
    auto e = b.initEscrowLock();
    e.setJobId(kj::arrayPtr(job.data(), 32));
    e.setAmount(amount);
  });
}

envelope make_model_asset(const identity& payer, uint64_t nonce,
                          const std::vector<uint8_t>& checkpoint,
                          std::array<uint8_t, 32>* asset_id) {
  std::array<uint8_t, 32> id;
  crypto_generichash(id.data(), 32, checkpoint.data(), checkpoint.size(), nullptr, 0);
  if (asset_id)
    *asset_id = id;
  return ledger::make_signed_transaction(payer, nonce, [&](schema::Transaction::Body::Builder b) {
    auto a = b.initAssetRegister();
    a.setAssetId(kj::arrayPtr(id.data(), 32));
    a.setKind("trained-model");
    a.setMetadataHash(kj::arrayPtr(id.data(), 32));
  });
}

} // namespace aicon::train
