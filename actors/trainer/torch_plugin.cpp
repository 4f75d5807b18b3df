// libaicon_torch.so: researchers' TorchScript modules behind the C table of
// torch_plugin.hpp. The contract is documented in torch_model.hpp; this file
// checks it and runs steps. Only libtorch and fmt: no aicon runtime here.
#include "actors/trainer/torch_plugin.hpp"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <malloc.h>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <ATen/Parallel.h>
#include <torch/csrc/api/include/torch/version.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>

namespace {

constexpr int not_found = 1, invalid = 2, io_error = 3;

void put_error(int* code, int value, char* err, size_t len, const std::string& text) {
  if (code)
    *code = value;
  if (err && len > 0) {
    auto n = std::min(len - 1, text.size());
    std::memcpy(err, text.data(), n);
    err[n] = 0;
  }
}

/// The first line of an exception's text (the rest is a C++ backtrace),
/// or for the TorchScript interpreter's errors (a script traceback first)
/// the line that names the error ("RuntimeError: ...").
std::string first_line(const char* what) {
  std::string s = what ? what : "";
  if (s.find("TorchScript interpreter") != std::string::npos) {
    auto at = s.rfind("Error: ");
    if (at != std::string::npos) {
      auto from = s.rfind('\n', at);
      from = from == std::string::npos ? 0 : from + 1;
      auto to = s.find('\n', at);
      return s.substr(from, to == std::string::npos ? std::string::npos : to - from);
    }
  }
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
    if (!(kind.is_aten() || kind.is_prim()) || forbidden_op(name)
        || kind == c10::Symbol::fromQualString("prim::PythonOp"))
      bad.insert(name);
    for (auto* b : node->blocks())
      check_ops(b, bad);
  }
}

struct module_state {
  std::mutex mu; ///< a module's parameters are overwritten per call
  torch::jit::Module module;
  std::vector<at::Tensor> params;
  /// Buffers (BatchNorm's running statistics and counter) after the
  /// parameters in the flat state: float32 as they are, int64 as floats.
  std::vector<at::Tensor> buffers;
  uint32_t features = 0;
  uint32_t classes = 0;
  size_t trainable = 0; ///< parameter floats
  size_t count = 0;     ///< parameter and buffer floats: the flat state

  /// Sets parameters and buffers from the flat state.
  void set_params(const float* flat) {
    torch::NoGradGuard no_grad;
    size_t at = 0;
    for (auto& p : params) {
      auto n = static_cast<size_t>(p.numel());
      std::memcpy(p.data_ptr<float>(), flat + at, n * sizeof(float));
      at += n;
    }
    for (auto& b : buffers) {
      auto n = static_cast<size_t>(b.numel());
      if (b.scalar_type() == torch::kFloat32) {
        std::memcpy(b.data_ptr<float>(), flat + at, n * sizeof(float));
      } else {
        auto* d = b.data_ptr<int64_t>();
        for (size_t i = 0; i < n; ++i)
          d[i] = std::llround(flat[at + i]);
      }
      at += n;
    }
  }

  /// Buffer i's value at `offset` as a float (the flat state's form).
  static float buffer_value(const at::Tensor& b, size_t i) {
    return b.scalar_type() == torch::kFloat32 ? b.data_ptr<float>()[i]
                                              : static_cast<float>(b.data_ptr<int64_t>()[i]);
  }

  at::Tensor input(const float* x, size_t rows) const {
    return torch::from_blob(const_cast<float*>(x),
                            {static_cast<int64_t>(rows), static_cast<int64_t>(features)},
                            torch::kFloat32);
  }
};

/// A step allocates and frees the same activation and gradient tensors
/// (hundreds of KiB each). In a host's worker threads glibc serves them from
/// per-thread arenas that it trims (madvise) as soon as they are free, or
/// from fresh mmaps, so every step faulted its pages in again: about 15% of
/// a trainer's time on the digits CNN (perf), against a bare loop whose
/// main-thread heap keeps them. Once per process that loads a torch model:
/// keep up to 64 MiB of freed memory, and mmap only above 32 MiB.
void keep_freed_memory() {
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
  });
}

module_state* as(void* m) {
  return static_cast<module_state*>(m);
}

void* load(const char* path, uint64_t file_bytes_max, uint64_t params_max, int* code, char* err,
           size_t err_len) {
  std::string where = path;
  auto fail = [&](int c, const std::string& text) -> void* {
    put_error(code, c, err, err_len, "model " + where + ": " + text);
    return nullptr;
  };
  std::error_code ec;
  auto size = std::filesystem::file_size(where, ec);
  if (ec)
    return fail(not_found, ec.message());
  if (size > file_bytes_max)
    return fail(invalid, fmt::format("{} bytes, over the limit of {}", size, file_bytes_max));
  // Pinned numerics: one intra-op thread, no re-optimization after warm-up.
  at::set_num_threads(1);
  torch::jit::setGraphExecutorOptimize(false);
  keep_freed_memory();
  auto p = std::make_unique<module_state>();
  try {
    p->module = torch::jit::load(where);
  } catch (const std::exception& e) {
    return fail(invalid, fmt::format("not a TorchScript file ({})", first_line(e.what())));
  }
  try {
    auto m = p->module.find_method("forward");
    if (!m)
      return fail(invalid, "has no forward method");
    auto graph = m->graph()->copy();
    torch::jit::Inline(*graph);
    std::set<std::string> bad;
    check_ops(graph->block(), bad);
    if (!bad.empty()) {
      std::string names;
      for (auto& b : bad)
        names += (names.empty() ? "" : ", ") + b;
      return fail(invalid, "forward uses operators outside the allowlist (aten and prim math, "
                           "nothing random, no files): " + names);
    }
    if (!p->module.hasattr("in_features") || !p->module.attr("in_features").isInt())
      return fail(invalid, "needs an int attribute in_features (the F of forward(x: float32[B, F]))");
    auto f = p->module.attr("in_features").toInt();
    if (f <= 0 || f > 1'000'000)
      return fail(invalid, fmt::format("in_features {} is out of range", f));
    p->features = static_cast<uint32_t>(f);
    for (const auto& np : p->module.named_parameters(true)) {
      if (np.value.scalar_type() != torch::kFloat32)
        return fail(invalid, fmt::format("parameter '{}' is {}, not float32", np.name,
                                         std::string{c10::toString(np.value.scalar_type())}));
      p->count += static_cast<size_t>(np.value.numel());
      p->params.push_back(np.value);
    }
    if (p->count == 0)
      return fail(invalid, "has no parameters");
    p->trainable = p->count;
    for (const auto& nb : p->module.named_buffers(true)) {
      auto type = nb.value.scalar_type();
      if (type != torch::kFloat32 && type != torch::kInt64)
        return fail(invalid, fmt::format("buffer '{}' is {}; buffers must be float32 (running "
                                         "statistics) or int64 (counters)",
                                         nb.name, std::string{c10::toString(type)}));
      if (!nb.value.is_contiguous())
        return fail(invalid, fmt::format("buffer '{}' is not contiguous", nb.name));
      p->count += static_cast<size_t>(nb.value.numel());
      p->buffers.push_back(nb.value);
    }
    if (p->count > params_max)
      return fail(invalid, fmt::format("{} parameters and buffer values, over the limit of {}",
                                       p->count, params_max));
    // The probe: forward(float32[2, F]) must give float32[2, C], C >= 2. In
    // eval mode, so that it leaves the running statistics as the file has them.
    torch::NoGradGuard no_grad;
    p->module.eval();
    auto out = p->module.forward({torch::zeros({2, f}, torch::kFloat32)});
    if (!out.isTensor())
      return fail(invalid, fmt::format("forward returns a {}, not a tensor", out.tagKind()));
    auto t = out.toTensor();
    if (t.dim() != 2 || t.size(0) != 2 || t.scalar_type() != torch::kFloat32)
      return fail(invalid, fmt::format("forward(float32[2, {}]) gave {} {}, not float32[2, C]", f,
                                       std::string{c10::toString(t.scalar_type())},
                                       fmt::format("{}", fmt::join(t.sizes().vec(), "x"))));
    if (t.size(1) < 1)
      return fail(invalid, "0 output columns: give C >= 2 logits (a classifier) or 1 value "
                           "(regression)");
    p->classes = static_cast<uint32_t>(t.size(1)); // 1: regression
  } catch (const std::exception& e) {
    return fail(invalid, fmt::format("forward fails on a probe batch ({})", first_line(e.what())));
  }
  p->module.train();
  return p.release();
}

void release(void* m) {
  delete as(m);
}

uint32_t features(void* m) {
  return as(m)->features;
}

uint32_t classes(void* m) {
  return as(m)->classes;
}

size_t param_count(void* m) {
  return as(m)->count;
}

size_t trainable_count(void* m) {
  return as(m)->trainable;
}

void initial_params(void* m, float* out) {
  auto& p = *as(m);
  std::lock_guard lock{p.mu};
  size_t at = 0;
  for (auto& t : p.params) {
    auto c = t.detach().contiguous();
    std::memcpy(out + at, c.data_ptr<float>(), static_cast<size_t>(c.numel()) * sizeof(float));
    at += static_cast<size_t>(c.numel());
  }
  for (auto& b : p.buffers)
    for (size_t i = 0; i < static_cast<size_t>(b.numel()); ++i)
      out[at++] = module_state::buffer_value(b, i);
}

double accumulate_gradient(void* m, const float* params, const float* x, const int32_t* y,
                           size_t rows, float scale, float* grad, char* err, size_t err_len) {
  auto& p = *as(m);
  std::lock_guard lock{p.mu};
  try {
    p.set_params(params);
    for (auto& t : p.params)
      if (t.grad().defined())
        t.mutable_grad().zero_();
    auto out = p.module.forward({p.input(x, rows)}).toTensor();
    // The targets' memory must outlive backward(), which reads them.
    std::vector<float> targets;
    std::vector<int64_t> labels;
    at::Tensor loss;
    if (p.classes == 1) {
      // Regression: y holds float32 targets (their bits); the summed
      // squared error.
      targets.resize(rows);
      std::memcpy(targets.data(), y, rows * sizeof(float));
      auto target = torch::from_blob(targets.data(), {static_cast<int64_t>(rows), 1}, torch::kFloat32);
      loss = at::mse_loss(out, target, at::Reduction::Sum);
    } else {
      labels.assign(y, y + rows);
      auto target = torch::from_blob(labels.data(), {static_cast<int64_t>(rows)}, torch::kInt64);
      loss = at::nll_loss(at::log_softmax(out, 1), target, {}, at::Reduction::Sum);
    }
    (loss * scale).backward();
    size_t at = 0;
    for (auto& t : p.params) {
      auto n = static_cast<size_t>(t.numel());
      if (t.grad().defined()) {
        auto g = t.grad().contiguous();
        auto* d = g.data_ptr<float>();
        for (size_t i = 0; i < n; ++i)
          grad[at + i] += d[i];
      }
      at += n;
    }
    // The buffer rule: forward (train mode) moved the running statistics
    // from this batch; the change, weighted by this shard's share of the
    // global batch (rows x scale), rides in the gradient, so the ring's sum
    // is the mean change over every rank's batch and the optimizer adds it
    // (optimizer::trainable) on every rank alike.
    float weight = static_cast<float>(rows) * scale;
    for (auto& b : p.buffers) {
      auto n = static_cast<size_t>(b.numel());
      for (size_t i = 0; i < n; ++i)
        grad[at + i] += (module_state::buffer_value(b, i) - params[at + i]) * weight;
      at += n;
    }
    return loss.item<double>();
  } catch (const std::exception& e) {
    put_error(nullptr, 0, err, err_len, fmt::format("forward or backward failed on {} rows ({})", rows,
                                                   first_line(e.what())));
    return std::nan("");
  }
}

/// forward at `params` in evaluation mode (BatchNorm normalizes with the
/// running statistics, so a row's answer does not depend on the rows beside
/// it), without gradients; its output checked to be float32[rows, C] before
/// anyone reads it (a forward whose shape depends on the batch passed the
/// probe). Throws on any failure; the module is back in train mode.
at::Tensor eval_forward(module_state& p, const float* params, const float* x, size_t rows) {
  p.set_params(params);
  torch::NoGradGuard no_grad;
  p.module.eval();
  try {
    auto t = p.module.forward({p.input(x, rows)}).toTensor();
    p.module.train();
    if (t.dim() != 2 || t.size(0) != static_cast<int64_t>(rows) || t.size(1) < 1
        || t.scalar_type() != torch::kFloat32)
      throw std::runtime_error("forward's output is not float32[rows, C]");
    return t;
  } catch (...) {
    p.module.train();
    throw;
  }
}

void predict(void* m, const float* params, const float* x, size_t rows, int32_t* out) {
  auto& p = *as(m);
  std::lock_guard lock{p.mu};
  try {
    auto arg = eval_forward(p, params, x, rows).argmax(1).contiguous();
    auto* d = arg.data_ptr<int64_t>();
    for (size_t i = 0; i < rows; ++i)
      out[i] = static_cast<int32_t>(d[i]);
  } catch (const std::exception&) {
    for (size_t i = 0; i < rows; ++i)
      out[i] = -1; // counted wrong
  }
}

void predict_values(void* m, const float* params, const float* x, size_t rows, float* out) {
  auto& p = *as(m);
  std::lock_guard lock{p.mu};
  try {
    auto v = eval_forward(p, params, x, rows).select(1, 0).contiguous();
    std::memcpy(out, v.data_ptr<float>(), rows * sizeof(float));
  } catch (const std::exception&) {
    for (size_t i = 0; i < rows; ++i)
      out[i] = std::nanf(""); // counted as an error of infinite size
  }
}

int save(void* m, const float* params, const char* path, char* err, size_t err_len) {
  auto& p = *as(m);
  std::lock_guard lock{p.mu};
  p.set_params(params);
  std::filesystem::path file{path};
  auto tmp = file;
  tmp += ".tmp";
  // Saved in evaluation mode: torch.jit.load gives a module that predicts
  // as aicon's evaluation does, running statistics and all.
  p.module.eval();
  try {
    p.module.save(tmp.string());
  } catch (const std::exception& e) {
    p.module.train();
    put_error(nullptr, 0, err, err_len, fmt::format("writing {}: {}", tmp.string(), first_line(e.what())));
    return io_error;
  }
  p.module.train();
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) {
    put_error(nullptr, 0, err, err_len, fmt::format("renaming {} to {}: {}", tmp.string(), path, ec.message()));
    return io_error;
  }
  return 0;
}

double bare_samples_per_s(const char* path, const float* x, const int32_t* y, size_t rows,
                          uint32_t batch, uint64_t steps, float lr, int* code, char* err,
                          size_t err_len) {
  std::unique_ptr<module_state> p{as(load(path, 1ull << 40, 1ull << 40, code, err, err_len))};
  if (!p)
    return -1;
  if (batch == 0 || rows < batch) {
    put_error(code, invalid, err, err_len, "bare loop: fewer rows than a batch");
    return -1;
  }
  if (p->classes < 2) {
    put_error(code, invalid, err, err_len, "bare loop: classifiers only (this model has 1 output)");
    return -1;
  }
  std::vector<int64_t> labels(y, y + rows);
  auto start = std::chrono::steady_clock::now();
  for (uint64_t s = 0; s < steps; ++s) {
    size_t at = (s * batch) % (rows - batch + 1);
    for (auto& t : p->params)
      if (t.grad().defined())
        t.mutable_grad().zero_();
    auto logits = p->module.forward({p->input(x + at * p->features, batch)}).toTensor();
    auto target = torch::from_blob(labels.data() + at, {static_cast<int64_t>(batch)}, torch::kInt64);
    at::nll_loss(at::log_softmax(logits, 1), target, {}, at::Reduction::Mean).backward();
    torch::NoGradGuard no_grad;
    for (auto& t : p->params)
      t.add_(t.grad(), -lr);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(steps) * batch / std::max(secs, 1e-9);
}

void environment(void*, char* out, size_t out_len) {
  // libtorch picks its CPU kernels (default, avx2, avx512) at start-up from
  // the CPU unless ATEN_CPU_CAPABILITY pins them.
  const char* pinned = std::getenv("ATEN_CPU_CAPABILITY");
  auto text = fmt::format("libtorch {}, {} thread(s), cpu capability {}", TORCH_VERSION,
                          at::get_num_threads(), pinned && *pinned ? pinned : "auto-detected");
  put_error(nullptr, 0, out, out_len, text);
}

const aicon_torch_api api = {
  aicon_torch_api_version, load,    release, features, classes, param_count, initial_params,
  accumulate_gradient,     predict, save,    bare_samples_per_s, environment, trainable_count,
  predict_values,
};

} // namespace

extern "C" const aicon_torch_api* aicon_torch_api_v1() {
  return &api;
}
