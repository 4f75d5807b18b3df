#include "actors/rater/verify.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include <fmt/format.h>
#include <sodium.h>

namespace aicon::rater {

uint32_t sample_size(double f, double target) {
  if (!(f > 0 && f < 1) || !(target > 0 && target < 1))
    return 0;
  return static_cast<uint32_t>(std::ceil(std::log(1 - target) / std::log(1 - f)));
}

double detection_probability(double f, uint32_t k) {
  return 1 - std::pow(1 - f, static_cast<double>(k));
}

hash256 challenge_seed(const hash256& tip_hash, const hash256& session,
                       const std::vector<hash256>& log_roots, const hash256& nonce) {
  crypto_generichash_state h;
  crypto_generichash_init(&h, nullptr, 0, 32);
  crypto_generichash_update(&h, reinterpret_cast<const uint8_t*>("aicon-challenge-v1"), 18);
  crypto_generichash_update(&h, tip_hash.data(), 32);
  crypto_generichash_update(&h, session.data(), 32);
  for (auto& r : log_roots)
    crypto_generichash_update(&h, r.data(), 32);
  crypto_generichash_update(&h, nonce.data(), 32);
  hash256 out;
  crypto_generichash_final(&h, out.data(), 32);
  return out;
}

std::vector<uint64_t> choose_steps(const hash256& seed, uint32_t rank, uint64_t steps, uint32_t k) {
  std::vector<uint64_t> out;
  if (k >= steps) {
    for (uint64_t s = 0; s < steps; ++s)
      out.push_back(s);
    return out;
  }
  std::set<uint64_t> taken;
  for (uint64_t counter = 0; out.size() < k; ++counter) {
    uint8_t in[32 + 4 + 8], h[8];
    std::memcpy(in, seed.data(), 32);
    std::memcpy(in + 32, &rank, 4);
    std::memcpy(in + 36, &counter, 8);
    crypto_generichash(h, sizeof h, in, sizeof in, nullptr, 0);
    uint64_t v;
    std::memcpy(&v, h, 8);
    // Rejection sampling keeps the draw uniform.
    uint64_t limit = UINT64_MAX - UINT64_MAX % steps;
    if (v >= limit)
      continue;
    auto s = v % steps;
    if (taken.insert(s).second)
      out.push_back(s);
  }
  return out;
}

std::string environment_mismatch(const std::string& theirs, const std::string& mine) {
  if (theirs == mine)
    return {};
  return fmt::format("its steps ran in \"{}\", this rater's in \"{}\": they cannot be "
                     "re-executed bit for bit here",
                     theirs.empty() ? "the built-in numerics" : theirs,
                     mine.empty() ? "the built-in numerics" : mine);
}

namespace {

/// The rows and the re-executed gradient of a claimed step, or why the
/// claim does not fit the job's schedule and model.
std::string reexecute(const step_context& ctx, const train::split_data& data,
                      const step_claim& claim, std::vector<float>& grad) {
  auto [epoch, cursor] = train::schedule_of(claim.step, data.train.rows, ctx.global_batch);
  if (epoch != claim.epoch || cursor != claim.cursor)
    return fmt::format("step {}: the trainer says epoch {} cursor {}, the schedule {} and {}",
                       claim.step, claim.epoch, claim.cursor, epoch, cursor);
  auto perm = train::epoch_permutation(static_cast<uint32_t>(data.train.rows), ctx.seed,
                                       claim.epoch);
  auto idx = train::batch_slice(perm, claim.cursor, ctx.global_batch, ctx.rank, ctx.size);
  if (idx.empty())
    return fmt::format("step {}: cursor {} is past the {} training rows", claim.step,
                       claim.cursor, data.train.rows);
  if (idx != claim.indices)
    return fmt::format("step {}: the trainer used other rows than its slice of the batch",
                       claim.step);
  auto m = train::model::from_params(ctx.spec, claim.weights);
  if (!m)
    return fmt::format("step {}: the weights do not fit the model", claim.step);
  grad = train::local_gradient(*m, data.train, idx, ctx.global_batch).first;
  return {};
}

} // namespace

std::string check_step(const step_context& ctx, const train::split_data& data,
                       const step_claim& claim, std::vector<float>* gradient) {
  std::vector<float> grad;
  if (auto why = reexecute(ctx, data, claim, grad); !why.empty())
    return why;
  auto d = train::step_digest(claim.weights, claim.indices, grad);
  if (d != claim.committed)
    return fmt::format("step {}: re-executed, the gradient differs from the committed digest",
                       claim.step);
  if (gradient)
    *gradient = std::move(grad);
  return {};
}

std::string check_contribution(const std::array<uint8_t, 32>& session, uint32_t rank,
                               uint64_t step, std::span<const float> committed_gradient,
                               const train::digest& signed_hash,
                               std::span<const uint8_t> signature, const node_id& host,
                               bool* signed_by_host) {
  *signed_by_host =
    verify_signature(host, train::contribution_signing_bytes(session, rank, step, signed_hash),
                     signature);
  if (!*signed_by_host)
    return {};
  if (train::contribution_hash(committed_gradient) != signed_hash)
    return fmt::format("step {}: the gradient it sent its ring partner (its host signed its "
                       "hash) is not the one it committed to in its log: it poisoned the ring's "
                       "sum",
                       step);
  return {};
}

std::string check_step_within(const step_context& ctx, const train::split_data& data,
                              const step_claim& claim, std::span<const float> gradient,
                              tolerance tol, double* used) {
  std::vector<float> grad;
  if (auto why = reexecute(ctx, data, claim, grad); !why.empty())
    return why;
  if (gradient.size() != grad.size())
    return fmt::format("step {}: the trainer's gradient has {} values, the model {}", claim.step,
                       gradient.size(), grad.size());
  if (train::step_digest(claim.weights, claim.indices, gradient) != claim.committed)
    return fmt::format("step {}: the gradient the trainer sent is not the one it committed to "
                       "(its digest differs)",
                       claim.step);
  double share = 0;
  size_t worst = 0;
  for (size_t i = 0; i < grad.size(); ++i) {
    double d = std::fabs(static_cast<double>(gradient[i]) - grad[i]);
    double bound = tol.rtol * std::fabs(static_cast<double>(grad[i])) + tol.atol;
    double s_i = std::isfinite(d) ? d / bound : HUGE_VAL;
    if (!(s_i <= share)) {
      share = s_i;
      worst = i;
    }
  }
  if (used)
    *used = share;
  if (!(share <= 1))
    return fmt::format("step {}: re-executed in this rater's environment, value {} of the "
                       "gradient is {:.3g} where the trainer's is {:.3g}, over the tolerance "
                       "(rtol {:.0e} + atol {:.0e})",
                       claim.step, worst, grad[worst], gradient[worst], tol.rtol, tol.atol);
  return {};
}

weights_vote vote_on_weights(const std::vector<std::pair<uint32_t, hash256>>& digests,
                             size_t ring) {
  weights_vote out;
  out.voters = digests.size();
  std::map<hash256, std::vector<uint32_t>> groups;
  for (auto& [rank, d] : digests)
    groups[d].push_back(rank);
  const std::vector<uint32_t>* largest = nullptr;
  for (auto& [_, ranks] : groups)
    if (!largest || ranks.size() > largest->size())
      largest = &ranks;
  if (!largest)
    return out;
  out.majority = largest->size();
  if (largest->size() * 2 <= std::max(ring, digests.size())) {
    out.disputed = digests.size() >= ring && groups.size() > 1;
    return out;
  }
  for (auto& [_, ranks] : groups)
    if (&ranks != largest)
      out.odd.insert(out.odd.end(), ranks.begin(), ranks.end());
  std::sort(out.odd.begin(), out.odd.end());
  return out;
}

} // namespace aicon::rater
