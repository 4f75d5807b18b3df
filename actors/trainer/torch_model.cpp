#include "actors/trainer/torch_model.hpp"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>

#include <fmt/format.h>

#include "runtime/error.hpp"

#if AICON_HAVE_TORCH
#include <ATen/Parallel.h>
#include <torch/csrc/api/include/torch/version.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>
#endif

namespace aicon::train {

#if AICON_HAVE_TORCH

namespace {

/// The first line of a c10::Error's text (the rest is a C++ backtrace).
std::string first_line(const char* what) {
  std::string s = what ? what : "";
  auto nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

/// Operators a verifier could not replay (random) or that reach outside
/// the process: refused in forward.
bool forbidden_op(const std::string& name) {
  static const std::set<std::string> named = {
    "aten::dropout",       "aten::dropout_",       "aten::feature_dropout",
    "aten::alpha_dropout", "aten::feature_alpha_dropout", "aten::bernoulli",
    "aten::bernoulli_",    "aten::multinomial",    "aten::normal",
    "aten::randperm",      "aten::from_file",      "aten::rrelu",
    "aten::rrelu_with_noise", "aten::uniform_",    "aten::normal_",
    "aten::exponential_",  "aten::geometric_",     "aten::cauchy_",
    "aten::log_normal_",   "aten::random_",        "aten::poisson",
  };
  return named.count(name) > 0 || name.rfind("aten::rand", 0) == 0;
}

/// Every operator of `block` (and nested blocks) outside the allowlist.
void check_ops(torch::jit::Block* block, std::set<std::string>& bad) {
  for (auto* node : block->nodes()) {
    auto kind = node->kind();
    std::string name = kind.toQualString();
    bool ns_ok = kind.is_aten() || kind.is_prim();
    if (!ns_ok || forbidden_op(name) || kind == c10::Symbol::fromQualString("prim::PythonOp"))
      bad.insert(name);
    for (auto* b : node->blocks())
      check_ops(b, bad);
  }
}

} // namespace

struct torch_module::impl {
  mutable std::mutex mu; ///< a module's parameters are overwritten per call
  mutable torch::jit::Module module;
  std::vector<at::Tensor> params;
  uint32_t features = 0;
  uint32_t classes = 0;
  size_t count = 0;

  /// Loads `flat` into the module's parameters.
  void set_params(std::span<const float> flat) const {
    torch::NoGradGuard no_grad;
    size_t at = 0;
    for (auto& p : params) {
      auto n = static_cast<size_t>(p.numel());
      std::memcpy(p.data_ptr<float>(), flat.data() + at, n * sizeof(float));
      at += n;
    }
  }

  at::Tensor input(const float* x, size_t rows) const {
    return torch::from_blob(const_cast<float*>(x),
                            {static_cast<int64_t>(rows), static_cast<int64_t>(features)},
                            torch::kFloat32);
  }
};

bool torch_available() {
  return true;
}

torch_module::torch_module(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
torch_module::~torch_module() = default;

caf::expected<std::shared_ptr<torch_module>> torch_module::load(const std::filesystem::path& file,
                                                                const torch_limits& lim) {
  auto where = file.string();
  std::error_code ec;
  auto size = std::filesystem::file_size(file, ec);
  if (ec)
    return make_error(errc::not_found, fmt::format("model {}: {}", where, ec.message()));
  if (size > lim.file_bytes_max)
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: {} bytes, over the limit of {}", where, size,
                                  lim.file_bytes_max));
  // Pinned numerics: one intra-op thread, no re-optimization after warm-up.
  at::set_num_threads(1);
  torch::jit::setGraphExecutorOptimize(false);
  auto p = std::make_unique<impl>();
  try {
    p->module = torch::jit::load(where);
  } catch (const std::exception& e) {
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: not a TorchScript file ({})", where, first_line(e.what())));
  }
  try {
    auto m = p->module.find_method("forward");
    if (!m)
      return make_error(errc::invalid_argument, fmt::format("model {}: has no forward method", where));
    auto graph = m->graph()->copy();
    torch::jit::Inline(*graph);
    std::set<std::string> bad;
    check_ops(graph->block(), bad);
    if (!bad.empty()) {
      std::string names;
      for (auto& b : bad)
        names += (names.empty() ? "" : ", ") + b;
      return make_error(errc::invalid_argument,
                        fmt::format("model {}: forward uses operators outside the allowlist (aten "
                                    "and prim math, nothing random, no files): {}",
                                    where, names));
    }
    for (const auto& b : p->module.named_buffers(true))
      return make_error(errc::invalid_argument,
                        fmt::format("model {}: has buffer '{}' (BatchNorm running statistics and "
                                    "other buffers are not supported yet)",
                                    where, b.name));
    if (!p->module.hasattr("in_features") || !p->module.attr("in_features").isInt())
      return make_error(errc::invalid_argument,
                        fmt::format("model {}: needs an int attribute in_features (the F of "
                                    "forward(x: float32[B, F]))",
                                    where));
    auto f = p->module.attr("in_features").toInt();
    if (f <= 0 || f > 1'000'000)
      return make_error(errc::invalid_argument,
                        fmt::format("model {}: in_features {} is out of range", where, f));
    p->features = static_cast<uint32_t>(f);
    for (const auto& np : p->module.named_parameters(true)) {
      if (np.value.scalar_type() != torch::kFloat32)
        return make_error(errc::invalid_argument,
                          fmt::format("model {}: parameter '{}' is {}, not float32", where, np.name,
                                      std::string{c10::toString(np.value.scalar_type())}));
      p->count += static_cast<size_t>(np.value.numel());
      p->params.push_back(np.value);
    }
    if (p->count == 0)
      return make_error(errc::invalid_argument, fmt::format("model {}: has no parameters", where));
    if (p->count > lim.params_max)
      return make_error(errc::invalid_argument,
                        fmt::format("model {}: {} parameters, over the limit of {}", where,
                                    p->count, lim.params_max));
    // The probe: forward(float32[2, F]) must give float32[2, C], C >= 2.
    torch::NoGradGuard no_grad;
    auto out = p->module.forward({torch::zeros({2, f}, torch::kFloat32)});
    if (!out.isTensor())
      return make_error(errc::invalid_argument,
                        fmt::format("model {}: forward returns a {}, not a tensor", where,
                                    out.tagKind()));
    auto t = out.toTensor();
    if (t.dim() != 2 || t.size(0) != 2 || t.scalar_type() != torch::kFloat32)
      return make_error(errc::invalid_argument,
                        fmt::format("model {}: forward(float32[2, {}]) gave {} {}, not float32[2, C]",
                                    where, f, std::string{c10::toString(t.scalar_type())},
                                    fmt::format("{}", fmt::join(t.sizes().vec(), "x"))));
    if (t.size(1) < 2)
      return make_error(errc::invalid_argument,
                        fmt::format("model {}: {} output column(s); a classifier needs C >= 2 "
                                    "(regression models are not supported yet)",
                                    where, t.size(1)));
    p->classes = static_cast<uint32_t>(t.size(1));
  } catch (const std::exception& e) {
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: forward fails on a probe batch ({})", where,
                                  first_line(e.what())));
  }
  p->module.train();
  return std::shared_ptr<torch_module>(new torch_module(std::move(p)));
}

uint32_t torch_module::features() const {
  return impl_->features;
}

uint32_t torch_module::classes() const {
  return impl_->classes;
}

size_t torch_module::param_count() const {
  return impl_->count;
}

std::vector<float> torch_module::initial_params() const {
  std::lock_guard lock{impl_->mu};
  std::vector<float> out;
  out.reserve(impl_->count);
  for (auto& p : impl_->params) {
    auto c = p.detach().contiguous();
    auto* d = c.data_ptr<float>();
    out.insert(out.end(), d, d + c.numel());
  }
  return out;
}

double torch_module::accumulate_gradient(std::span<const float> params, const float* x,
                                         const int32_t* y, size_t rows, float scale,
                                         std::span<float> grad) const {
  std::lock_guard lock{impl_->mu};
  impl_->set_params(params);
  for (auto& p : impl_->params)
    if (p.grad().defined())
      p.mutable_grad().zero_();
  auto logits = impl_->module.forward({impl_->input(x, rows)}).toTensor();
  std::vector<int64_t> labels(y, y + rows);
  auto target = torch::from_blob(labels.data(), {static_cast<int64_t>(rows)}, torch::kInt64);
  auto loss = at::nll_loss(at::log_softmax(logits, 1), target, {}, at::Reduction::Sum);
  (loss * scale).backward();
  size_t at = 0;
  for (auto& p : impl_->params) {
    auto n = static_cast<size_t>(p.numel());
    if (p.grad().defined()) {
      auto g = p.grad().contiguous();
      auto* d = g.data_ptr<float>();
      for (size_t i = 0; i < n; ++i)
        grad[at + i] += d[i];
    }
    at += n;
  }
  return loss.item<double>();
}

std::vector<int32_t> torch_module::predict(std::span<const float> params, const float* x,
                                           size_t rows) const {
  std::lock_guard lock{impl_->mu};
  impl_->set_params(params);
  torch::NoGradGuard no_grad;
  auto logits = impl_->module.forward({impl_->input(x, rows)}).toTensor();
  auto arg = logits.argmax(1).contiguous();
  std::vector<int32_t> out(rows);
  auto* d = arg.data_ptr<int64_t>();
  for (size_t i = 0; i < rows; ++i)
    out[i] = static_cast<int32_t>(d[i]);
  return out;
}

caf::error torch_module::save(std::span<const float> params, const std::filesystem::path& file) const {
  if (params.size() != impl_->count)
    return make_error(errc::invalid_argument,
                      fmt::format("{} parameters for a model of {}", params.size(), impl_->count));
  std::lock_guard lock{impl_->mu};
  impl_->set_params(params);
  auto tmp = file;
  tmp += ".tmp";
  try {
    impl_->module.save(tmp.string());
  } catch (const std::exception& e) {
    return make_error(errc::io_error, fmt::format("writing {}: {}", tmp.string(), first_line(e.what())));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec)
    return make_error(errc::io_error, fmt::format("renaming {} to {}: {}", tmp.string(),
                                                  file.string(), ec.message()));
  return {};
}

std::string torch_module::environment() const {
  // libtorch picks its CPU kernels (default, avx2, avx512) at start-up from
  // the CPU unless ATEN_CPU_CAPABILITY pins them.
  const char* pinned = std::getenv("ATEN_CPU_CAPABILITY");
  std::string cap = pinned && *pinned ? pinned : "auto-detected";
  return fmt::format("libtorch {}, {} thread(s), cpu capability {}", TORCH_VERSION,
                     at::get_num_threads(), cap);
}

#else // no libtorch in this build

struct torch_module::impl {};

bool torch_available() {
  return false;
}

torch_module::torch_module(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
torch_module::~torch_module() = default;

caf::expected<std::shared_ptr<torch_module>> torch_module::load(const std::filesystem::path& file,
                                                                const torch_limits&) {
  return make_error(errc::invalid_argument,
                    fmt::format("model {}: this aicon was built without libtorch (install "
                                "libtorch-dev and rebuild) and cannot load TorchScript",
                                file.string()));
}

uint32_t torch_module::features() const { return 0; }
uint32_t torch_module::classes() const { return 0; }
size_t torch_module::param_count() const { return 0; }
std::vector<float> torch_module::initial_params() const { return {}; }
double torch_module::accumulate_gradient(std::span<const float>, const float*, const int32_t*,
                                         size_t, float, std::span<float>) const {
  return 0;
}
std::vector<int32_t> torch_module::predict(std::span<const float>, const float*, size_t) const {
  return {};
}
caf::error torch_module::save(std::span<const float>, const std::filesystem::path&) const {
  return make_error(errc::invalid_argument, "this aicon was built without libtorch");
}
std::string torch_module::environment() const { return "no libtorch"; }

#endif

} // namespace aicon::train
