// The built-in models a trainer runs: softmax regression and MLPs (ReLU
// hidden layers, softmax output, cross-entropy loss) from a spec string,
// SGD with momentum and weight decay, seeded initialization and
// checkpoints. Eigen on CPU, single-threaded, no FMA contraction: a step is
// a pure function of (weights, batch, hyper-parameters), bit for bit on
// every host built from this tree, so a verifier can re-execute it.
//
// All parameters live in one flat float vector (per layer: W, out x in,
// row-major, then b), so the gradient is one buffer for the allreduce.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace aicon::train {

class torch_module;

struct model_spec {
  std::string kind;             ///< "softmax", "mlp" or "torch"
  std::vector<uint32_t> layers; ///< widths, input first, classes last (torch: {F, C} once loaded)
  std::string file;             ///< torch: the TorchScript file, or a model asset's id (64 hex)
  std::string local;            ///< torch asset: where this host keeps the fetched file
  std::shared_ptr<const torch_module> torch; ///< torch: the loaded module (load_torch)
  /// "torch:<64 hex digits>": a model put on the data nodes (aicon model
  /// put), fetched by id and checked against it, not a path.
  bool is_asset() const;
  /// A loaded torch model with one output column: regression (squared
  /// error against float targets), not classification.
  bool regression() const {
    return kind == "torch" && layers.size() == 2 && layers.back() == 1;
  }
  /// The same model: kind and widths, or for torch the same file (its
  /// widths are known only once loaded).
  bool operator==(const model_spec& o) const {
    return kind == o.kind && file == o.file && (kind == "torch" || layers == o.layers);
  }
};

/// "softmax:64-10" (no hidden layer), "mlp:64-64-10" (>= 1 hidden) or
/// "torch:FILE" (a TorchScript file meeting the contract of
/// torch_model.hpp; nothing is read until load_torch). Errors name what is
/// wrong with the text.
caf::expected<model_spec> parse_spec(std::string_view text);

/// For a torch spec: loads and checks its file (`local` for an asset), and
/// sets layers to {in_features, classes}. Call only for a file this host
/// may read (a trainer: under [host] data_files, or an asset it fetched).
/// Other specs: nothing to do.
caf::error load_torch(model_spec& spec);
std::string to_string(const model_spec& spec);

/// splitmix64: the one random source of training (initialization, shuffles),
/// the same sequence on every host.
class rng {
public:
  explicit rng(uint64_t seed) : state_(seed) {
  }
  uint64_t next();
  /// Uniform in [0, 1), exactly representable (24 random bits).
  float uniform();

private:
  uint64_t state_;
};

/// A permutation of 0..n-1 drawn from `seed` (Fisher-Yates).
std::vector<uint32_t> permutation(uint32_t n, uint64_t seed);

class model {
public:
  /// Xavier-uniform weights, zero biases, from `seed`.
  static model init(const model_spec& spec, uint64_t seed);

  /// A model over `params` (a checkpoint's). Errors: the size does not fit.
  static caf::expected<model> from_params(const model_spec& spec, std::vector<float> params);

  static size_t param_count(const model_spec& spec);

  const model_spec& spec() const {
    return spec_;
  }
  std::span<float> params() {
    return params_;
  }
  std::span<const float> params() const {
    return params_;
  }
  /// The optimizer's part of params(): all of it, but a TorchScript
  /// model's buffers follow its parameters (torch_model.hpp).
  size_t trainable_count() const;

  /// Adds `scale` x the gradient of the summed cross-entropy over the rows
  /// x[rows x inputs], y[rows] to `grad` (zeroed by the caller) and returns
  /// the summed loss. With scale = 1 / global batch, the sum of every
  /// trainer's contribution is the mean gradient of the global batch.
  double accumulate_gradient(const float* x, const int32_t* y, size_t rows, float scale,
                             std::span<float> grad) const;

  /// Predicted class of each row.
  std::vector<int32_t> predict(const float* x, size_t rows) const;
  /// A regression model's predicted value of each row (empty for a
  /// classifier).
  std::vector<float> predict_values(const float* x, size_t rows) const;

private:
  model_spec spec_;
  std::vector<float> params_;
};

/// How the weights are updated, the same on every rank.
enum class optimizer_kind : uint8_t {
  /// SGD with momentum and (decoupled from the loss, added to the gradient)
  /// L2 weight decay: v = momentum v + (g + wd w); w -= lr v.
  sgd = 0,
  /// AdamW (Loshchilov and Hutter): m = b1 m + (1 - b1) g, v = b2 v + (1 - b2)
  /// g^2, w -= lr (m / (1 - b1^t) / (sqrt(v / (1 - b2^t)) + eps) + wd w).
  /// Float arithmetic in a fixed order, no FMA contraction: the same bits on
  /// every host built from this tree.
  adamw = 1,
};

/// "sgd" or "adamw"; errors name the text.
caf::expected<optimizer_kind> parse_optimizer(std::string_view text);
std::string to_string(optimizer_kind k);

struct optimizer {
  optimizer_kind kind = optimizer_kind::sgd;
  float lr = 0.1f;
  float momentum = 0.9f;      ///< sgd
  float weight_decay = 1e-4f;
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f; ///< adamw
  std::vector<float> velocity; ///< sgd: the velocity; adamw: the first moment
  std::vector<float> second;   ///< adamw: the second moment
  uint64_t t = 0;              ///< adamw: steps taken (bias correction)
  /// Entries from here on are buffers, not weights (a TorchScript model's
  /// running statistics): the step adds their allreduced change as it is.
  size_t trainable = SIZE_MAX;

  void step(std::span<float> params, std::span<const float> grad);
};

/// The built-in name the tests and benchmarks grew up with.
using sgd = optimizer;

/// Everything a trainer needs to resume: weights, optimizer state, step and
/// the data cursor.
struct checkpoint {
  model_spec spec;
  std::vector<float> params;
  std::vector<float> velocity;
  uint64_t step = 0;
  uint64_t cursor = 0; ///< rows of the epoch's permutation already consumed
  uint64_t epoch = 0;
  uint64_t seed = 0;
  optimizer_kind optimizer = optimizer_kind::sgd;
  std::vector<float> second; ///< adamw's second moment (velocity holds the first)
  uint64_t adam_steps = 0;   ///< adamw's t
  bool operator==(const checkpoint&) const = default;
};

/// The checkpoint format in memory: magic, spec, counters, parameters,
/// velocity, BLAKE2b-256 of all that.
std::vector<uint8_t> checkpoint_bytes(const checkpoint& c);

/// Parses checkpoint bytes; `what` names them in errors.
caf::expected<checkpoint> parse_checkpoint(std::span<const uint8_t> bytes, const std::string& what);

/// Writes `c` to `path` atomically (temporary file, fsync, rename) with a
/// BLAKE2b-256 digest of its contents at the end.
caf::error save_checkpoint(const std::filesystem::path& path, const checkpoint& c);

/// Reads a checkpoint; errors name the file and what is wrong (not a
/// checkpoint, truncated, digest mismatch, sizes that do not fit the spec).
caf::expected<checkpoint> load_checkpoint(const std::filesystem::path& path);

} // namespace aicon::train
