// Scores, their combination across raters, and settlement of a job, as
// pure functions (the rater role and the job turn them into transactions).
//
// Per epoch: trainers score by verified work units; a dataset by the number
// of distinct paying jobs that used it; a model by the jobs that used it.
// Self-dealing earns nothing: a trainer, dataset owner or model owner paid
// by its own wallet scores zero for that job. The PoV reward of an epoch is
// minted and split 80% to trainers by score, 10% to datasets, 10% to models
// (a part with no score goes unminted). With several raters, each score is
// the stake-weighted median of their reports, so a minority of the stake
// cannot move it.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace aicon::rater {

using wallet = std::array<uint8_t, 32>;
using id32 = std::array<uint8_t, 32>;

/// The value at which half the total stake is reached, reports sorted by
/// value (the lower median on an exact tie). 0 when there are none.
uint64_t stake_weighted_median(std::vector<std::pair<uint64_t, uint64_t>> value_stake);

struct job_record {
  id32 job{};
  wallet payer{};
  uint64_t paid = 0;                       ///< escrow actually settled (0: not a paying job)
  std::map<wallet, uint64_t> trainer_units; ///< verified units per trainer wallet
  id32 dataset{};
  wallet dataset_owner{};
  bool has_dataset = false;
  id32 model{};
  wallet model_owner{};
  bool has_model = false;
};

struct epoch_scores {
  std::map<wallet, uint64_t> trainers; ///< verified units (self-dealing excluded)
  std::map<id32, uint64_t> datasets;   ///< distinct paying jobs
  std::map<id32, uint64_t> models;     ///< jobs
  std::map<id32, wallet> owner;        ///< of each scored dataset and model
};

epoch_scores score_epoch(const std::vector<job_record>& jobs);

/// The epoch's reward split by score: wallet -> amount (sums to at most
/// `reward`; rounding down, remainders unminted).
std::map<wallet, uint64_t> split_reward(const epoch_scores& s, uint64_t reward);

/// One trainer's part in a job, after verification.
struct trainer_result {
  wallet who{};
  uint64_t units = 0;   ///< work it did (steps x rows)
  bool verified = false;
  uint64_t stake = 0;   ///< on the chain, for slashing
};

struct settlement {
  std::vector<std::pair<wallet, uint64_t>> payouts; ///< from the escrow (Settle)
  uint64_t refund = 0;                              ///< what the escrow returns to the payer
  std::vector<std::pair<wallet, uint64_t>> slashes; ///< failed trainers' stakes
  std::string why;                                  ///< non-empty: cannot settle
};

/// Trainers paid pro rata to verified work out of `trainer_budget` (at most
/// units x unit_price each), dataset and model owners their prices, the rest
/// refunded; a trainer that failed verification is paid nothing and loses
/// `slash_percent` of its stake.
settlement settle_job(uint64_t escrow, const std::vector<trainer_result>& trainers,
                      uint64_t unit_price, const wallet* dataset_owner, uint64_t dataset_price,
                      const wallet* model_owner, uint64_t model_price, uint32_t slash_percent);

} // namespace aicon::rater
