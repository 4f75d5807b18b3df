#define EIGEN_DONT_PARALLELIZE 1
#include "actors/trainer/model.hpp"
#include "actors/trainer/torch_model.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <fstream>

#include <Eigen/Dense>
#include <fmt/format.h>
#include <sodium.h>
#include <unistd.h>

#include "gpu/kernels.hpp"
#include "runtime/byte_io.hpp"
#include "runtime/error.hpp"

namespace aicon::train {

namespace {

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using cmap = Eigen::Map<const matrix>;
using map = Eigen::Map<matrix>;
using cvec = Eigen::Map<const Eigen::RowVectorXf>;
using vec = Eigen::Map<Eigen::RowVectorXf>;

/// Offsets of layer l's W and b in the flat parameter vector.
struct layer_view {
  size_t in, out, w, b;
};

std::vector<layer_view> layout(const model_spec& spec) {
  std::vector<layer_view> out;
  size_t at = 0;
  for (size_t l = 0; l + 1 < spec.layers.size(); ++l) {
    layer_view v{spec.layers[l], spec.layers[l + 1], at, 0};
    at += v.in * v.out;
    v.b = at;
    at += v.out;
    out.push_back(v);
  }
  return out;
}

} // namespace

caf::expected<model_spec> parse_spec(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_argument,
                      fmt::format("model spec '{}': {} (expected e.g. \"softmax:64-10\" or "
                                  "\"mlp:64-64-10\")",
                                  text, why));
  };
  auto colon = text.find(':');
  if (colon == std::string_view::npos)
    return bad("no ':' after the kind");
  model_spec s;
  s.kind = std::string{text.substr(0, colon)};
  if (s.kind == "torch") {
    s.file = std::string{text.substr(colon + 1)};
    if (s.file.empty())
      return bad("torch: needs the TorchScript file after the ':'");
    if (s.file.size() > 4096)
      return bad("the file name is over 4096 characters");
    return s;
  }
  if (s.kind != "softmax" && s.kind != "mlp")
    return bad(fmt::format("unknown kind '{}'", s.kind));
  auto rest = text.substr(colon + 1);
  while (!rest.empty()) {
    auto dash = rest.find('-');
    auto part = rest.substr(0, dash);
    uint32_t v = 0;
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), v);
    if (ec != std::errc{} || p != part.data() + part.size() || v == 0 || v > 65536)
      return bad(fmt::format("'{}' is not a layer width in 1..65536", part));
    s.layers.push_back(v);
    if (dash == std::string_view::npos)
      break;
    rest = rest.substr(dash + 1);
  }
  if (s.kind == "softmax" && s.layers.size() != 2)
    return bad("softmax takes exactly inputs-classes");
  if (s.kind == "mlp" && s.layers.size() < 3)
    return bad("an mlp needs at least one hidden layer");
  if (s.layers.back() < 2)
    return bad("at least 2 classes");
  return s;
}

bool model_spec::is_asset() const {
  return kind == "torch" && file.size() == 64
         && std::all_of(file.begin(), file.end(), [](char c) {
              return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
            });
}

caf::error load_torch(model_spec& spec) {
  if (spec.kind != "torch")
    return {};
  if (spec.is_asset() && spec.local.empty())
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: a model asset must be fetched before it is loaded",
                                  spec.file.substr(0, 16)));
  auto m = torch_module::load(spec.local.empty() ? spec.file : spec.local);
  if (!m)
    return m.error();
  spec.torch = *m;
  spec.layers = {(*m)->features(), (*m)->classes()};
  return {};
}

std::string to_string(const model_spec& spec) {
  if (spec.kind == "torch")
    return "torch:" + spec.file;
  std::string out = spec.kind + ":";
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    if (i)
      out += '-';
    out += std::to_string(spec.layers[i]);
  }
  return out;
}

uint64_t rng::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

float rng::uniform() {
  return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f);
}

std::vector<uint32_t> permutation(uint32_t n, uint64_t seed) {
  std::vector<uint32_t> p(n);
  for (uint32_t i = 0; i < n; ++i)
    p[i] = i;
  rng r{seed};
  for (uint32_t i = n; i > 1; --i) {
    auto j = static_cast<uint32_t>(r.next() % i);
    std::swap(p[i - 1], p[j]);
  }
  return p;
}

size_t model::param_count(const model_spec& spec) {
  if (spec.kind == "torch")
    return spec.torch ? spec.torch->param_count() : 0;
  size_t n = 0;
  for (size_t l = 0; l + 1 < spec.layers.size(); ++l)
    n += static_cast<size_t>(spec.layers[l]) * spec.layers[l + 1] + spec.layers[l + 1];
  return n;
}

size_t model::trainable_count() const {
  return spec_.torch ? spec_.torch->trainable_count() : params_.size();
}

model model::init(const model_spec& spec, uint64_t seed) {
  model m;
  m.spec_ = spec;
  if (spec.kind == "torch") {
    // The file's own initial weights: the researcher chose them (the seed
    // still orders the data).
    if (spec.torch)
      m.params_ = spec.torch->initial_params();
    return m;
  }
  m.params_.assign(param_count(spec), 0.0f);
  rng r{seed};
  for (auto& v : layout(spec)) {
    float a = std::sqrt(6.0f / static_cast<float>(v.in + v.out));
    for (size_t i = 0; i < v.in * v.out; ++i)
      m.params_[v.w + i] = (2.0f * r.uniform() - 1.0f) * a;
  }
  return m;
}

caf::expected<model> model::from_params(const model_spec& spec, std::vector<float> params) {
  if (params.size() != param_count(spec))
    return make_error(errc::invalid_argument,
                      fmt::format("{} has {} parameters, not {}", to_string(spec),
                                  param_count(spec), params.size()));
  model m;
  m.spec_ = spec;
  m.params_ = std::move(params);
  return m;
}

double model::accumulate_gradient(const float* x, const int32_t* y, size_t rows, float scale,
                                  std::span<float> grad) const {
  if (rows == 0)
    return 0;
  if (spec_.torch)
    return spec_.torch->accumulate_gradient(params_, x, y, rows, scale, grad);
  auto views = layout(spec_);
  // Forward, keeping every activation.
  std::vector<matrix> acts;
  acts.emplace_back(cmap(x, static_cast<Eigen::Index>(rows), spec_.layers[0]));
  for (size_t l = 0; l < views.size(); ++l) {
    auto& v = views[l];
    cmap w(params_.data() + v.w, v.out, v.in);
    cvec b(params_.data() + v.b, v.out);
    matrix z = acts.back() * w.transpose();
    z.rowwise() += b;
    if (l + 1 < views.size())
      z = z.cwiseMax(0.0f);
    acts.push_back(std::move(z));
  }
  // Softmax and cross-entropy on the last layer; dz = (p - onehot) * scale.
  matrix& logits = acts.back();
  double loss = 0;
  matrix dz(logits.rows(), logits.cols());
  for (Eigen::Index r = 0; r < logits.rows(); ++r) {
    float mx = logits.row(r).maxCoeff();
    float sum = 0;
    for (Eigen::Index c = 0; c < logits.cols(); ++c) {
      float e = std::exp(logits(r, c) - mx);
      dz(r, c) = e;
      sum += e;
    }
    auto label = static_cast<Eigen::Index>(y[r]);
    loss += static_cast<double>(std::log(sum) - (logits(r, label) - mx));
    for (Eigen::Index c = 0; c < logits.cols(); ++c)
      dz(r, c) = (dz(r, c) / sum - (c == label ? 1.0f : 0.0f)) * scale;
  }
  // Backward.
  for (size_t l = views.size(); l-- > 0;) {
    auto& v = views[l];
    const matrix& in = acts[l];
    map gw(grad.data() + v.w, v.out, v.in);
    vec gb(grad.data() + v.b, v.out);
    gw.noalias() += dz.transpose() * in;
    gb += dz.colwise().sum();
    if (l == 0)
      break;
    cmap w(params_.data() + v.w, v.out, v.in);
    matrix da = dz * w;
    // ReLU: acts[l] holds max(z, 0); the gradient passes where it is > 0.
    dz = da.cwiseProduct((in.array() > 0.0f).cast<float>().matrix());
  }
  return loss;
}

std::vector<float> model::predict_values(const float* x, size_t rows) const {
  if (!spec_.regression())
    return {};
  return spec_.torch->predict_values(params_, x, rows);
}

std::vector<int32_t> model::predict(const float* x, size_t rows) const {
  if (spec_.torch)
    return spec_.torch->predict(params_, x, rows);
  auto views = layout(spec_);
  matrix a = cmap(x, static_cast<Eigen::Index>(rows), spec_.layers[0]);
  for (size_t l = 0; l < views.size(); ++l) {
    auto& v = views[l];
    cmap w(params_.data() + v.w, v.out, v.in);
    cvec b(params_.data() + v.b, v.out);
    matrix z = a * w.transpose();
    z.rowwise() += b;
    a = l + 1 < views.size() ? matrix(z.cwiseMax(0.0f)) : z;
  }
  std::vector<int32_t> out(rows);
  for (Eigen::Index r = 0; r < a.rows(); ++r) {
    Eigen::Index best = 0;
    a.row(r).maxCoeff(&best);
    out[static_cast<size_t>(r)] = static_cast<int32_t>(best);
  }
  return out;
}

caf::expected<optimizer_kind> parse_optimizer(std::string_view text) {
  if (text == "sgd")
    return optimizer_kind::sgd;
  if (text == "adamw")
    return optimizer_kind::adamw;
  return make_error(errc::invalid_argument,
                    fmt::format("optimizer '{}': expected \"sgd\" or \"adamw\"", text));
}

std::string to_string(optimizer_kind k) {
  return k == optimizer_kind::adamw ? "adamw" : "sgd";
}

void optimizer::step(std::span<float> params, std::span<const float> grad) {
  if (velocity.size() != params.size())
    velocity.assign(params.size(), 0.0f);
  size_t n = std::min(trainable, params.size());
  for (size_t i = n; i < params.size(); ++i)
    params[i] += grad[i];
  if (kind == optimizer_kind::sgd) {
    // The CPU reference of the GPU kernel: the same rounding step by step.
    gpu::cpu_sgd_momentum(params.data(), velocity.data(), grad.data(), n, lr, momentum,
                          weight_decay);
    return;
  }
  if (second.size() != params.size())
    second.assign(params.size(), 0.0f);
  ++t;
  // Bias corrections in double, then one float each: the same on every host.
  auto c1 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(t)));
  auto c2 = static_cast<float>(1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(t)));
  for (size_t i = 0; i < n; ++i) {
    float g = grad[i];
    float m = beta1 * velocity[i] + (1.0f - beta1) * g;
    float v = beta2 * second[i] + (1.0f - beta2) * (g * g);
    velocity[i] = m;
    second[i] = v;
    float update = (m / c1) / (std::sqrt(v / c2) + eps) + weight_decay * params[i];
    params[i] -= lr * update;
  }
}

// ---- Checkpoints -------------------------------------------------------------

namespace {

constexpr char magic[8] = {'A', 'I', 'C', 'K', 'P', 'T', '0', '1'};
/// Version 2 adds the optimizer (kind, t, second moment) after version 1's
/// sections; an SGD checkpoint is still written as version 1.
constexpr char magic_v2[8] = {'A', 'I', 'C', 'K', 'P', 'T', '0', '2'};

void put_floats(std::vector<uint8_t>& out, const std::vector<float>& v) {
  put_le64(out, v.size());
  auto at = out.size();
  out.resize(at + v.size() * 4);
  std::memcpy(out.data() + at, v.data(), v.size() * 4);
}

struct reader : byte_reader {
  std::vector<float> floats() {
    auto n = u64();
    if (!ok || n > (bytes.size() - at) / 4) {
      ok = false;
      return {};
    }
    std::vector<float> v(n);
    std::memcpy(v.data(), bytes.data() + at, n * 4);
    at += n * 4;
    return v;
  }
};

} // namespace

std::vector<uint8_t> checkpoint_bytes(const checkpoint& c) {
  bool v2 = c.optimizer != optimizer_kind::sgd;
  std::vector<uint8_t> out(v2 ? magic_v2 : magic, (v2 ? magic_v2 : magic) + 8);
  auto spec = to_string(c.spec);
  put_le64(out, spec.size());
  out.insert(out.end(), spec.begin(), spec.end());
  put_le64(out, c.step);
  put_le64(out, c.cursor);
  put_le64(out, c.epoch);
  put_le64(out, c.seed);
  put_floats(out, c.params);
  put_floats(out, c.velocity);
  if (v2) {
    put_le64(out, static_cast<uint64_t>(c.optimizer));
    put_le64(out, c.adam_steps);
    put_floats(out, c.second);
  }
  uint8_t digest[32];
  crypto_generichash(digest, 32, out.data(), out.size(), nullptr, 0);
  out.insert(out.end(), digest, digest + 32);
  return out;
}

caf::error save_checkpoint(const std::filesystem::path& path, const checkpoint& c) {
  auto out = checkpoint_bytes(c);
  auto tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f{tmp, std::ios::binary | std::ios::trunc};
    f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
    if (!f.flush())
      return make_error(errc::io_error, fmt::format("cannot write {}", tmp.string()));
  }
  // fsync the data before the rename makes it the checkpoint.
  if (FILE* f = std::fopen(tmp.c_str(), "rb")) {
    ::fsync(::fileno(f));
    std::fclose(f);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec)
    return make_error(errc::io_error,
                      fmt::format("cannot rename {} to {}: {}", tmp.string(), path.string(),
                                  ec.message()));
  return caf::none;
}

caf::expected<checkpoint> load_checkpoint(const std::filesystem::path& path) {
  std::ifstream f{path, std::ios::binary};
  if (!f)
    return make_error(errc::not_found, fmt::format("{}: cannot open", path.string()));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return parse_checkpoint(bytes, path.string());
}

caf::expected<checkpoint> parse_checkpoint(std::span<const uint8_t> bytes, const std::string& what) {
  auto bad = [&](const std::string& why) {
    return make_error(errc::invalid_argument, fmt::format("{}: {}", what, why));
  };
  bool v2 = bytes.size() >= 8 && std::memcmp(bytes.data(), magic_v2, 8) == 0;
  if (bytes.size() < 8 + 32 || (!v2 && std::memcmp(bytes.data(), magic, 8) != 0))
    return bad("not an aicon checkpoint (no AICKPT01 or AICKPT02 magic)");
  uint8_t digest[32];
  crypto_generichash(digest, 32, bytes.data(), bytes.size() - 32, nullptr, 0);
  if (std::memcmp(digest, bytes.data() + bytes.size() - 32, 32) != 0)
    return bad("digest mismatch: the file is truncated or corrupt");
  reader r{{{bytes.data(), bytes.size() - 32}, 8}};
  checkpoint c;
  auto len = r.u64();
  if (!r.ok || len > 4200 || r.at + len > r.bytes.size())
    return bad("the model spec is cut off");
  auto spec = parse_spec({reinterpret_cast<const char*>(bytes.data() + r.at), len});
  if (!spec)
    return bad(what_of(spec.error()));
  c.spec = *spec;
  r.at += len;
  c.step = r.u64();
  c.cursor = r.u64();
  c.epoch = r.u64();
  c.seed = r.u64();
  c.params = r.floats();
  c.velocity = r.floats();
  if (v2) {
    auto kind = r.u64();
    if (kind != static_cast<uint64_t>(optimizer_kind::adamw))
      return bad(fmt::format("unknown optimizer {}", kind));
    c.optimizer = optimizer_kind::adamw;
    c.adam_steps = r.u64();
    c.second = r.floats();
  }
  if (!r.ok || r.at != r.bytes.size())
    return bad("its sections do not add up to its size");
  // A torch spec's size is known once its file is loaded: whoever loads it
  // checks the parameters against it (model::from_params).
  if (c.spec.kind == "torch")
    return c;
  auto n = model::param_count(c.spec);
  if (c.params.size() != n || (!c.velocity.empty() && c.velocity.size() != n)
      || (!c.second.empty() && c.second.size() != n))
    return bad(fmt::format("{} parameters for {} (needs {})", c.params.size(),
                           to_string(c.spec), n));
  return c;
}

} // namespace aicon::train
