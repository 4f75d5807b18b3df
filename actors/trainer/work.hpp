// What a trainer commits to and what a verifier re-executes: the step
// digest (BLAKE2b of weights before, batch indices and local gradient), the
// slice of the global batch a rank takes, the train/test split, and the
// local gradient itself. The trainer and the rater call the same functions,
// so a step re-executed on another host gives the same bits (see model.hpp
// for the determinism rules).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "actors/data_node/ingest.hpp"
#include "actors/trainer/model.hpp"

namespace aicon::train {

using digest = std::array<uint8_t, 32>;

/// A step's digest in the work log: BLAKE2b-256 keyed "aicon-step-v2" over
/// weights_hash(weights before) ‖ the batch indices ‖ contribution_hash(the
/// local gradient). The gradient's hash is the one a rank of a signed ring
/// of two signs for what it sends (below), so one pass over the gradient
/// serves both.
digest step_digest(std::span<const float> weights_before, std::span<const uint32_t> indices,
                   std::span<const float> local_gradient);
digest step_digest_of(const digest& weights_hash, std::span<const uint32_t> indices,
                      const digest& gradient_hash);
/// BLAKE2b-256 of float32 weights (what TrainQuery.weightsDigest answers).
digest weights_hash(std::span<const float> weights);

/// A ring of two exchanges whole gradients (stream transport), so what a
/// rank sent its partner can be bound to it: BLAKE2b-256 of the gradient
/// floats it sent ("aicon-contribution-v1" keyed), which it signs with its
/// host's key as "aicon-contribution-v1" ‖ session ‖ rank (4, LE) ‖ step
/// (8, LE) ‖ hash. The partner checks the hash against the floats it got,
/// keeps the signature, and shows it to the rater: a rank that sent other
/// floats than the gradient it committed to in its log is caught by its own
/// signature, and no partner can make one up.
inline constexpr std::string_view contribution_key = "aicon-contribution-v1";
digest contribution_hash(std::span<const float> gradient);
std::vector<uint8_t> contribution_signing_bytes(const std::array<uint8_t, 32>& session,
                                                uint32_t rank, uint64_t step, const digest& hash);

/// The hash and signature a rank sends its partner ride in the allreduce's
/// vector itself, past the gradient and the two control words: 96 bytes as
/// 48 floats of 16 bits each (whole numbers, exact under the partner's
/// adding its zeros), in rank 0's block then rank 1's.
constexpr size_t contribution_floats = 48;
void put_contribution(std::span<float> block, const digest& hash,
                      const std::array<uint8_t, 64>& signature);
/// The hash and signature in a block; false if a value is not a whole
/// number in [0, 65535] (not what put_contribution wrote).
bool get_contribution(std::span<const float> block, digest& hash,
                      std::array<uint8_t, 64>& signature);

/// The training rows rank `rank` of `size` takes from the global batch that
/// starts at `cursor` of `perm` (the epoch's permutation).
std::vector<uint32_t> batch_slice(const std::vector<uint32_t>& perm, uint64_t cursor,
                                  uint32_t global_batch, uint32_t rank, uint32_t size);

/// The (epoch, cursor) of global step `step` as the job coordinator
/// schedules it: floor(rows / global_batch) steps per epoch.
std::pair<uint64_t, uint64_t> schedule_of(uint64_t step, uint64_t train_rows,
                                          uint32_t global_batch);

/// The epoch permutation of `rows` training rows for a job seeded `seed`.
std::vector<uint32_t> epoch_permutation(uint32_t rows, uint64_t seed, uint64_t epoch);

/// What a step's re-execution depends on in a TrainConfig: the model, the
/// data source, the split, the seed and the global batch.
struct train_terms {
  std::string model, data_file, dataset; ///< dataset: its 32-byte id, or empty
  bool standardize = false;
  uint32_t test_percent = 0, global_batch = 0;
  uint64_t split_seed = 0, seed = 0;
};
/// The terms of a TrainConfig reader (trainer.capnp; any of its reader types).
template <class Config>
train_terms terms_of(const Config& c) {
  train_terms t;
  t.model = c.getModel().cStr();
  t.data_file = c.getDataFile().cStr();
  t.dataset.assign(reinterpret_cast<const char*>(c.getDataset().begin()), c.getDataset().size());
  t.standardize = c.getStandardize();
  t.test_percent = c.getTestPercent();
  t.global_batch = c.getGlobalBatch();
  t.split_seed = c.getSplitSeed();
  t.seed = c.getSeed();
  return t;
}
/// BLAKE2b-256 keyed "aicon-train-terms-v1" over the terms, each field
/// length-prefixed or fixed-width: a trainer signs it with its log, so no
/// one who relays a rating request can have the rater re-execute its steps
/// against other terms than the ones it ran.
digest terms_digest(const train_terms& t);

/// What a trainer signs at the end of a session: "aicon-worklog-v3" ‖
/// session ‖ rank (4, LE) ‖ ring size (4, LE) ‖ first step (8, LE) ‖ steps
/// (8, LE) ‖ log root. The ring's size and the log's first step are the
/// trainer's word: nobody who relays the log can change the slice of the
/// batch a rank is checked against or the steps it is paid for.
std::vector<uint8_t> worklog_signing_bytes(const std::array<uint8_t, 32>& session, uint32_t rank,
                                           uint32_t ring_size, uint64_t first_step,
                                           uint64_t steps, const digest& root,
                                           const digest& terms);

/// A model's asset id: for a model put on the data nodes ("torch:<hex>")
/// the file's BLAKE2b-256 (its registered asset); otherwise BLAKE2b-256 of
/// "aicon-model-v1" ‖ the spec text.
digest model_id(const model_spec& spec);

/// Rows for learning and rows held out, by a seeded permutation.
struct split_data {
  data::table train, test;
};
split_data split_rows(const data::table& t, uint32_t test_percent, uint64_t split_seed);

/// Held-out metrics of `m` on `t`: a classifier's accuracy and mean
/// cross-entropy; a regression model's R^2 (1 - SSE / SST around the rows'
/// mean target) and mean squared error.
struct eval_metrics {
  double accuracy = 0, loss = 0, r2 = 0;
  bool regression = false;
};
eval_metrics evaluate(const model& m, const data::table& t);

/// The local gradient of `m` on the rows `indices` of `t`, scaled by
/// 1 / global_batch (the ring's sum is then the global mean); the loss sum.
std::pair<std::vector<float>, double> local_gradient(const model& m, const data::table& t,
                                                     std::span<const uint32_t> indices,
                                                     uint32_t global_batch);

} // namespace aicon::train
