// gpu::reducer over NCCL: rank 0 makes the communicator's unique id, the job
// coordinator broadcasts its bytes to the ring as an actor message, and every
// trainer calls ncclCommInitRank and then ncclAllReduce on device buffers on
// its own CUDA stream. Compiles and links on every build with CUDA; runs only
// where a GPU is present (create() reports why not otherwise).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "gpu/reducer.hpp"

namespace aicon::gpu {

/// The bytes of a fresh ncclUniqueId (rank 0 only), or an error text.
std::string nccl_unique_id(std::vector<uint8_t>& out);

class nccl_reducer : public reducer {
public:
  /// Joins the communicator named by `unique_id` as `rank` of `size` on
  /// CUDA device `device`. Blocks until every rank joined (NCCL's rule).
  static std::unique_ptr<nccl_reducer> create(const std::vector<uint8_t>& unique_id, int rank,
                                              int size, int device, std::string& error);
  ~nccl_reducer() override;

  /// Host buffer: copied to the device, reduced, copied back.
  std::string allreduce(std::span<float> data, reduce_op op) override;

  /// Device buffer of `n` floats, reduced in place on this reducer's stream
  /// (synchronized before returning).
  std::string allreduce_device(float* data, size_t n, reduce_op op);

  size_t rank() const override {
    return static_cast<size_t>(rank_);
  }
  size_t size() const override {
    return static_cast<size_t>(size_);
  }

private:
  nccl_reducer() = default;
  struct impl;
  std::unique_ptr<impl> impl_;
  int rank_ = 0, size_ = 1;
};

} // namespace aicon::gpu
