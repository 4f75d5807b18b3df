#include "actors/trainer/torch_model.hpp"

#include <cmath>
#include <cstdio>
#include <mutex>

#include <dlfcn.h>
#include <unistd.h>

#include <fmt/format.h>

#include "actors/trainer/torch_plugin.hpp"
#include "runtime/error.hpp"

namespace aicon::train {

namespace {

constexpr size_t error_bytes = 1024;

/// The plug-in, opened once per process on first use (dlopen; never closed).
struct plugin {
  const aicon_torch_api* api = nullptr;
  std::string why; ///< why there is none
};

/// Where libaicon_torch.so is looked for: $AICON_TORCH_PLUGIN, next to the
/// running binary, then where this build put it.
std::vector<std::string> candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("AICON_TORCH_PLUGIN"); env && *env)
    out.emplace_back(env);
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec)
    out.push_back((self.parent_path() / "libaicon_torch.so").string());
#ifdef AICON_TORCH_PLUGIN_PATH
  out.emplace_back(AICON_TORCH_PLUGIN_PATH);
#endif
  return out;
}

const plugin& the_plugin() {
  static plugin p;
  static std::once_flag once;
  std::call_once(once, [] {
#ifndef AICON_TORCH_PLUGIN_PATH
    p.why = "this aicon was built without libtorch (install libtorch-dev and rebuild)";
    return;
#else
    std::string tried;
    for (auto& path : candidates()) {
      void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
      if (!h) {
        tried += fmt::format("{}{}", tried.empty() ? "" : "; ", dlerror());
        continue;
      }
      auto entry = reinterpret_cast<const aicon_torch_api* (*)()>(dlsym(h, "aicon_torch_api_v1"));
      if (!entry || !entry() || entry()->version != aicon_torch_api_version) {
        tried += fmt::format("{}{}: not an aicon torch plug-in of version {}", tried.empty() ? "" : "; ",
                             path, aicon_torch_api_version);
        continue;
      }
      p.api = entry();
      return;
    }
    p.why = "cannot open the libtorch plug-in libaicon_torch.so (" + tried + ")";
#endif
  });
  return p;
}

errc code_from(int c) {
  return c == 1 ? errc::not_found : c == 3 ? errc::io_error : errc::invalid_argument;
}

} // namespace

struct torch_module::impl {
  const aicon_torch_api* api = nullptr;
  void* module = nullptr;
  ~impl() {
    if (api && module)
      api->release(module);
  }
};

bool torch_available() {
  return the_plugin().api != nullptr;
}

torch_module::torch_module(std::unique_ptr<impl> p) : impl_(std::move(p)) {}
torch_module::~torch_module() = default;

caf::expected<std::shared_ptr<torch_module>> torch_module::load(const std::filesystem::path& file,
                                                                const torch_limits& lim) {
  auto& pl = the_plugin();
  if (!pl.api)
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: {}; TorchScript models cannot be loaded",
                                  file.string(), pl.why));
  int code = 0;
  char err[error_bytes] = {};
  void* m = pl.api->load(file.string().c_str(), lim.file_bytes_max, lim.params_max, &code, err,
                         sizeof err);
  if (!m)
    return make_error(code_from(code), err);
  auto p = std::make_unique<impl>();
  p->api = pl.api;
  p->module = m;
  return std::shared_ptr<torch_module>(new torch_module(std::move(p)));
}

uint32_t torch_module::features() const {
  return impl_->api->features(impl_->module);
}

uint32_t torch_module::classes() const {
  return impl_->api->classes(impl_->module);
}

size_t torch_module::param_count() const {
  return impl_->api->param_count(impl_->module);
}

std::vector<float> torch_module::initial_params() const {
  std::vector<float> out(param_count());
  impl_->api->initial_params(impl_->module, out.data());
  return out;
}

double torch_module::accumulate_gradient(std::span<const float> params, const float* x,
                                         const int32_t* y, size_t rows, float scale,
                                         std::span<float> grad) const {
  if (params.size() != param_count() || grad.size() != param_count())
    return 0; // the callers size both from param_count
  char err[error_bytes] = {};
  double loss = impl_->api->accumulate_gradient(impl_->module, params.data(), x, y, rows, scale,
                                                grad.data(), err, sizeof err);
  if (std::isnan(loss)) {
    // A NaN loss fails the step where the trainer checks it; say why once.
    static std::once_flag said;
    std::call_once(said, [&] { std::fprintf(stderr, "aicon: torch step: %s\n", err); });
  }
  return loss;
}

size_t torch_module::trainable_count() const {
  return impl_->api->trainable_count(impl_->module);
}

std::vector<int32_t> torch_module::predict(std::span<const float> params, const float* x,
                                           size_t rows) const {
  std::vector<int32_t> out(rows);
  if (params.size() == param_count())
    impl_->api->predict(impl_->module, params.data(), x, rows, out.data());
  return out;
}

std::vector<float> torch_module::predict_values(std::span<const float> params, const float* x,
                                                size_t rows) const {
  std::vector<float> out(rows, std::nanf(""));
  if (params.size() == param_count())
    impl_->api->predict_values(impl_->module, params.data(), x, rows, out.data());
  return out;
}

caf::error torch_module::save(std::span<const float> params, const std::filesystem::path& file) const {
  if (params.size() != param_count())
    return make_error(errc::invalid_argument,
                      fmt::format("{} parameters for a model of {}", params.size(), param_count()));
  char err[error_bytes] = {};
  if (int c = impl_->api->save(impl_->module, params.data(), file.string().c_str(), err, sizeof err))
    return make_error(code_from(c), err);
  return {};
}

caf::expected<double> torch_module::bare_samples_per_s(const std::filesystem::path& file,
                                                        const float* x, const int32_t* y,
                                                        size_t rows, uint32_t batch, uint64_t steps,
                                                        float lr) {
  auto& pl = the_plugin();
  if (!pl.api)
    return make_error(errc::invalid_argument, pl.why);
  int code = 0;
  char err[error_bytes] = {};
  double r = pl.api->bare_samples_per_s(file.string().c_str(), x, y, rows, batch, steps, lr, &code,
                                        err, sizeof err);
  if (r < 0)
    return make_error(code_from(code), err);
  return r;
}

std::string torch_module::environment() const {
  char out[256] = {};
  impl_->api->environment(impl_->module, out, sizeof out);
  return out;
}

} // namespace aicon::train
