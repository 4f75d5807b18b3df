#include "actors/job/economy.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <sodium.h>

#include "actors/data_node/custody.hpp"
#include "actors/data_node/model_store.hpp"
#include "actors/ledger/state.hpp"
#include "actors/rater/rater.hpp"
#include "actors/trainer/model.hpp"
#include "actors/trainer/work.hpp"
#include "runtime/error.hpp"
#include "schemas/chain.capnp.h"
#include "schemas/rater.capnp.h"
#include "schemas/trainer.capnp.h"

namespace aicon::train {

envelope make_rate_request(const job_options& o, const job_result& r, const identity& payer,
                           const std::array<uint8_t, 32>& chain) {
  auto unsigned_req = make_envelope<schema::RateRequest>([&](schema::RateRequest::Builder b) {
    b.setJob(kj::arrayPtr(o.job.data(), 32));
    b.setSession(kj::arrayPtr(r.session.data(), 32));
    auto c = b.initConfig();
    c.setModel(o.model);
    c.setSeed(o.seed);
    c.setGlobalBatch(o.global_batch);
    c.setDataFile(o.data_file);
    if (auto dataset = dataset_asset_of(o); dataset && !o.dataset.empty()) {
      // A dataset from the data nodes: the rater pulls it as a trainer
      // does, its keys under a grant naming the rater, signed like the
      // trainers' (by the payer, or the escrow's agent for it).
      const auto& id = *dataset;
      c.setDataset(kj::arrayPtr(id.data(), 32));
      c.setJob(kj::arrayPtr(o.job.data(), 32));
      auto nodes = c.initDataNodes(static_cast<unsigned>(o.data_nodes.size()));
      for (unsigned i = 0; i < o.data_nodes.size(); ++i)
        nodes.set(i, kj::arrayPtr(o.data_nodes[i].bytes.data(), 32));
      if (o.verifier) {
        auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
        auto grant = data::make_data_grant(payer, chain, o.job, *o.verifier, id, now + o.grant_ms);
        c.setDataGrant(opened<schema::DataGrant>{grant}.root());
      }
    }
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
    if (auto d = dataset_asset_of(o))
      b.setDataset(kj::arrayPtr(d->data(), 32));
    auto m = model_asset_of(o);
    b.setModel(kj::arrayPtr(m.data(), 32));
    b.setToken(kj::arrayPtr(r.token.data(), 32));
    b.setFirstStep(r.ring_from);
    // Each ring once, in the order they ran (a ring kept twice, e.g. by a
    // restart in between, is listed once).
    std::vector<const earlier_ring*> rings;
    for (auto& e : r.earlier)
      if (e.session != r.session
          && std::none_of(rings.begin(), rings.end(),
                          [&](const earlier_ring* x) { return x->session == e.session; }))
        rings.push_back(&e);
    auto earlier = b.initEarlier(static_cast<unsigned>(rings.size()));
    for (unsigned i = 0; i < rings.size(); ++i)
      earlier.setWithCaveats(i, opened<schema::EarlierRing>{earlier_ring_envelope(*rings[i])}.root());
  });
  return sign_rate_request(payer, chain, opened<schema::RateRequest>{unsigned_req}.root());
}

envelope earlier_ring_envelope(const earlier_ring& e) {
  return make_envelope<schema::EarlierRing>([&](schema::EarlierRing::Builder out) {
    out.setSession(kj::arrayPtr(e.session.data(), 32));
    out.setToken(kj::arrayPtr(e.token.data(), 32));
    auto hosts = out.initRanks(static_cast<unsigned>(e.rank_hosts.size()));
    for (unsigned k = 0; k < e.rank_hosts.size(); ++k)
      hosts.set(k, kj::arrayPtr(e.rank_hosts[k].bytes.data(), 32));
    unsigned valid = 0;
    for (auto& env : e.logs)
      valid += opened<schema::SessionLog>{env} ? 1 : 0;
    auto logs = out.initLogs(valid);
    unsigned k = 0;
    for (auto& env : e.logs)
      if (opened<schema::SessionLog> l{env}; l)
        logs.setWithCaveats(k++, l.root());
    out.setFirstStep(e.first_step);
    out.setKeptSteps(e.kept_steps);
  });
}

caf::expected<earlier_ring> parse_earlier_ring(const envelope& env) {
  opened<schema::EarlierRing> in{env};
  if (!in)
    return in.error();
  if (in->getSession().size() != 32 || in->getToken().size() != 32)
    return make_error(errc::malformed_message, "EarlierRing: session and token must be 32 bytes");
  earlier_ring e;
  std::memcpy(e.session.data(), in->getSession().begin(), 32);
  std::memcpy(e.token.data(), in->getToken().begin(), 32);
  for (auto h : in->getRanks()) {
    auto id = node_id::from_bytes({h.begin(), h.size()});
    if (!id)
      return make_error(errc::malformed_message, "EarlierRing.ranks: " + what_of(id.error()));
    e.rank_hosts.push_back(*id);
  }
  for (auto l : in->getLogs())
    e.logs.push_back(copy_envelope<schema::SessionLog>(l));
  e.first_step = in->getFirstStep();
  e.kept_steps = in->getKeptSteps();
  return e;
}

caf::expected<std::array<uint8_t, 32>> chain_id_of(const ledger_ask& ask) {
  auto r = ask(make_envelope<schema::LedgerQuery>([](schema::LedgerQuery::Builder q) { q.setTip(); }));
  if (!r)
    return r.error();
  opened<schema::TipInfo> t{*r};
  if (!t)
    return t.error();
  if (t->getChainId().size() != 32)
    return make_error(errc::invalid_argument, "the ledger's TipInfo has no 32-byte chainId");
  std::array<uint8_t, 32> id;
  std::memcpy(id.data(), t->getChainId().begin(), 32);
  return id;
}

caf::expected<std::optional<asset_terms>> terms_of(const ledger_ask& ask,
                                                   const std::array<uint8_t, 32>& id) {
  auto r = ask(make_envelope<schema::LedgerQuery>(
    [&](schema::LedgerQuery::Builder q) { q.setAsset(kj::arrayPtr(id.data(), 32)); }));
  if (!r) {
    if (code_of(r.error()) == errc::not_found)
      return std::optional<asset_terms>{};
    return r.error();
  }
  opened<schema::AssetInfo> a{*r};
  if (!a)
    return a.error();
  auto owner = node_id::from_bytes({a->getOwner().begin(), a->getOwner().size()});
  if (!owner)
    return owner.error();
  asset_terms t{*owner, a->getKind().cStr(), a->getPrice(), {}};
  if (a->getMetadataHash().size() == 32)
    std::memcpy(t.metadata.data(), a->getMetadataHash().begin(), 32);
  return std::optional<asset_terms>{t};
}

bool model_terms_hold(const job_options& o, const asset_terms& t) {
  if (t.kind != "model")
    return false;
  auto spec = parse_spec(o.model);
  if (!spec || !spec->is_asset())
    return true;
  return data::model_asset_owned(model_asset_of(o), t.owner, t.metadata);
}

caf::expected<std::array<uint8_t, 32>> file_asset_id(const std::filesystem::path& file) {
  std::ifstream f{file, std::ios::binary};
  if (!f)
    return make_error(errc::io_error, fmt::format("cannot read {}", file.string()));
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  std::vector<char> buf(1 << 16);
  while (f) {
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(buf.data()),
                              static_cast<size_t>(f.gcount()));
  }
  if (f.bad())
    return make_error(errc::io_error, fmt::format("reading {} failed", file.string()));
  std::array<uint8_t, 32> id;
  crypto_generichash_final(&st, id.data(), 32);
  return id;
}

std::optional<std::array<uint8_t, 32>> dataset_asset_of(const job_options& o) {
  if (o.dataset.size() == 64) {
    std::array<uint8_t, 32> id;
    size_t len = 0;
    if (sodium_hex2bin(id.data(), 32, o.dataset.data(), o.dataset.size(), nullptr, &len, nullptr)
          == 0
        && len == 32)
      return id;
  }
  return o.dataset_asset;
}

std::array<uint8_t, 32> model_asset_of(const job_options& o) {
  auto spec = parse_spec(o.model);
  return spec ? model_id(*spec) : std::array<uint8_t, 32>{};
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
    if (v.getSession().size() == 32)
      std::memcpy(x.session.data(), v.getSession().begin(), 32);
    x.paid_steps = v.getPaidSteps();
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
                            uint64_t price_per_step, const node_id& payer,
                            const std::optional<asset_terms>& dataset,
                            const std::optional<asset_terms>& model,
                            const std::map<node_id, uint64_t>& lease_prices) {
  settle_plan plan;
  std::map<node_id, uint64_t> due;
  unsigned __int128 total = 0;
  for (auto& v : verdicts.verdicts)
    if (v.passed) {
      auto leased = lease_prices.find(v.trainer);
      auto price = leased != lease_prices.end() ? std::min(leased->second, price_per_step)
                                                : price_per_step;
      auto ran = std::min(v.paid_steps, steps);
      due[v.trainer] += ran * price;
      total += ran * price;
    }
  plan.trainers = static_cast<uint64_t>(total);
  // An owner that is the payer would pay itself: nothing moves.
  auto owner_part = [&](const std::optional<asset_terms>& t, uint64_t& part) {
    if (t && t->price > 0 && t->owner != payer) {
      due[t->owner] += t->price;
      total += t->price;
      part = t->price;
    }
  };
  owner_part(dataset, plan.dataset);
  owner_part(model, plan.model);
  if (total > escrow) {
    plan.why = fmt::format("the escrow ({}) does not cover the verified work ({}) and the "
                           "dataset ({}) and model ({}) prices",
                           escrow, plan.trainers, plan.dataset, plan.model);
    return plan;
  }
  for (auto& [who, amount] : due)
    if (amount > 0)
      plan.payouts.emplace_back(who, amount);
  plan.refund = escrow - static_cast<uint64_t>(total);
  return plan;
}

envelope make_settle(const identity& payer, const std::array<uint8_t, 32>& chain, uint64_t nonce, const std::array<uint8_t, 32>& job,
                     const settle_plan& plan) {
  return ledger::make_signed_transaction(payer, chain, nonce, [&](schema::Transaction::Body::Builder b) {
    auto s = b.initSettle();
    s.setJobId(kj::arrayPtr(job.data(), 32));
    auto p = s.initPayouts(static_cast<unsigned>(plan.payouts.size()));
    for (unsigned i = 0; i < plan.payouts.size(); ++i) {
      p[i].setTo(kj::arrayPtr(plan.payouts[i].first.bytes.data(), 32));
      p[i].setAmount(plan.payouts[i].second);
    }
  });
}

envelope make_escrow_lock(const identity& payer, const std::array<uint8_t, 32>& chain, uint64_t nonce,
                          const std::array<uint8_t, 32>& job, uint64_t amount) {
  return ledger::make_signed_transaction(payer, chain, nonce, [&](schema::Transaction::Body::Builder b) {
    auto e = b.initEscrowLock();
    e.setJobId(kj::arrayPtr(job.data(), 32));
    e.setAmount(amount);
  });
}

envelope make_escrow_lock(const identity& payer, const std::array<uint8_t, 32>& chain, uint64_t nonce,
                          const std::array<uint8_t, 32>& job, uint64_t amount,
                          const agent_terms& terms) {
  return ledger::make_signed_transaction(payer, chain, nonce, [&](schema::Transaction::Body::Builder b) {
    auto e = b.initEscrowLock();
    e.setJobId(kj::arrayPtr(job.data(), 32));
    e.setAmount(amount);
    auto t = e.initTerms();
    t.setAgent(kj::arrayPtr(terms.agent.bytes.data(), 32));
    t.setMaxPrice(terms.max_price);
    t.setUnits(terms.units);
    t.setDeadlineMs(terms.deadline_ms);
    auto a = t.initAssets(static_cast<unsigned>(terms.assets.size()));
    for (unsigned i = 0; i < terms.assets.size(); ++i)
      a.set(i, kj::arrayPtr(terms.assets[i].data(), 32));
  });
}

envelope make_asset_register(const identity& owner, const std::array<uint8_t, 32>& chain, uint64_t nonce,
                             const std::array<uint8_t, 32>& id, const std::string& kind,
                             const std::array<uint8_t, 32>& metadata, uint64_t price) {
  return ledger::make_signed_transaction(owner, chain, nonce, [&](schema::Transaction::Body::Builder b) {
    auto a = b.initAssetRegister();
    a.setAssetId(kj::arrayPtr(id.data(), 32));
    a.setKind(kind);
    a.setMetadataHash(kj::arrayPtr(metadata.data(), 32));
    a.setPrice(price);
  });
}

envelope make_model_asset(const identity& payer, const std::array<uint8_t, 32>& chain, uint64_t nonce,
                          const std::vector<uint8_t>& checkpoint,
                          std::array<uint8_t, 32>* asset_id,
                          const std::array<uint8_t, 32>* for_job,
                          const std::vector<uint8_t>* torchscript) {
  std::array<uint8_t, 32> meta;
  crypto_generichash(meta.data(), 32, checkpoint.data(), checkpoint.size(), nullptr, 0);
  auto id = meta;
  if (torchscript)
    crypto_generichash(id.data(), 32, torchscript->data(), torchscript->size(), nullptr, 0);
  if (asset_id)
    *asset_id = id;
  return ledger::make_signed_transaction(payer, chain, nonce, [&](schema::Transaction::Body::Builder b) {
    auto a = b.initAssetRegister();
    a.setAssetId(kj::arrayPtr(id.data(), 32));
    a.setKind("trained-model");
    a.setMetadataHash(kj::arrayPtr(meta.data(), 32));
    if (for_job)
      a.setForJob(kj::arrayPtr(for_job->data(), 32));
  });
}

} // namespace aicon::train
