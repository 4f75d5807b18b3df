#include "gpu/reducer.hpp"

#include <algorithm>
#include <cstring>

namespace aicon::gpu {

std::string reducer::allreduce_fused(const std::vector<std::span<float>>& tensors, reduce_op op,
                                     size_t bucket_bytes) {
  size_t bucket_floats = std::max<size_t>(1, bucket_bytes / sizeof(float));
  std::vector<float> fused;
  std::vector<std::span<float>> members;
  auto flush = [&]() -> std::string {
    if (members.empty())
      return {};
    fused.clear();
    for (auto t : members)
      fused.insert(fused.end(), t.begin(), t.end());
    if (auto err = allreduce(fused, op); !err.empty())
      return err;
    size_t at = 0;
    for (auto t : members) {
      std::memcpy(t.data(), fused.data() + at, t.size() * sizeof(float));
      at += t.size();
    }
    members.clear();
    return {};
  };
  size_t pending = 0;
  for (auto t : tensors) {
    if (t.size() >= bucket_floats) { // big enough alone: no copy
      if (auto err = allreduce(t, op); !err.empty())
        return err;
      continue;
    }
    if (pending + t.size() > bucket_floats) {
      if (auto err = flush(); !err.empty())
        return err;
      pending = 0;
    }
    members.push_back(t);
    pending += t.size();
  }
  return flush();
}

} // namespace aicon::gpu
