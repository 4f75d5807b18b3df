#include "actors/rater/scores.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace aicon::rater {

uint64_t stake_weighted_median(std::vector<std::pair<uint64_t, uint64_t>> value_stake) {
  std::sort(value_stake.begin(), value_stake.end());
  unsigned __int128 total = 0;
  for (auto& [v, s] : value_stake)
    total += s;
  if (total == 0)
    return 0;
  unsigned __int128 acc = 0;
  for (auto& [v, s] : value_stake) {
    acc += s;
    if (2 * acc >= total)
      return v;
  }
  return value_stake.back().first;
}

epoch_scores score_epoch(const std::vector<job_record>& jobs) {
  epoch_scores s;
  std::map<id32, std::set<id32>> dataset_jobs;
  for (auto& j : jobs) {
    for (auto& [w, units] : j.trainer_units)
      if (w != j.payer && units > 0)
        s.trainers[w] += units;
    if (j.has_dataset && j.paid > 0 && j.dataset_owner != j.payer) {
      dataset_jobs[j.dataset].insert(j.job);
      s.owner[j.dataset] = j.dataset_owner;
    }
    if (j.has_model && j.model_owner != j.payer) {
      ++s.models[j.model];
      s.owner[j.model] = j.model_owner;
    }
  }
  for (auto& [d, js] : dataset_jobs)
    s.datasets[d] = js.size();
  return s;
}

namespace {

void split_part(std::map<wallet, uint64_t>& out, const std::map<wallet, uint64_t>& scores,
                uint64_t part) {
  unsigned __int128 total = 0;
  for (auto& [w, v] : scores)
    total += v;
  if (total == 0)
    return;
  for (auto& [w, v] : scores)
    out[w] += static_cast<uint64_t>(static_cast<unsigned __int128>(part) * v / total);
}

} // namespace

std::map<wallet, uint64_t> split_reward(const epoch_scores& s, uint64_t reward) {
  std::map<wallet, uint64_t> out;
  split_part(out, s.trainers, reward / 10 * 8);
  std::map<wallet, uint64_t> data_owners, model_owners;
  for (auto& [d, n] : s.datasets)
    data_owners[s.owner.at(d)] += n;
  for (auto& [m, n] : s.models)
    model_owners[s.owner.at(m)] += n;
  split_part(out, data_owners, reward / 10);
  split_part(out, model_owners, reward / 10);
  std::erase_if(out, [](auto& kv) { return kv.second == 0; });
  return out;
}

settlement settle_job(uint64_t escrow, const std::vector<trainer_result>& trainers,
                      uint64_t unit_price, const wallet* dataset_owner, uint64_t dataset_price,
                      const wallet* model_owner, uint64_t model_price, uint32_t slash_percent) {
  settlement out;
  unsigned __int128 owed = 0;
  for (auto& t : trainers)
    if (t.verified)
      owed += static_cast<unsigned __int128>(t.units) * unit_price;
  unsigned __int128 fixed = (dataset_owner ? dataset_price : 0) + (model_owner ? model_price : 0);
  if (fixed > escrow) {
    out.why = fmt::format("escrow {} does not cover the dataset and model prices ({})", escrow,
                          static_cast<uint64_t>(fixed));
    return out;
  }
  // Trainers share what is left pro rata if the budget falls short.
  unsigned __int128 budget = escrow - fixed;
  unsigned __int128 paid_total = 0;
  for (auto& t : trainers) {
    if (!t.verified) {
      auto cut = static_cast<uint64_t>(static_cast<unsigned __int128>(t.stake) * slash_percent / 100);
      if (cut > 0)
        out.slashes.emplace_back(t.who, cut);
      continue;
    }
    unsigned __int128 due = static_cast<unsigned __int128>(t.units) * unit_price;
    if (owed > budget)
      due = budget * t.units * unit_price / owed;
    if (due > 0) {
      out.payouts.emplace_back(t.who, static_cast<uint64_t>(due));
      paid_total += due;
    }
  }
  if (dataset_owner && dataset_price > 0)
    out.payouts.emplace_back(*dataset_owner, dataset_price);
  if (model_owner && model_price > 0)
    out.payouts.emplace_back(*model_owner, model_price);
  out.refund = static_cast<uint64_t>(escrow - paid_total - fixed);
  return out;
}

} // namespace aicon::rater
