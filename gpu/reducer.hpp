// One interface for every allreduce a trainer uses: the actor ring on CPU
// (transport/ring_reducer, transport/stream_ring) and NCCL on GPU (gpu/nccl_reducer). Depends
// on neither CAF nor Cap'n Proto: it takes spans and returns a status.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace aicon::gpu {

enum class reduce_op { sum, average };

class reducer {
public:
  virtual ~reducer() = default;

  /// Replaces `data` on every rank by the element-wise sum (or average) of
  /// every rank's `data`; all ranks pass the same length. Returns an empty
  /// string on success, else what failed (a dead neighbour aborts the
  /// collective; it never hangs).
  virtual std::string allreduce(std::span<float> data, reduce_op op) = 0;

  virtual size_t rank() const = 0;
  virtual size_t size() const = 0;

  /// Tensor Fusion (Horovod): packs the tensors into buckets of at most
  /// `bucket_bytes` and reduces one bucket per collective, so many small
  /// tensors cost few collectives. A tensor larger than a bucket is reduced
  /// on its own, in place.
  std::string allreduce_fused(const std::vector<std::span<float>>& tensors, reduce_op op,
                              size_t bucket_bytes);
};

} // namespace aicon::gpu
