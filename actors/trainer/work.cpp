#include "actors/trainer/work.hpp"

#include <cmath>

#include <cstring>
#include <string_view>

#include <sodium.h>

namespace aicon::train {

digest weights_hash(std::span<const float> weights) {
  digest d;
  crypto_generichash(d.data(), d.size(), reinterpret_cast<const uint8_t*>(weights.data()),
                     weights.size_bytes(), nullptr, 0);
  return d;
}

digest step_digest_of(const digest& weights, std::span<const uint32_t> indices,
                      const digest& gradient) {
  static constexpr std::string_view key = "aicon-step-v2";
  crypto_generichash_state h;
  crypto_generichash_init(&h, reinterpret_cast<const uint8_t*>(key.data()), key.size(), 32);
  crypto_generichash_update(&h, weights.data(), weights.size());
  crypto_generichash_update(&h, reinterpret_cast<const uint8_t*>(indices.data()),
                            indices.size_bytes());
  crypto_generichash_update(&h, gradient.data(), gradient.size());
  digest d;
  crypto_generichash_final(&h, d.data(), d.size());
  return d;
}

digest step_digest(std::span<const float> weights_before, std::span<const uint32_t> indices,
                   std::span<const float> local_gradient) {
  return step_digest_of(weights_hash(weights_before), indices, contribution_hash(local_gradient));
}

digest contribution_hash(std::span<const float> gradient) {
  digest d;
  crypto_generichash(d.data(), d.size(), reinterpret_cast<const uint8_t*>(gradient.data()),
                     gradient.size_bytes(),
                     reinterpret_cast<const uint8_t*>(contribution_key.data()),
                     contribution_key.size());
  return d;
}

std::vector<uint8_t> contribution_signing_bytes(const std::array<uint8_t, 32>& session,
                                                uint32_t rank, uint64_t step, const digest& hash) {
  static constexpr std::string_view tag = "aicon-contribution-v1";
  std::vector<uint8_t> msg(tag.begin(), tag.end());
  msg.insert(msg.end(), session.begin(), session.end());
  for (int i = 0; i < 4; ++i)
    msg.push_back(static_cast<uint8_t>(rank >> (8 * i)));
  for (int i = 0; i < 8; ++i)
    msg.push_back(static_cast<uint8_t>(step >> (8 * i)));
  msg.insert(msg.end(), hash.begin(), hash.end());
  return msg;
}

void put_contribution(std::span<float> block, const digest& hash,
                      const std::array<uint8_t, 64>& signature) {
  std::array<uint8_t, 96> bytes;
  std::memcpy(bytes.data(), hash.data(), 32);
  std::memcpy(bytes.data() + 32, signature.data(), 64);
  for (size_t i = 0; i < contribution_floats && i < block.size(); ++i)
    block[i] = static_cast<float>(bytes[2 * i] | (bytes[2 * i + 1] << 8));
}

bool get_contribution(std::span<const float> block, digest& hash,
                      std::array<uint8_t, 64>& signature) {
  if (block.size() < contribution_floats)
    return false;
  std::array<uint8_t, 96> bytes;
  for (size_t i = 0; i < contribution_floats; ++i) {
    float v = block[i];
    if (!(v >= 0.0f && v <= 65535.0f) || v != std::floor(v))
      return false;
    auto u = static_cast<uint32_t>(v);
    bytes[2 * i] = static_cast<uint8_t>(u);
    bytes[2 * i + 1] = static_cast<uint8_t>(u >> 8);
  }
  std::memcpy(hash.data(), bytes.data(), 32);
  std::memcpy(signature.data(), bytes.data() + 32, 64);
  return true;
}

std::vector<uint8_t> worklog_signing_bytes(const std::array<uint8_t, 32>& session, uint32_t rank,
                                           uint32_t ring_size, uint64_t first_step,
                                           uint64_t steps, const digest& root,
                                           const digest& terms) {
  static constexpr std::string_view tag = "aicon-worklog-v3";
  std::vector<uint8_t> msg(tag.size() + 32 + 4 + 4 + 8 + 8 + 32 + 32);
  std::memcpy(msg.data(), tag.data(), tag.size());
  auto* p = msg.data() + tag.size();
  std::memcpy(p, session.data(), 32);
  for (int i = 0; i < 4; ++i) {
    p[32 + i] = static_cast<uint8_t>(rank >> (8 * i));
    p[36 + i] = static_cast<uint8_t>(ring_size >> (8 * i));
  }
  for (int i = 0; i < 8; ++i) {
    p[40 + i] = static_cast<uint8_t>(first_step >> (8 * i));
    p[48 + i] = static_cast<uint8_t>(steps >> (8 * i));
  }
  std::memcpy(p + 56, root.data(), 32);
  std::memcpy(p + 88, terms.data(), 32);
  return msg;
}

digest terms_digest(const train_terms& t) {
  static constexpr std::string_view key = "aicon-train-terms-v1";
  crypto_generichash_state h;
  crypto_generichash_init(&h, reinterpret_cast<const uint8_t*>(key.data()), key.size(), 32);
  auto u64 = [&](uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; ++i)
      b[i] = static_cast<uint8_t>(v >> (8 * i));
    crypto_generichash_update(&h, b, 8);
  };
  auto text = [&](const std::string& s) {
    u64(s.size());
    crypto_generichash_update(&h, reinterpret_cast<const uint8_t*>(s.data()), s.size());
  };
  text(t.model);
  text(t.data_file);
  text(t.dataset);
  u64(t.standardize ? 1 : 0);
  u64(t.test_percent);
  u64(t.global_batch);
  u64(t.split_seed);
  u64(t.seed);
  digest d;
  crypto_generichash_final(&h, d.data(), d.size());
  return d;
}

digest model_id(const model_spec& spec) {
  if (spec.is_asset()) {
    // A model put on the data nodes: its asset id is the file's hash.
    digest d{};
    sodium_hex2bin(d.data(), d.size(), spec.file.data(), spec.file.size(), nullptr, nullptr, nullptr);
    return d;
  }
  auto text = "aicon-model-v1" + to_string(spec);
  digest d;
  crypto_generichash(d.data(), d.size(), reinterpret_cast<const uint8_t*>(text.data()),
                     text.size(), nullptr, 0);
  return d;
}

std::vector<uint32_t> batch_slice(const std::vector<uint32_t>& perm, uint64_t cursor,
                                  uint32_t global_batch, uint32_t rank, uint32_t size) {
  uint64_t first = cursor + uint64_t{rank} * global_batch / size;
  uint64_t last = cursor + uint64_t{rank + 1} * global_batch / size;
  if (last > perm.size())
    return {};
  return {perm.begin() + static_cast<ptrdiff_t>(first), perm.begin() + static_cast<ptrdiff_t>(last)};
}

std::pair<uint64_t, uint64_t> schedule_of(uint64_t step, uint64_t train_rows,
                                          uint32_t global_batch) {
  uint64_t per_epoch = global_batch ? train_rows / global_batch : 0;
  if (per_epoch == 0)
    return {0, 0};
  return {step / per_epoch, (step % per_epoch) * global_batch};
}

std::vector<uint32_t> epoch_permutation(uint32_t rows, uint64_t seed, uint64_t epoch) {
  return permutation(rows, seed + 1 + epoch);
}

split_data split_rows(const data::table& t, uint32_t test_percent, uint64_t split_seed) {
  auto p = permutation(static_cast<uint32_t>(t.rows), split_seed);
  split_data s;
  for (auto* part : {&s.train, &s.test}) {
    part->features = t.features;
    part->classes = t.classes;
    part->regression = t.regression;
  }
  size_t cut = t.rows - t.rows * test_percent / 100;
  for (size_t i = 0; i < p.size(); ++i) {
    auto& part = i < cut ? s.train : s.test;
    auto row = p[i];
    part.x.insert(part.x.end(), t.x.begin() + static_cast<ptrdiff_t>(row * t.features),
                  t.x.begin() + static_cast<ptrdiff_t>((row + 1) * t.features));
    part.y.push_back(t.y[row]);
    ++part.rows;
  }
  return s;
}

eval_metrics evaluate(const model& m, const data::table& t) {
  eval_metrics e;
  e.regression = m.spec().regression();
  if (t.rows == 0)
    return e;
  std::vector<float> scratch(m.params().size(), 0.0f);
  e.loss = m.accumulate_gradient(t.x.data(), t.y.data(), t.rows, 0.0f, scratch)
           / static_cast<double>(t.rows);
  if (e.regression) {
    auto pred = m.predict_values(t.x.data(), t.rows);
    double mean = 0;
    for (size_t i = 0; i < t.rows; ++i)
      mean += data::target_of(t, i);
    mean /= static_cast<double>(t.rows);
    double sse = 0, sst = 0;
    for (size_t i = 0; i < t.rows; ++i) {
      double target = data::target_of(t, i);
      sse += (pred[i] - target) * (pred[i] - target);
      sst += (target - mean) * (target - mean);
    }
    e.r2 = sst > 0 && std::isfinite(sse) ? 1 - sse / sst : 0;
    return e;
  }
  auto pred = m.predict(t.x.data(), t.rows);
  size_t ok = 0;
  for (size_t i = 0; i < pred.size(); ++i)
    ok += pred[i] == t.y[i] ? 1 : 0;
  e.accuracy = static_cast<double>(ok) / static_cast<double>(t.rows);
  return e;
}

std::pair<std::vector<float>, double> local_gradient(const model& m, const data::table& t,
                                                     std::span<const uint32_t> indices,
                                                     uint32_t global_batch) {
  auto f = t.features;
  std::vector<float> x(indices.size() * f);
  std::vector<int32_t> y(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) {
    std::memcpy(x.data() + i * f, t.x.data() + static_cast<size_t>(indices[i]) * f, f * 4);
    y[i] = t.y[indices[i]];
  }
  // More floats reserved: a trainer appends the ring's control words and
  // (a signed ring of two) the contribution blocks (trainer.cpp, one_step)
  // without moving the gradient.
  std::vector<float> grad;
  grad.reserve(m.params().size() + 2 + 2 * contribution_floats);
  grad.resize(m.params().size(), 0.0f);
  double loss = m.accumulate_gradient(x.data(), y.data(), indices.size(),
                                      1.0f / static_cast<float>(global_batch), grad);
  return {std::move(grad), loss};
}

} // namespace aicon::train
