// The rater's verification, scores and settlement (actors/rater): on a real
// training run on digits (4 trainers, honest work logs), a trainer faking
// 10% of its steps with random gradients, and one replaying an earlier
// step's gradient, are caught over 1,000 challenge seeds at least as often
// as 1 - (1 - f)^k promises (>= 99% at the default k); honest trainers are
// never flagged; forged rows, weights and schedule positions are named;
// scores leave self-dealing and unused datasets out; one inflating rater
// does not move the stake-weighted median; settlement pays to the unit.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <filesystem>

#include <sodium.h>

#include "actors/data_node/ingest.hpp"
#include "actors/job/economy.hpp"
#include "actors/rater/scores.hpp"
#include "actors/rater/verify.hpp"
#include "actors/trainer/work.hpp"
#include "runtime/identity.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace aicon::rater;

namespace {

/// A real 4-trainer run: per step the weights before it, and per rank the
/// honest gradient and digest, plus two cheaters' committed digests.
struct recorded_run {
  train::split_data data;
  step_context ctx; // rank filled per check
  std::vector<std::vector<float>> weights;                 ///< before step s
  std::vector<std::vector<train::digest>> honest;          ///< [rank][step]
  std::vector<train::digest> random_cheater, replay_cheater; ///< rank 2's committed log
  std::vector<bool> faked_random, faked_replay;
  static constexpr uint32_t ranks = 4;
  static constexpr uint64_t steps = 200;

  recorded_run() {
    auto t = data::read_csv(std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz",
                            {});
    BOOST_REQUIRE(t);
    data::fit_and_apply(*t, data::transform::kind::standardize);
    data = train::split_rows(*t, 20, 2026);
    ctx.spec = *train::parse_spec("mlp:64-16-10");
    ctx.seed = 5;
    ctx.global_batch = 64;
    ctx.size = ranks;
    auto m = train::model::init(ctx.spec, ctx.seed);
    train::sgd opt;
    opt.lr = 0.05f;
    opt.momentum = 0.9f;
    train::rng gen{99};
    // Exactly 10% of the steps faked, at seeded positions (step 0 has no
    // earlier gradient to replay).
    faked_random.assign(steps, false);
    faked_replay.assign(steps, false);
    auto pr = train::permutation(steps, 41), pp = train::permutation(steps - 1, 43);
    for (uint64_t i = 0; i < steps / 10; ++i) {
      faked_random[pr[i]] = true;
      faked_replay[pp[i] + 1] = true;
    }
    honest.resize(ranks);
    std::vector<float> previous_grad;
    for (uint64_t s = 0; s < steps; ++s) {
      auto [epoch, cursor] = train::schedule_of(s, data.train.rows, ctx.global_batch);
      auto perm = train::epoch_permutation(static_cast<uint32_t>(data.train.rows), ctx.seed, epoch);
      weights.emplace_back(m.params().begin(), m.params().end());
      std::vector<float> sum(m.params().size(), 0.0f);
      std::vector<float> grad2;
      for (uint32_t r = 0; r < ranks; ++r) {
        auto idx = train::batch_slice(perm, cursor, ctx.global_batch, r, ranks);
        auto [g, loss] = train::local_gradient(m, data.train, idx, ctx.global_batch);
        honest[r].push_back(train::step_digest(weights.back(), idx, g));
        for (size_t i = 0; i < g.size(); ++i)
          sum[i] += g[i];
        if (r == 2) {
          // Cheater A: a random gradient on 10% of its steps.
          bool fake = faked_random[s];
          auto sent = g;
          if (fake)
            for (auto& v : sent)
              v = static_cast<float>(gen.uniform() - 0.5) * 1e-2f;
          random_cheater.push_back(train::step_digest(weights.back(), idx, sent));
          // Cheater B: replays its previous step's gradient on 10% of steps.
          bool replay = faked_replay[s];
          replay_cheater.push_back(
            train::step_digest(weights.back(), idx, replay ? previous_grad : g));
          grad2 = g;
        }
      }
      previous_grad = grad2;
      opt.step(m.params(), sum);
    }
  }

  step_claim claim(uint32_t rank, uint64_t s, const train::digest& committed) const {
    auto [epoch, cursor] = train::schedule_of(s, data.train.rows, ctx.global_batch);
    auto perm = train::epoch_permutation(static_cast<uint32_t>(data.train.rows), ctx.seed, epoch);
    return {s, epoch, cursor, weights[s],
            train::batch_slice(perm, cursor, ctx.global_batch, rank, ranks), committed};
  }
};

hash256 seed_of(uint64_t i) {
  hash256 h{};
  crypto_generichash(h.data(), 32, reinterpret_cast<const uint8_t*>(&i), sizeof i, nullptr, 0);
  return h;
}

} // namespace

BOOST_AUTO_TEST_SUITE(rater)

BOOST_AUTO_TEST_CASE(steps_from_another_numeric_environment_are_named) {
  BOOST_TEST(aicon::rater::environment_mismatch("", "").empty()); // built-ins: the same everywhere
  auto same = "libtorch 1.13.0, 1 thread(s), cpu capability avx2";
  BOOST_TEST(aicon::rater::environment_mismatch(same, same).empty());
  auto why = aicon::rater::environment_mismatch("libtorch 1.13.0, 1 thread(s), cpu capability default", same);
  BOOST_TEST(why.find("cannot be re-executed bit for bit here") != std::string::npos, why);
  BOOST_TEST(!aicon::rater::environment_mismatch("", same).empty());
}

// Another environment: the trainer's committed gradient against the
// rater's re-execution, within the tolerance. An honest gradient moved by
// another CPU's rounding passes; a faked one, a gradient that is not the
// committed one, or one moved beyond the tolerance fails, each named.
BOOST_AUTO_TEST_CASE(steps_from_another_environment_are_compared_within_the_tolerance) {
  recorded_run run;
  auto ctx = run.ctx;
  ctx.rank = 1;
  auto gradient_of = [&](uint64_t s) {
    auto c = run.claim(1, s, {});
    auto m = train::model::from_params(ctx.spec, c.weights);
    BOOST_REQUIRE(m);
    return train::local_gradient(*m, run.data.train, c.indices, ctx.global_batch).first;
  };
  // "Another environment": the same gradient with each value's last bits
  // changed, as other kernels round; committed as the trainer would.
  auto nudged = [](std::vector<float> g, double rel) {
    train::rng gen{7};
    for (auto& v : g)
      v = static_cast<float>(v * (1 + rel * (2 * gen.uniform() - 1)));
    return g;
  };
  for (uint64_t s : {0ull, 57ull, 199ull}) {
    auto theirs = nudged(gradient_of(s), 1e-6);
    auto c = run.claim(1, s, {});
    c.committed = train::step_digest(c.weights, c.indices, theirs);
    BOOST_TEST(check_step(ctx, run.data, c).find("differs from the committed digest")
               != std::string::npos); // not the same bits
    double used = -1;
    auto why = check_step_within(ctx, run.data, c, theirs, cross_environment_tolerance, &used);
    BOOST_TEST(why.empty(), why);
    BOOST_TEST(used > 0);
    BOOST_TEST(used < 0.1);
    // Moved by 1%: beyond the tolerance.
    auto far = nudged(gradient_of(s), 1e-2);
    c.committed = train::step_digest(c.weights, c.indices, far);
    why = check_step_within(ctx, run.data, c, far, cross_environment_tolerance);
    BOOST_TEST(why.find("over the tolerance (rtol 1e-04 + atol 1e-06)") != std::string::npos, why);
    // A trainer that skips the work and commits zeros: caught, value by
    // value, on any step whose gradient has a value above atol.
    std::vector<float> zeros(far.size(), 0.0f);
    c.committed = train::step_digest(c.weights, c.indices, zeros);
    why = check_step_within(ctx, run.data, c, zeros, cross_environment_tolerance);
    BOOST_TEST(why.find("over the tolerance") != std::string::npos, why);
    // Another CPU's rounding on a step whose true gradient is tiny (a batch
    // already fit): a few 1e-8 per value is within atol, though far beyond
    // 1e-4 of that gradient's norm.
    auto tiny = gradient_of(s);
    for (auto& v : tiny)
      v *= 1e-5f;
    auto rounded = tiny;
    {
      train::rng gen{11};
      for (auto& v : rounded)
        v += static_cast<float>(3e-8 * (2 * gen.uniform() - 1));
    }
    double tiny_norm = 0, moved = 0, worst = 0;
    for (size_t i = 0; i < tiny.size(); ++i) {
      tiny_norm += double(tiny[i]) * tiny[i];
      double d = double(rounded[i]) - tiny[i];
      moved += d * d;
      worst = std::max(worst, std::fabs(d) / (cross_environment_tolerance.rtol * std::fabs(tiny[i])
                                              + cross_environment_tolerance.atol));
    }
    BOOST_TEST(std::sqrt(moved) > cross_environment_tolerance.rtol * std::sqrt(tiny_norm));
    BOOST_TEST(worst < 0.1);
    // A gradient other than the committed one (the honest one sent for a
    // step it faked).
    c.committed = run.random_cheater[s];
    auto honest = gradient_of(s);
    if (run.faked_random[s]) {
      why = check_step_within(ctx, run.data, c, honest, cross_environment_tolerance);
      BOOST_TEST(why.find("not the one it committed to") != std::string::npos, why);
    }
    // The wrong number of values.
    honest.pop_back();
    why = check_step_within(ctx, run.data, c, honest, cross_environment_tolerance);
    BOOST_TEST(why.find("values, the model") != std::string::npos, why);
  }
  // Rank 2's faked steps, its noise committed and sent: caught within the
  // tolerance too, and its honest steps pass.
  size_t caught = 0, flagged_honest = 0;
  for (uint64_t s = 0; s < recorded_run::steps; ++s) {
    auto c = run.claim(2, s, run.random_cheater[s]);
    auto ctx2 = run.ctx;
    ctx2.rank = 2;
    // The cheater's sent gradient: what it committed (recomputed here as it
    // did: noise on faked steps, the honest gradient otherwise).
    auto m = train::model::from_params(ctx2.spec, c.weights);
    BOOST_REQUIRE(m);
    auto g = train::local_gradient(*m, run.data.train, c.indices, ctx2.global_batch).first;
    if (run.faked_random[s]) {
      // Not reproducible here bit for bit (the recorded run's noise): a
      // fresh noise gradient, committed, stands for it.
      train::rng gen{s};
      for (auto& v : g)
        v = static_cast<float>(gen.uniform() - 0.5) * 1e-2f;
      c.committed = train::step_digest(c.weights, c.indices, g);
    }
    auto why = check_step_within(ctx2, run.data, c, g, cross_environment_tolerance);
    if (run.faked_random[s])
      caught += why.empty() ? 0 : 1;
    else
      flagged_honest += why.empty() ? 0 : 1;
  }
  BOOST_TEST(caught == recorded_run::steps / 10);
  BOOST_TEST(flagged_honest == 0u);
}

BOOST_AUTO_TEST_CASE(the_sample_size_follows_the_formula) {
  BOOST_TEST(sample_size(0.1, 0.99) == 44u);
  BOOST_TEST(detection_probability(0.1, 44) >= 0.99);
  BOOST_TEST(detection_probability(0.1, 43) < 0.99);
  BOOST_TEST(sample_size(0.5, 0.999) == 10u);
  BOOST_TEST(sample_size(0, 0.99) == 0u); // no such sample
  auto a = choose_steps(seed_of(1), 0, 200, 44), b = choose_steps(seed_of(1), 0, 200, 44);
  BOOST_TEST((a == b));
  BOOST_TEST((choose_steps(seed_of(1), 1, 200, 44) != a)); // per trainer
  std::set<uint64_t> distinct(a.begin(), a.end());
  BOOST_TEST(distinct.size() == 44u);
  BOOST_TEST(choose_steps(seed_of(2), 0, 10, 44).size() == 10u);
}

BOOST_AUTO_TEST_CASE(cheaters_are_caught_as_often_as_promised_and_honest_never_flagged) {
  recorded_run run;
  const uint32_t k = sample_size(0.1, 0.99);
  const int seeds = 1000;
  int caught_random = 0, caught_replay = 0;
  uint64_t honest_checks = 0, false_flags = 0;
  for (int i = 0; i < seeds; ++i) {
    auto seed = seed_of(static_cast<uint64_t>(i));
    for (uint32_t r = 0; r < recorded_run::ranks; ++r) {
      auto picks = choose_steps(seed, r, recorded_run::steps, k);
      step_context ctx = run.ctx;
      ctx.rank = r;
      if (r == 2) {
        // The cheaters stand in rank 2's place; one faked pick suffices.
        bool hit_random = false, hit_replay = false;
        for (auto s : picks) {
          if (!hit_random && run.faked_random[s])
            hit_random = !check_step(ctx, run.data, run.claim(r, s, run.random_cheater[s])).empty();
          if (!hit_replay && run.faked_replay[s])
            hit_replay = !check_step(ctx, run.data, run.claim(r, s, run.replay_cheater[s])).empty();
        }
        caught_random += hit_random ? 1 : 0;
        caught_replay += hit_replay ? 1 : 0;
      }
      // Honest work is checked in full on a tenth of the seeds (the
      // digests do not depend on the seed; the picks do).
      if (r != 2 && i % 10 == 0)
        for (auto s : picks) {
          ++honest_checks;
          auto why = check_step(ctx, run.data, run.claim(r, s, run.honest[r][s]));
          false_flags += why.empty() ? 0 : 1;
        }
    }
  }
  size_t faked = std::count(run.faked_random.begin(), run.faked_random.end(), true);
  double f = static_cast<double>(faked) / recorded_run::steps;
  double promised = detection_probability(f, k);
  BOOST_TEST_MESSAGE("random-gradient cheater: " << faked << " of 200 steps faked (f = " << f
                     << "), caught " << caught_random << "/" << seeds << ", promised "
                     << promised << "; replay cheater caught " << caught_replay << "/" << seeds
                     << "; honest: " << false_flags << " flags in " << honest_checks
                     << " challenges");
  BOOST_TEST(caught_random >= promised * seeds);
  BOOST_TEST(caught_random >= 0.99 * seeds);
  size_t replayed = std::count(run.faked_replay.begin(), run.faked_replay.end(), true);
  BOOST_TEST(caught_replay >= detection_probability(static_cast<double>(replayed) / 200, k) * seeds);
  BOOST_TEST(honest_checks >= 1000u);
  BOOST_TEST(false_flags == 0u);
}

BOOST_AUTO_TEST_CASE(forged_claims_are_named) {
  recorded_run run;
  step_context ctx = run.ctx;
  ctx.rank = 1;
  auto good = run.claim(1, 17, run.honest[1][17]);
  BOOST_TEST(check_step(ctx, run.data, good).empty());
  auto rows = good;
  rows.indices[0] ^= 1;
  BOOST_TEST(check_step(ctx, run.data, rows).find("other rows") != std::string::npos);
  auto weights = good;
  weights.weights[3] += 1e-3f;
  BOOST_TEST(check_step(ctx, run.data, weights).find("differs") != std::string::npos);
  auto place = good;
  place.cursor += 64;
  BOOST_TEST(check_step(ctx, run.data, place).find("the schedule") != std::string::npos);
  auto shape = good;
  shape.weights.pop_back();
  BOOST_TEST(check_step(ctx, run.data, shape).find("do not fit") != std::string::npos);
  // Another rank's digest for the same step is not this rank's work.
  auto other = run.claim(1, 17, run.honest[0][17]);
  BOOST_TEST(!check_step(ctx, run.data, other).empty());
}

BOOST_AUTO_TEST_CASE(scores_skip_self_dealing_and_unused_datasets) {
  wallet payer{}, alice{}, bob{}, owner{};
  payer[0] = 1;
  alice[0] = 2;
  bob[0] = 3;
  owner[0] = 4;
  id32 used{}, unused{}, model{};
  used[0] = 10;
  unused[0] = 11;
  model[0] = 12;
  job_record j1;
  j1.job[0] = 1;
  j1.payer = payer;
  j1.paid = 100;
  j1.trainer_units = {{alice, 300}, {bob, 100}, {payer, 500}}; // payer trains its own job
  j1.dataset = used;
  j1.dataset_owner = owner;
  j1.has_dataset = true;
  j1.model = model;
  j1.model_owner = owner;
  j1.has_model = true;
  job_record j2 = j1; // the same dataset, second paying job
  j2.job[0] = 2;
  job_record j3 = j1; // the owner pays for its own dataset: no score
  j3.job[0] = 3;
  j3.payer = owner;
  j3.trainer_units = {{alice, 100}};
  job_record j4 = j1; // never paid: the dataset gains nothing
  j4.job[0] = 4;
  j4.paid = 0;
  j4.dataset = unused;
  auto s = score_epoch({j1, j2, j3, j4});
  BOOST_TEST(s.trainers.count(payer) == 0u);
  BOOST_TEST(s.trainers.at(alice) == 300u * 3 + 100u);
  BOOST_TEST(s.datasets.at(used) == 2u);
  BOOST_TEST(s.datasets.count(unused) == 0u);
  auto reward = split_reward(s, 1000);
  uint64_t total = 0;
  for (auto& [w, v] : reward)
    total += v;
  BOOST_TEST(total <= 1000u);
  BOOST_TEST(reward.count(payer) == 0u);
  BOOST_TEST(reward.at(alice) == 800u * 1000 / 1300); // 80% by verified units
  BOOST_TEST(reward.at(owner) == 200u);               // datasets 10% + models 10%
}

BOOST_AUTO_TEST_CASE(one_inflating_rater_does_not_move_the_median) {
  // Five raters with equal stake; four honest report 400, one says 10^9.
  std::vector<std::pair<uint64_t, uint64_t>> reports{
    {400, 10}, {400, 10}, {400, 10}, {400, 10}, {1'000'000'000, 10}};
  BOOST_TEST(stake_weighted_median(reports) == 400u);
  // Honest reports that differ a little: the median stays among them.
  reports = {{398, 10}, {400, 10}, {401, 10}, {402, 10}, {1'000'000'000, 10}};
  BOOST_TEST(stake_weighted_median(reports) == 401u);
  // A rater holding more than half the stake decides: stake is the defence.
  reports = {{400, 10}, {400, 10}, {9'999, 30}};
  BOOST_TEST(stake_weighted_median(reports) == 9'999u);
  BOOST_TEST(stake_weighted_median({}) == 0u);
}

BOOST_AUTO_TEST_CASE(settlement_pays_verified_work_to_the_unit) {
  wallet a{}, b{}, c{}, data_owner{};
  a[0] = 1;
  b[0] = 2;
  c[0] = 3;
  data_owner[0] = 9;
  std::vector<trainer_result> t{{a, 200, true, 0}, {b, 100, true, 0}, {c, 150, false, 1000}};
  auto s = settle_job(10'000, t, 20, &data_owner, 500, nullptr, 0, 50);
  BOOST_REQUIRE(s.why.empty());
  BOOST_REQUIRE(s.payouts.size() == 3u);
  BOOST_TEST(s.payouts[0].second == 4000u);
  BOOST_TEST(s.payouts[1].second == 2000u);
  BOOST_TEST(s.payouts[2].second == 500u);
  BOOST_TEST(s.refund == 10'000u - 6500u);
  BOOST_REQUIRE(s.slashes.size() == 1u);
  BOOST_TEST((s.slashes[0].first == c));
  BOOST_TEST(s.slashes[0].second == 500u);
  // Short budget: trainers share what is left after the prices pro rata.
  auto short_budget = settle_job(3'500, t, 20, &data_owner, 500, nullptr, 0, 50);
  BOOST_TEST(short_budget.payouts[0].second == 2000u);
  BOOST_TEST(short_budget.payouts[1].second == 1000u);
  BOOST_TEST(short_budget.refund == 0u);
  auto broke = settle_job(100, t, 20, &data_owner, 500, nullptr, 0, 50);
  BOOST_TEST(broke.why.find("does not cover") != std::string::npos);
}

// Settlement pays each passed rank its host's lease price (what the host
// offered), never above the terms' cap; a host without a lease the cap; a
// failed rank nothing; owners their asset prices, unless they are the payer.
BOOST_AUTO_TEST_CASE(settlement_pays_lease_prices_under_the_cap) {
  auto a = identity::generate().id(), b = identity::generate().id(), c = identity::generate().id();
  auto payer = identity::generate().id(), owner = identity::generate().id();
  train::rating r;
  r.verdicts = {{0, a, true, {}, 0, 100}, {1, a, true, {}, 0, 100}, {2, b, true, {}, 0, 100},
                {3, c, true, {}, 0, 100}, {4, c, false, "faked", 0, 0}};
  std::map<node_id, uint64_t> leases{{a, 1}, {b, 5}}; // b offered above the cap of 3
  auto plan = train::plan_settlement(10'000, r, 100, 3, payer, train::asset_terms{owner, "dataset", 50},
                                     train::asset_terms{payer, "model", 40}, leases);
  BOOST_REQUIRE(plan.why.empty());
  std::map<node_id, uint64_t> paid(plan.payouts.begin(), plan.payouts.end());
  BOOST_TEST(paid[a] == 2 * 100 * 1u); // two ranks at its lease price
  BOOST_TEST(paid[b] == 100 * 3u);     // capped
  BOOST_TEST(paid[c] == 100 * 3u);     // no lease: the cap; its failed rank nothing
  BOOST_TEST(paid[owner] == 50u);
  BOOST_TEST(plan.model == 0u);        // the payer's own model: nothing moves
  BOOST_TEST(plan.trainers == 800u);
  BOOST_TEST(plan.refund == 10'000u - 800 - 50);
  // An escrow short of the work: no plan, a reason.
  auto short_plan = train::plan_settlement(700, r, 100, 3, payer, std::nullopt, std::nullopt, leases);
  BOOST_TEST(short_plan.why.find("does not cover the verified work (800)") != std::string::npos,
             short_plan.why);
  // A ring re-formed at step 60 of 100: its rated ranks ran (and showed the
  // rater) 40 steps each and are paid for those; a count above the job's
  // steps is paid the job's steps at most.
  train::rating reformed;
  reformed.verdicts = {{0, a, true, {}, 0, 40}, {1, b, true, {}, 0, 40}, {2, c, true, {}, 0, 500}};
  auto part = train::plan_settlement(10'000, reformed, 100, 3, payer, std::nullopt, std::nullopt,
                                     leases);
  BOOST_REQUIRE(part.why.empty());
  std::map<node_id, uint64_t> got(part.payouts.begin(), part.payouts.end());
  BOOST_TEST(got[a] == 40 * 1u);
  BOOST_TEST(got[b] == 40 * 3u);
  BOOST_TEST(got[c] == 100 * 3u);
  BOOST_TEST(part.refund == 10'000u - 40 - 120 - 300);
}

// A trainer's signature over its work log binds the ring's size and the
// log's first step with the session, rank, steps and root: whoever relays
// the log (a job host listing an earlier ring) cannot pad or trim the
// ring's ranks (which moves a rank's slice of each batch) or move its
// start (which moves the steps it is paid for) without the signature
// failing.
BOOST_AUTO_TEST_CASE(a_work_log_signature_binds_the_ring_size_first_step_and_terms) {
  auto trainer = aicon::identity::generate();
  std::array<uint8_t, 32> session{}, root{};
  session[0] = 7;
  root[0] = 9;
  train::train_terms t;
  t.model = "mlp:64-64-10";
  t.data_file = "digits.csv.gz";
  t.global_batch = 32;
  t.seed = 7;
  auto terms = train::terms_digest(t);
  auto bytes = train::worklog_signing_bytes(session, 1, 4, 100, 50, root, terms);
  auto sig = trainer.sign(bytes);
  auto holds = [&](uint32_t rank, uint32_t size, uint64_t first, uint64_t steps,
                   train::digest signed_terms) {
    return aicon::verify_signature(trainer.id(),
                                   train::worklog_signing_bytes(session, rank, size, first, steps,
                                                                root, signed_terms),
                                   {sig.data(), sig.size()});
  };
  BOOST_TEST(holds(1, 4, 100, 50, terms));
  BOOST_TEST(!holds(1, 5, 100, 50, terms)); // a padded ring
  BOOST_TEST(!holds(1, 3, 100, 50, terms)); // a trimmed one
  BOOST_TEST(!holds(1, 4, 0, 50, terms));   // another start
  BOOST_TEST(!holds(1, 4, 100, 51, terms)); // more steps
  BOOST_TEST(!holds(2, 4, 100, 50, terms)); // another rank
  // Other terms are another digest, so another signed log: each field.
  std::vector<train::train_terms> other(8, t);
  other[0].model = "mlp:64-32-10";
  other[1].data_file = "other.csv";
  other[2].dataset = std::string(32, 'x');
  other[3].standardize = true;
  other[4].test_percent = 20;
  other[5].global_batch = 64;
  other[6].split_seed = 1;
  other[7].seed = 8;
  for (size_t i = 0; i < other.size(); ++i)
    BOOST_TEST(!holds(1, 4, 100, 50, train::terms_digest(other[i])), "field " << i);
}

BOOST_AUTO_TEST_CASE(a_signed_contribution_convicts_only_its_own_signer) {
  // What a rank of a ring of two signed for the floats it sent, against
  // the gradient it committed to: the same hash passes; another hash under
  // its host's signature convicts it; a signature that is not its host's
  // (made up by the partner who shows it, or for another rank, step or
  // session) is not held against it.
  auto host = aicon::identity::generate(), partner = aicon::identity::generate();
  std::array<uint8_t, 32> session{};
  session[0] = 3;
  std::vector<float> committed{0.5f, -1.25f, 3.0f}, sent{0.5f, -1.25f, 3.5f};
  auto signed_for = [&](const aicon::identity& by, const std::vector<float>& floats,
                        uint32_t rank, uint64_t step) {
    auto h = train::contribution_hash(floats);
    return std::pair{h, by.sign(train::contribution_signing_bytes(session, rank, step, h))};
  };
  auto check = [&](std::pair<train::digest, aicon::signature> record, bool& by_host) {
    return aicon::rater::check_contribution(session, 1, 40, committed, record.first,
                                     {record.second.data(), 64}, host.id(), &by_host);
  };
  bool by_host = false;
  BOOST_TEST(check(signed_for(host, committed, 1, 40), by_host).empty());
  BOOST_TEST(by_host);
  auto why = check(signed_for(host, sent, 1, 40), by_host);
  BOOST_TEST(by_host);
  BOOST_TEST(why.find("step 40: the gradient it sent its ring partner") != std::string::npos, why);
  BOOST_TEST(why.find("it poisoned the ring's sum") != std::string::npos, why);
  for (auto forged : {signed_for(partner, sent, 1, 40), signed_for(host, sent, 0, 40),
                      signed_for(host, sent, 1, 41)}) {
    BOOST_TEST(check(forged, by_host).empty());
    BOOST_TEST(!by_host);
  }
  // The hash covers every float: one changed value is another hash.
  BOOST_TEST((train::contribution_hash(committed) != train::contribution_hash(sent)));
}

BOOST_AUTO_TEST_CASE(a_vote_on_weights_fails_the_odd_ranks_or_everyone_in_a_tie) {
  using aicon::rater::vote_on_weights;
  hash256 honest{}, zeros{}, other{};
  honest[0] = 1;
  zeros[0] = 2;
  other[0] = 3;
  // All the same: nobody out.
  auto same = vote_on_weights({{0, honest}, {1, honest}, {2, honest}}, 3);
  BOOST_TEST(!same.disputed);
  BOOST_TEST(same.odd.empty());
  // One of four shows other weights: it alone is out.
  auto one = vote_on_weights({{2, zeros}, {0, honest}, {1, honest}, {3, honest}}, 4);
  BOOST_TEST(!one.disputed);
  BOOST_TEST((one.odd == std::vector<uint32_t>{2}));
  BOOST_TEST(one.majority == 3u);
  // Two against two (one host's two ranks cheating alike): no majority.
  BOOST_TEST(vote_on_weights({{0, honest}, {1, honest}, {2, zeros}, {3, zeros}}, 4).disputed);
  // A ring of two that disagrees: nobody can be believed.
  BOOST_TEST(vote_on_weights({{0, honest}, {1, zeros}}, 2).disputed);
  // Three ways among five: 3 of 5 is a strict majority; 2 of 4 is none.
  auto three = vote_on_weights({{0, honest}, {1, honest}, {2, honest}, {3, zeros}, {4, other}}, 5);
  BOOST_TEST(!three.disputed);
  BOOST_TEST((three.odd == std::vector<uint32_t>{3, 4}));
  BOOST_TEST(vote_on_weights({{0, honest}, {1, honest}, {2, zeros}, {3, other}}, 4).disputed);
  // A rank that did not answer abstains: two honest and a cheater of a
  // ring of four are no majority of the ring, and decide nothing (nobody
  // out, the honest ones included); three of four still decide.
  auto short_vote = vote_on_weights({{0, honest}, {1, zeros}, {2, honest}}, 4);
  BOOST_TEST(!short_vote.disputed);
  BOOST_TEST(short_vote.odd.empty());
  auto enough = vote_on_weights({{0, honest}, {1, zeros}, {2, honest}, {3, honest}}, 4);
  BOOST_TEST((enough.odd == std::vector<uint32_t>{1}));
  // Alone (the others' evidence gone): nothing to compare, nobody out.
  auto alone = vote_on_weights({{0, zeros}}, 3);
  BOOST_TEST(!alone.disputed);
  BOOST_TEST(alone.odd.empty());
}

BOOST_AUTO_TEST_SUITE_END()
