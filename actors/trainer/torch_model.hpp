// Researchers' own models: a TorchScript module (libtorch 1.13, CPU) that a
// trainer steps like the built-in models, over the same flat parameter
// vector (named_parameters order), so the ring, the optimizer, checkpoints
// and the rater's re-execution see no difference.
//
// The contract a file must meet (checked by `load`, every refusal named):
//   - TorchScript (torch.jit.script or trace, then save), at most
//     file_bytes_max bytes and params_max float32 parameters;
//   - an int attribute `in_features` (F), and
//     forward(x: float32[B, F]) -> float32[B, C] logits with C >= 2
//     (classification, cross-entropy) or float32[B, 1] (regression, the
//     squared error against float targets), shown on a probe batch;
//   - forward uses only aten:: and prim:: operators after inlining, none of
//     them random (dropout, bernoulli, rand*: a verifier could not replay
//     them) and none that reads files;
//   - buffers (BatchNorm's running statistics and counter) float32 or
//     int64. They follow the parameters in the flat state, as floats.
// The buffer rule: a step runs forward in train mode, so each rank's
// BatchNorm normalizes with its own shard's statistics (as Horovod and
// PyTorch DDP do without SyncBatchNorm) and moves its running statistics;
// the move, weighted by the shard's share of the global batch, rides in
// the gradient vector, the ring sums it, and every rank adds the same sum
// (optimizer::trainable: no learning rate, momentum or decay on buffers).
// So after every step all ranks hold the same buffers: the running mean is
// exactly what one trainer would get from the mean of the shards' batch
// means. Evaluation (predict, the held-out accuracy) and the saved file run
// in eval mode: normalized by the running statistics.
// Numerics are pinned when a module loads: one intra-op thread and no
// profiling re-optimization, so a step is the same bits run to run on one
// host; hosts whose CPU capability or BLAS differ may differ.
//
// This is the only header of aicon that names libtorch's work, and
// torch_model.cpp the only file that includes libtorch (its headers cost
// about 40 s of compile each). Without libtorch at build time `load`
// answers that the build has none.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <caf/expected.hpp>

namespace aicon::train {

struct torch_limits {
  uint64_t file_bytes_max = 64ull << 20; ///< a larger file is refused before it is parsed
  uint64_t params_max = 20'000'000;      ///< float32 parameters
};

/// Whether this build links libtorch.
bool torch_available();

class torch_module {
public:
  /// Loads `file` and checks the contract above. Errors name what is wrong
  /// (errc::invalid_argument; errc::not_found for a missing file).
  static caf::expected<std::shared_ptr<torch_module>> load(const std::filesystem::path& file,
                                                           const torch_limits& lim = {});
  ~torch_module();

  uint32_t features() const;
  uint32_t classes() const;
  /// The flat state: parameters, then buffers.
  size_t param_count() const;
  /// The parameters alone (the optimizer's part of the state).
  size_t trainable_count() const;
  /// The file's own parameters then buffers, flattened in named_parameters
  /// and named_buffers order.
  std::vector<float> initial_params() const;
  /// As train::model::accumulate_gradient: adds `scale` x the gradient of
  /// the summed cross-entropy over x[rows x features], y[rows] at `params`
  /// to `grad`; returns the summed loss.
  double accumulate_gradient(std::span<const float> params, const float* x, const int32_t* y,
                             size_t rows, float scale, std::span<float> grad) const;
  /// Predicted class (argmax of the logits, eval mode) of each row at `params`.
  std::vector<int32_t> predict(std::span<const float> params, const float* x, size_t rows) const;
  /// A regression model's (classes() == 1) predicted value of each row
  /// (eval mode) at `params`.
  std::vector<float> predict_values(std::span<const float> params, const float* x,
                                    size_t rows) const;
  /// Writes the module with `params` as its weights to `file` (TorchScript,
  /// atomically): what `torch.jit.load` reads back in Python.
  caf::error save(std::span<const float> params, const std::filesystem::path& file) const;
  /// The baseline of `aicon bench train --model torch:FILE`: a bare
  /// libtorch loop over a fresh copy of `file` (forward, backward, p -= lr
  /// grad in place; no flat copies, no ring, no messages) on consecutive
  /// batches of x[rows x features]; samples per second over `steps` steps.
  static caf::expected<double> bare_samples_per_s(const std::filesystem::path& file, const float* x,
                                                  const int32_t* y, size_t rows, uint32_t batch,
                                                  uint64_t steps, float lr);
  /// The numeric environment a step ran in ("libtorch 1.13.1, 1 thread, cpu
  /// capability AVX2"): what a verifier must match to expect the same bits.
  std::string environment() const;

private:
  struct impl;
  explicit torch_module(std::unique_ptr<impl> p);
  std::unique_ptr<impl> impl_;
};

} // namespace aicon::train
