// The rater's checks of training work (Proof of Value), pure functions the
// rater role calls and the tests drive directly.
//
// Each trainer commits a work log: per step, BLAKE2b(weights before, batch
// indices, local gradient), and signs the Merkle root. After the session the
// rater draws, for every trainer, k of its logged steps from a seed the
// trainer could not know in advance (BLAKE2b of the chain tip at rating
// time, the session, every log root and fresh rater randomness), fetches the
// weights before each drawn step, recomputes the batch slice from the job's
// seed and the local gradient from its own copy of the data, and compares
// the digest with the committed one. A trainer that faked a fraction f of
// its steps survives k independent draws with probability (1 - f)^k, so
//   detection = 1 - (1 - f)^k,   k = ceil(ln(1 - target) / ln(1 - f)),
// and the draws here are without replacement, which only helps. The
// defaults (f = 0.1, target 0.99) give k = 44.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "actors/ledger/hashing.hpp"
#include "actors/trainer/work.hpp"
#include "runtime/identity.hpp"

namespace aicon::rater {

using ledger::hash256;

/// Samples per trainer for `target` detection of a trainer faking a
/// fraction `f` of its steps (0 < f < 1, 0 < target < 1).
uint32_t sample_size(double f, double target);

/// 1 - (1 - f)^k.
double detection_probability(double f, uint32_t k);

/// The challenge seed: BLAKE2b("aicon-challenge-v1" ‖ tip hash ‖ session ‖
/// log roots ‖ nonce).
hash256 challenge_seed(const hash256& tip_hash, const hash256& session,
                       const std::vector<hash256>& log_roots, const hash256& nonce);

/// `k` distinct step offsets in [0, steps) for trainer `rank`, drawn from
/// `seed` (all of them when k >= steps). Deterministic.
std::vector<uint64_t> choose_steps(const hash256& seed, uint32_t rank, uint64_t steps, uint32_t k);

/// What a re-executed step needs to know of its job.
struct step_context {
  train::model_spec spec;
  uint64_t seed = 0;          ///< the job's seed (epoch permutations)
  uint32_t global_batch = 0;
  uint32_t rank = 0, size = 1;
};

/// Whether a rater whose numeric environment is `mine` can re-execute, bit
/// for bit, steps a trainer ran in `theirs` (SessionLog.environment): "" if
/// so, else why not. Steps from another environment are compared within a
/// tolerance instead (check_step_within): an honest trainer on other CPU
/// kernels computes other bits.
std::string environment_mismatch(const std::string& theirs, const std::string& mine);

/// The ranks of a ring hold the same weights before every step, bit for
/// bit. A rank's digest binds the weights it shows, not that they are the
/// ring's: one that computed its gradient at weights of its choosing (all
/// zeros make an MLP's gradient nearly free) and shows those would pass
/// re-execution. So for each challenged step the rater asks every rank for
/// the digest of its weights before it and votes among the `ring` ranks:
/// ranks outside a strict majority of the ring are `odd` and fail; with no
/// strict majority and every rank's vote in, every rank fails
/// (`disputed`); a rank that did not answer (its evidence dropped, its host
/// gone) abstains, and without a majority such a vote decides nothing.
/// Neither is slashed: a vote names no culprit when liars hold the
/// majority.
struct weights_vote {
  bool disputed = false;
  std::vector<uint32_t> odd;    ///< ranks whose weights differ from the majority's
  size_t majority = 0, voters = 0;
};
weights_vote vote_on_weights(const std::vector<std::pair<uint32_t, hash256>>& digests,
                             size_t ring);

/// One challenged step: the weights before it (from the trainer) and the
/// digest the trainer committed for it.
struct step_claim {
  uint64_t step = 0, epoch = 0, cursor = 0;
  std::vector<float> weights;
  std::vector<uint32_t> indices; ///< as the trainer says it used
  train::digest committed{};
};

/// "" when the step re-executes to the committed digest, else why not;
/// with `gradient`, the re-executed (so committed) gradient goes there.
std::string check_step(const step_context& ctx, const train::split_data& data,
                       const step_claim& claim, std::vector<float>* gradient = nullptr);

/// A ring of two on a stream: the partner's record of what rank `rank`
/// signed for the gradient it sent at `step` (TrainQuery.partnerContribution)
/// against the gradient it committed to: "" when they are the same, else
/// why not (its host's own signature on other floats: it poisoned the
/// ring's sum). A record the host did not sign is not held against it.
std::string check_contribution(const std::array<uint8_t, 32>& session, uint32_t rank,
                               uint64_t step, std::span<const float> committed_gradient,
                               const train::digest& signed_hash,
                               std::span<const uint8_t> signature, const node_id& host,
                               bool* signed_by_host);

/// The tolerance of a step from another numeric environment, value by
/// value: the trainer's gradient g_t and this rater's re-execution g_r may
/// differ by
///   |g_t[i] - g_r[i]| <= rtol |g_r[i]| + atol      for every i.
/// Other CPU kernels (avx2 against default, another BLAS) round each float32
/// value differently by a few 1e-8 whatever the gradient's size: measured
/// here on the digits CNN at the same weights, the largest difference of any
/// value stays at or below 4e-8 from the first step (||g|| = 0.14) to step
/// 2000 (||g|| = 2e-6), so a bound relative to the gradient alone would flag
/// honest late steps; atol covers that floor 25 times over. Per value, a
/// gradient replaced by zeros passes only where every true value is below
/// atol: a step that would move no weight by more than lr x 1e-6.
struct tolerance {
  double rtol = 1e-4;
  double atol = 1e-6; ///< per value
};
constexpr tolerance cross_environment_tolerance{};

/// A step from another numeric environment: `gradient` is the trainer's own
/// (sent with the evidence); it must hash, with the claim's weights and
/// rows, to the committed digest (so it is the gradient the trainer
/// committed to before the challenge), and lie within `tol` of this rater's
/// re-execution. "" when both hold, else why not; `used` gets the largest
/// share of its value's tolerance any difference takes (<= 1 passes).
std::string check_step_within(const step_context& ctx, const train::split_data& data,
                              const step_claim& claim, std::span<const float> gradient,
                              tolerance tol, double* used = nullptr);

} // namespace aicon::rater
