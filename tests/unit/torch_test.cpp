// Researchers' TorchScript models: the contract check refuses each broken
// model by name; the CNN made by examples/models/make_models.py steps like a
// built-in model (4 shards sum to the whole batch's gradient, steps are the
// same bits run to run) and learns digits to >= 0.97 held-out. Reports
// itself skipped where the build has no libtorch or /usr/bin/python3 has no
// torch to make the models with.
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "actors/data_node/ingest.hpp"
#include "actors/trainer/model.hpp"
#include "actors/trainer/torch_model.hpp"
#include "actors/trainer/work.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace aicon::train;

namespace {

/// The models of examples/models/make_models.py in a temporary directory,
/// or why they cannot be made here.
struct models {
  test::temp_dir dir;
  std::string skip;

  models() {
    if (!torch_available()) {
      skip = "this build has no libtorch";
      return;
    }
    auto cmd = fmt::format("/usr/bin/python3 {}/examples/models/make_models.py {} > {}/make.log 2>&1",
                           AICON_SOURCE_DIR, dir.path().string(), dir.path().string());
    if (std::system(cmd.c_str()) != 0)
      skip = "/usr/bin/python3 cannot make TorchScript models (python3-torch missing?)";
  }

  std::filesystem::path operator[](const std::string& name) const {
    return dir.path() / (name + ".pt");
  }
};

std::string refusal(const std::filesystem::path& p) {
  auto m = torch_module::load(p);
  BOOST_REQUIRE_MESSAGE(!m, "loaded " << p << " which breaks the contract");
  return describe(m.error());
}

/// The gradient and loss of `t` at `params` over the first 64 rows of x,
/// y against 4 shards of 16 rows summed: equal within 1e-5 relative.
void four_shards_sum_to_the_whole(const torch_module& t, const std::vector<float>& params,
                                  const float* x, const int32_t* y, size_t features) {
  const size_t rows = 64;
  std::vector<float> whole(params.size()), parts(params.size());
  double loss = t.accumulate_gradient(params, x, y, rows, 1.0f / rows, whole);
  double loss_parts = 0;
  for (size_t k = 0; k < 4; ++k)
    loss_parts += t.accumulate_gradient(params, x + k * 16 * features, y + k * 16, 16,
                                        1.0f / rows, parts);
  BOOST_TEST(std::abs(loss - loss_parts) <= 1e-5 * std::abs(loss));
  double norm = 0, diff = 0;
  for (size_t i = 0; i < params.size(); ++i) {
    norm += double{whole[i]} * whole[i];
    diff += double{whole[i] - parts[i]} * (whole[i] - parts[i]);
  }
  BOOST_TEST(norm > 0);
  BOOST_TEST(std::sqrt(diff) <= 1e-5 * std::sqrt(norm));
}

#define SKIP_WITHOUT_TORCH(m)                                                                      \
  if (!(m).skip.empty()) {                                                                         \
    BOOST_TEST_MESSAGE("torch test skipped: " << (m).skip);                                       \
    return;                                                                                        \
  }

} // namespace

BOOST_AUTO_TEST_SUITE(torch_models)

BOOST_AUTO_TEST_CASE(the_contract_refuses_each_broken_model_by_name) {
  models m;
  SKIP_WITHOUT_TORCH(m);
  auto junk = m.dir.path() / "junk.pt";
  {
    std::ofstream f{junk};
    f << "not a zip archive";
  }
  BOOST_TEST(refusal(junk).find("not a TorchScript file") != std::string::npos, refusal(junk));
  auto absent = torch_module::load(m.dir.path() / "absent.pt");
  BOOST_REQUIRE(!absent);
  BOOST_TEST(code_of(absent.error()) == errc::not_found);
  auto r = refusal(m["dropout"]);
  BOOST_TEST(r.find("outside the allowlist") != std::string::npos, r);
  BOOST_TEST(r.find("aten::dropout") != std::string::npos, r);
  r = refusal(m["double_buffer"]);
  BOOST_TEST(r.find("buffer 'scale' is Double") != std::string::npos, r);
  r = refusal(m["bad_output"]);
  BOOST_TEST(r.find("not float32[2, C]") != std::string::npos, r);
  r = refusal(m["no_in_features"]);
  BOOST_TEST(r.find("needs an int attribute in_features") != std::string::npos, r);
  torch_limits small;
  small.params_max = 100;
  auto big = torch_module::load(m["digits_cnn"], small);
  BOOST_REQUIRE(!big);
  BOOST_TEST(describe(big.error()).find("over the limit of 100") != std::string::npos,
             describe(big.error()));
}

BOOST_AUTO_TEST_CASE(four_shards_sum_to_the_whole_batch_and_steps_repeat_bit_for_bit) {
  models m;
  SKIP_WITHOUT_TORCH(m);
  auto cnn = torch_module::load(m["digits_cnn"]);
  BOOST_REQUIRE_MESSAGE(cnn, test::why(cnn));
  auto& t = **cnn;
  BOOST_TEST(t.features() == 64u);
  BOOST_TEST(t.classes() == 10u);
  BOOST_TEST(t.environment().find("1 thread") != std::string::npos, t.environment());
  auto params = t.initial_params();
  BOOST_REQUIRE_EQUAL(params.size(), t.param_count());
  const size_t rows = 64;
  std::vector<float> x(rows * 64);
  std::vector<int32_t> y(rows);
  rng r{7};
  for (auto& v : x)
    v = 2 * r.uniform() - 1;
  for (auto& v : y)
    v = static_cast<int32_t>(r.next() % 10);
  four_shards_sum_to_the_whole(t, params, x.data(), y.data(), 64);
  // The same step again: the same bits.
  std::vector<float> whole(params.size()), again(params.size());
  (void) t.accumulate_gradient(params, x.data(), y.data(), rows, 1.0f / rows, whole);
  (void) t.accumulate_gradient(params, x.data(), y.data(), rows, 1.0f / rows, again);
  BOOST_TEST(std::memcmp(again.data(), whole.data(), whole.size() * sizeof(float)) == 0);
}

namespace {

/// Trains `t` on digits for `epochs` with `ranks` shards per batch (each
/// shard's gradient and buffer move summed, as the ring does), checks
/// held-out accuracy >= `goal`, then saves the weights as TorchScript and
/// checks that Python's torch.jit.load predicts exactly what aicon does.
void learns_digits(const models& m, const torch_module& t, size_t ranks, double goal) {
  auto table = data::read_csv(std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz", {});
  BOOST_REQUIRE_MESSAGE(table, test::why(table));
  data::fit_and_apply(*table, data::transform::kind::standardize);
  auto order = permutation(static_cast<uint32_t>(table->rows), 2026);
  size_t cut = table->rows * 8 / 10;
  auto params = t.initial_params();
  sgd opt;
  opt.lr = 0.02f;
  opt.trainable = t.trainable_count();
  const size_t batch = 32;
  std::vector<float> g(params.size()), bx(batch * 64);
  std::vector<int32_t> by(batch);
  for (uint64_t epoch = 0; epoch < 20; ++epoch) {
    auto shuffle = permutation(static_cast<uint32_t>(cut), 100 + epoch);
    for (size_t at = 0; at + batch <= cut; at += batch) {
      for (size_t i = 0; i < batch; ++i) {
        auto row = order[shuffle[at + i]];
        std::memcpy(bx.data() + i * 64, table->x.data() + row * 64, 64 * 4);
        by[i] = table->y[row];
      }
      std::fill(g.begin(), g.end(), 0.0f);
      size_t shard = batch / ranks;
      for (size_t r = 0; r < ranks; ++r)
        t.accumulate_gradient(params, bx.data() + r * shard * 64, by.data() + r * shard, shard,
                              1.0f / batch, g);
      opt.step(params, g);
    }
  }
  std::vector<float> tx;
  std::vector<int32_t> ty;
  for (size_t i = cut; i < table->rows; ++i) {
    tx.insert(tx.end(), table->x.begin() + order[i] * 64, table->x.begin() + (order[i] + 1) * 64);
    ty.push_back(table->y[order[i]]);
  }
  auto pred = t.predict(params, tx.data(), ty.size());
  size_t ok = 0;
  for (size_t i = 0; i < ty.size(); ++i)
    ok += pred[i] == ty[i] ? 1 : 0;
  double acc = static_cast<double>(ok) / static_cast<double>(ty.size());
  BOOST_TEST_MESSAGE("held-out accuracy " << acc << " with " << ranks << " shard(s)");
  BOOST_TEST(acc >= goal);

  // The trained weights saved back as TorchScript: Python's torch.jit.load
  // reads them and predicts exactly what aicon predicts.
  auto out = m.dir.path() / "trained.pt";
  BOOST_REQUIRE(!t.save(params, out));
  auto inputs = m.dir.path() / "inputs.f32";
  {
    std::ofstream f{inputs, std::ios::binary};
    f.write(reinterpret_cast<const char*>(tx.data()), static_cast<std::streamsize>(tx.size() * 4));
  }
  auto preds = m.dir.path() / "preds.txt";
  auto cmd = fmt::format(
    "/usr/bin/python3 -c \"import sys, torch; m = torch.jit.load(sys.argv[1]); "
    "x = torch.frombuffer(bytearray(open(sys.argv[2], 'rb').read()), dtype=torch.float32).view(-1, 64); "
    "open(sys.argv[3], 'w').write(' '.join(str(int(v)) for v in m(x).argmax(1)))\" {} {} {}",
    out.string(), inputs.string(), preds.string());
  BOOST_REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  std::ifstream pf{preds};
  std::vector<int32_t> py;
  for (int32_t v; pf >> v;)
    py.push_back(v);
  BOOST_REQUIRE_EQUAL(py.size(), pred.size());
  BOOST_TEST(py == pred, boost::test_tools::per_element());
}

} // namespace

BOOST_AUTO_TEST_CASE(the_digits_cnn_learns_digits) {
  models m;
  SKIP_WITHOUT_TORCH(m);
  auto cnn = torch_module::load(m["digits_cnn"]);
  BOOST_REQUIRE_MESSAGE(cnn, test::why(cnn));
  BOOST_TEST((*cnn)->trainable_count() == (*cnn)->param_count()); // no buffers
  learns_digits(m, **cnn, 1, 0.97);
}

// Regression: a model with one output column trains on the squared error
// against a CSV's float targets (csv_options::targets); 4 shards sum to
// the whole batch's gradient as for a classifier; held-out R^2 on the
// diabetes data comes out near ordinary least squares'; the saved file
// predicts in Python what aicon predicts.
BOOST_AUTO_TEST_CASE(a_regression_model_learns_diabetes) {
  models m;
  SKIP_WITHOUT_TORCH(m);
  auto spec = parse_spec("torch:" + m["diabetes_mlp"].string());
  BOOST_REQUIRE_MESSAGE(spec, test::why(spec));
  BOOST_REQUIRE(!load_torch(*spec));
  BOOST_TEST(spec->regression());
  auto file = std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/diabetes.csv.gz";
  data::csv_options csv;
  csv.targets = true;
  auto table = data::read_csv(file, csv);
  BOOST_REQUIRE_MESSAGE(table, test::why(table));
  BOOST_TEST(table->regression);
  BOOST_TEST(table->rows == 442u);
  BOOST_TEST(table->features == 10u);
  BOOST_TEST(table->classes == 0u);
  BOOST_TEST(data::target_of(*table, 0) == 151.0f);
  // Targets come from CSV files only, and must be numbers.
  auto npy = data::read_any(m.dir.path() / "x.npy", std::nullopt, csv, std::nullopt);
  BOOST_REQUIRE(!npy);
  BOOST_TEST(describe(npy.error()).find("regression targets are read from CSV files only")
               != std::string::npos,
             describe(npy.error()));
  auto text = m.dir.path() / "text.csv";
  {
    std::ofstream f{text};
    f << "1,2,3.5\n4,5,high\n";
  }
  auto words = data::read_csv(text, csv);
  BOOST_REQUIRE(!words);
  BOOST_TEST(describe(words.error()).find(":2:3: target 'high' is not a number") != std::string::npos,
             describe(words.error()));

  data::fit_and_apply(*table, data::transform::kind::standardize);
  auto split = split_rows(*table, 20, 2026);
  BOOST_TEST(split.test.regression);
  auto& t = *spec->torch;
  auto params = t.initial_params();
  // 4 shards of 16 rows: the whole batch's gradient and loss.
  four_shards_sum_to_the_whole(t, params, split.train.x.data(), split.train.y.data(), 10);
  optimizer opt;
  opt.kind = optimizer_kind::adamw;
  opt.lr = 0.01f;
  opt.weight_decay = 0;
  opt.trainable = t.trainable_count();
  const size_t batch = 32, f = 10;
  std::vector<float> g(params.size()), bx(batch * f);
  std::vector<int32_t> by(batch);
  auto rows = static_cast<uint32_t>(split.train.rows);
  for (uint64_t epoch = 0; epoch < 60; ++epoch) {
    auto order = permutation(rows, 7 + epoch);
    for (size_t at = 0; at + batch <= rows; at += batch) {
      for (size_t i = 0; i < batch; ++i) {
        std::memcpy(bx.data() + i * f, split.train.x.data() + order[at + i] * f, f * 4);
        by[i] = split.train.y[order[at + i]];
      }
      std::fill(g.begin(), g.end(), 0.0f);
      t.accumulate_gradient(params, bx.data(), by.data(), batch, 1.0f / batch, g);
      opt.step(params, g);
    }
  }
  auto trained = model::from_params(*spec, params);
  BOOST_REQUIRE_MESSAGE(trained, test::why(trained));
  auto e = evaluate(*trained, split.test);
  BOOST_TEST(e.regression);
  BOOST_TEST_MESSAGE("diabetes held-out R^2 " << e.r2 << ", mean squared error " << e.loss);
  BOOST_TEST(e.r2 >= 0.35);
  BOOST_TEST(e.accuracy == 0.0);

  // Saved as TorchScript: Python predicts the same values.
  auto out = m.dir.path() / "diabetes_trained.pt";
  BOOST_REQUIRE(!t.save(params, out));
  auto inputs = m.dir.path() / "diabetes.f32";
  {
    std::ofstream fo{inputs, std::ios::binary};
    fo.write(reinterpret_cast<const char*>(split.test.x.data()),
             static_cast<std::streamsize>(split.test.x.size() * 4));
  }
  auto preds = m.dir.path() / "diabetes_preds.txt";
  auto cmd = fmt::format(
    "/usr/bin/python3 -c \"import sys, torch; m = torch.jit.load(sys.argv[1]); "
    "x = torch.frombuffer(bytearray(open(sys.argv[2], 'rb').read()), dtype=torch.float32).view(-1, 10); "
    "open(sys.argv[3], 'w').write(' '.join(repr(float(v)) for v in m(x)[:, 0]))\" {} {} {}",
    out.string(), inputs.string(), preds.string());
  BOOST_REQUIRE_MESSAGE(std::system(cmd.c_str()) == 0, cmd);
  auto ours = trained->predict_values(split.test.x.data(), split.test.rows);
  std::ifstream pf{preds};
  std::vector<float> py;
  for (double v; pf >> v;)
    py.push_back(static_cast<float>(v));
  BOOST_REQUIRE_EQUAL(py.size(), ours.size());
  // (Python's torch may run its own thread count and kernels: within float
  // rounding, not bit for bit.)
  size_t off = 0;
  for (size_t i = 0; i < ours.size(); ++i)
    off += std::abs(py[i] - ours[i]) <= 1e-5f * std::abs(ours[i]) + 1e-4f ? 0 : 1;
  BOOST_TEST(off == 0u);
}

// The buffer rule of torch_model.hpp, step by step: after one step of two
// shards, the running mean is 0.9 x 0 + 0.1 x the whole batch's mean of the
// BatchNorm input, the running variance 0.9 x 1 + 0.1 x the mean of the
// shards' unbiased variances, the counter 1; evaluation normalizes with the
// running statistics, so a row's class does not depend on its neighbours.
BOOST_AUTO_TEST_CASE(batchnorm_buffers_follow_the_buffer_rule) {
  models m;
  SKIP_WITHOUT_TORCH(m);
  auto bn = torch_module::load(m["batchnorm"]);
  BOOST_REQUIRE_MESSAGE(bn, test::why(bn));
  auto& t = **bn;
  // fc1 (64 -> 32), bn (weight, bias), fc2 (32 -> 10); then running mean,
  // running variance (32 each) and the counter.
  const size_t fc1 = 64 * 32 + 32, trainable = fc1 + 2 * 32 + 32 * 10 + 10;
  BOOST_REQUIRE_EQUAL(t.trainable_count(), trainable);
  BOOST_REQUIRE_EQUAL(t.param_count(), trainable + 32 + 32 + 1);
  auto params = t.initial_params();
  for (size_t j = 0; j < 32; ++j) {
    BOOST_TEST(params[trainable + j] == 0.0f);
    BOOST_TEST(params[trainable + 32 + j] == 1.0f);
  }
  BOOST_TEST(params[trainable + 64] == 0.0f);

  const size_t rows = 64, shard = 32;
  std::vector<float> x(rows * 64);
  std::vector<int32_t> y(rows);
  rng r{11};
  for (auto& v : x)
    v = 2 * r.uniform() - 1;
  for (auto& v : y)
    v = static_cast<int32_t>(r.next() % 10);
  // The BatchNorm input, from fc1's weights: h = W x + b.
  std::vector<double> h(rows * 32);
  for (size_t i = 0; i < rows; ++i)
    for (size_t j = 0; j < 32; ++j) {
      double s = params[64 * 32 + j];
      for (size_t k = 0; k < 64; ++k)
        s += double{params[j * 64 + k]} * x[i * 64 + k];
      h[i * 32 + j] = s;
    }
  std::vector<float> grad(params.size(), 0.0f);
  for (size_t k = 0; k < 2; ++k)
    t.accumulate_gradient(params, x.data() + k * shard * 64, y.data() + k * shard, shard,
                          1.0f / rows, grad);
  auto before = params;
  sgd opt;
  opt.lr = 0.05f;
  opt.trainable = t.trainable_count();
  opt.step(params, grad);
  for (size_t j = 0; j < 32; ++j) {
    double mean = 0, var = 0;
    for (size_t k = 0; k < 2; ++k) {
      double m1 = 0, m2 = 0;
      for (size_t i = k * shard; i < (k + 1) * shard; ++i)
        m1 += h[i * 32 + j];
      m1 /= shard;
      for (size_t i = k * shard; i < (k + 1) * shard; ++i)
        m2 += (h[i * 32 + j] - m1) * (h[i * 32 + j] - m1);
      mean += m1 / 2;
      var += m2 / (shard - 1) / 2;
    }
    BOOST_TEST(std::abs(params[trainable + j] - 0.1 * mean) <= 1e-5 + 1e-4 * std::abs(0.1 * mean));
    BOOST_TEST(std::abs(params[trainable + 32 + j] - (0.9 + 0.1 * var)) <= 1e-5);
  }
  BOOST_TEST(params[trainable + 64] == 1.0f);
  // The weights moved by the optimizer, the buffers by their mean change only.
  BOOST_TEST(std::memcmp(before.data(), params.data(), trainable * sizeof(float)) != 0);
  std::fill(grad.begin(), grad.end(), 0.0f);
  t.accumulate_gradient(params, x.data(), y.data(), rows, 1.0f / rows, grad);
  opt.step(params, grad);
  BOOST_TEST(params[trainable + 64] == 2.0f);

  // Evaluation: one row alone (a batch of one, which train-mode BatchNorm
  // refuses) gets the class it gets among the others.
  auto all = t.predict(params, x.data(), rows);
  for (size_t i = 0; i < 8; ++i) {
    auto one = t.predict(params, x.data() + i * 64, 1);
    BOOST_TEST(one[0] == all[i]);
    BOOST_TEST(one[0] >= 0);
  }
  // A step on one row cannot normalize: refused by a NaN loss, no crash.
  std::fill(grad.begin(), grad.end(), 0.0f);
  BOOST_TEST(std::isnan(t.accumulate_gradient(params, x.data(), y.data(), 1, 1.0f, grad)));
}

BOOST_AUTO_TEST_CASE(a_batchnorm_model_learns_digits_on_two_shards) {
  models m;
  SKIP_WITHOUT_TORCH(m);
  auto bn = torch_module::load(m["batchnorm"]);
  BOOST_REQUIRE_MESSAGE(bn, test::why(bn));
  learns_digits(m, **bn, 2, 0.95);
}

BOOST_AUTO_TEST_SUITE_END()
