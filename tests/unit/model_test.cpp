// The built-in models: spec parsing, gradients against finite differences,
// bit-exact determinism, checkpoints (round trip, corruption refused), and
// a single-process MLP on digits reaching >= 0.95 held-out accuracy.
#include <boost/test/unit_test.hpp>

#include <sodium.h>

#include <cmath>
#include <cstring>
#include <fstream>

#include "actors/data_node/ingest.hpp"
#include "actors/trainer/model.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace aicon::train;

namespace {

std::string text(const caf::error& e) {
  return describe(e);
}

struct split {
  data::table train, test;
};

/// digits, standardized, 80/20 by a seeded permutation.
split digits_split(uint64_t seed) {
  auto t = data::read_csv(std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz", {});
  BOOST_REQUIRE_MESSAGE(t, test::why(t));
  data::fit_and_apply(*t, data::transform::kind::standardize);
  auto p = permutation(static_cast<uint32_t>(t->rows), seed);
  split s;
  for (auto* part : {&s.train, &s.test}) {
    part->features = t->features;
    part->classes = t->classes;
  }
  size_t cut = t->rows * 8 / 10;
  for (size_t i = 0; i < p.size(); ++i) {
    auto& part = i < cut ? s.train : s.test;
    part.x.insert(part.x.end(), t->x.begin() + p[i] * t->features,
                  t->x.begin() + (p[i] + 1) * t->features);
    part.y.push_back(t->y[p[i]]);
    ++part.rows;
  }
  return s;
}

/// Rows order[at .. at + batch) of `t` into bx, by (64 features).
void fill_batch(const data::table& t, const std::vector<uint32_t>& order, size_t at, size_t batch,
                std::vector<float>& bx, std::vector<int32_t>& by) {
  for (size_t i = 0; i < batch; ++i) {
    std::memcpy(bx.data() + i * 64, t.x.data() + order[at + i] * 64, 64 * 4);
    by[i] = t.y[order[at + i]];
  }
}

double accuracy(const model& m, const data::table& t) {
  auto pred = m.predict(t.x.data(), t.rows);
  size_t ok = 0;
  for (size_t i = 0; i < t.rows; ++i)
    ok += pred[i] == t.y[i] ? 1 : 0;
  return static_cast<double>(ok) / static_cast<double>(t.rows);
}

} // namespace

BOOST_AUTO_TEST_SUITE(models)

BOOST_AUTO_TEST_CASE(specs_parse_and_bad_ones_say_why) {
  auto s = parse_spec("mlp:64-32-10");
  BOOST_REQUIRE(s);
  BOOST_TEST(to_string(*s) == "mlp:64-32-10");
  BOOST_TEST(model::param_count(*s) == 64u * 32 + 32 + 32 * 10 + 10);
  BOOST_TEST(static_cast<bool>(parse_spec("softmax:64-10")));
  for (auto bad : {"mlp64-10", "cnn:64-10", "mlp:64-10", "softmax:64-32-10", "mlp:64--10",
                   "mlp:64-x-10", "softmax:64-1", "mlp:0-4-2"}) {
    auto r = parse_spec(bad);
    BOOST_TEST(!r, bad);
    if (!r)
      BOOST_TEST(text(r.error()).find(bad) != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(gradients_match_finite_differences) {
  auto spec = *parse_spec("mlp:5-4-3");
  auto m = model::init(spec, 7);
  rng r{3};
  std::vector<float> x(6 * 5);
  for (auto& v : x)
    v = 2 * r.uniform() - 1;
  std::vector<int32_t> y{0, 1, 2, 1, 0, 2};
  std::vector<float> g(m.params().size(), 0.0f);
  m.accumulate_gradient(x.data(), y.data(), 6, 1.0f, g);
  auto loss_at = [&](const model& mm) {
    std::vector<float> scratch(mm.params().size(), 0.0f);
    return mm.accumulate_gradient(x.data(), y.data(), 6, 1.0f, scratch);
  };
  size_t checked = 0;
  for (size_t i = 0; i < g.size(); i += 3) {
    auto p = std::vector<float>(m.params().begin(), m.params().end());
    const float h = 1e-2f;
    p[i] += h;
    auto up = *model::from_params(spec, p);
    p[i] -= 2 * h;
    auto down = *model::from_params(spec, p);
    double numeric = (loss_at(up) - loss_at(down)) / (2 * h);
    BOOST_TEST(std::abs(numeric - g[i]) <= 2e-2 * std::max(1.0, std::abs(numeric)),
               "param " << i << ": numeric " << numeric << " analytic " << g[i]);
    ++checked;
  }
  BOOST_TEST(checked > 10u);
}

BOOST_AUTO_TEST_CASE(a_step_is_bit_exact_for_the_same_inputs) {
  auto s = digits_split(1);
  auto spec = *parse_spec("mlp:64-32-10");
  std::vector<std::vector<float>> results;
  for (int run = 0; run < 2; ++run) {
    auto m = model::init(spec, 11);
    sgd opt;
    std::vector<float> g(m.params().size());
    for (int step = 0; step < 5; ++step) {
      std::fill(g.begin(), g.end(), 0.0f);
      m.accumulate_gradient(s.train.x.data() + step * 32 * 64, s.train.y.data() + step * 32, 32,
                            1.0f / 32, g);
      opt.step(m.params(), g);
    }
    results.emplace_back(m.params().begin(), m.params().end());
  }
  BOOST_TEST(std::memcmp(results[0].data(), results[1].data(), results[0].size() * 4) == 0);
  // Another seed, other weights.
  BOOST_TEST(model::init(spec, 12).params()[0] != model::init(spec, 11).params()[0]);
}

BOOST_AUTO_TEST_CASE(checkpoints_round_trip_and_refuse_corruption) {
  test::temp_dir dir;
  checkpoint c;
  c.spec = *parse_spec("softmax:4-3");
  c.params.assign(model::param_count(c.spec), 0.5f);
  c.velocity.assign(c.params.size(), -0.25f);
  c.step = 42;
  c.cursor = 7;
  c.epoch = 2;
  c.seed = 99;
  auto path = dir.path() / "ckpt";
  BOOST_REQUIRE(!save_checkpoint(path, c));
  auto back = load_checkpoint(path);
  BOOST_REQUIRE_MESSAGE(back, test::why(back));
  BOOST_TEST((*back == c));
  BOOST_TEST(!std::filesystem::exists(dir.path() / "ckpt.tmp"));
  // One flipped byte, a truncated file, another file: each refused by name.
  std::string bytes;
  {
    std::ifstream f{path, std::ios::binary};
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  auto write = [&](const std::string& b) {
    std::ofstream f{path, std::ios::binary | std::ios::trunc};
    f << b;
  };
  auto flipped = bytes;
  flipped[40] ^= 1;
  write(flipped);
  auto r = load_checkpoint(path);
  BOOST_TEST(text(r.error()).find("digest mismatch") != std::string::npos);
  write(bytes.substr(0, bytes.size() - 10));
  r = load_checkpoint(path);
  BOOST_TEST(text(r.error()).find("digest mismatch") != std::string::npos);
  write("hello world, this is not a checkpoint at all............");
  r = load_checkpoint(path);
  BOOST_TEST(text(r.error()).find("not an aicon checkpoint") != std::string::npos);
  BOOST_TEST(text(load_checkpoint(dir.path() / "absent").error()).find("cannot open")
             != std::string::npos);
}

BOOST_AUTO_TEST_CASE(an_mlp_learns_digits) {
  auto s = digits_split(2026);
  auto m = model::init(*parse_spec("mlp:64-64-10"), 1);
  sgd opt;
  opt.lr = 0.05f;
  const size_t batch = 32;
  std::vector<float> g(m.params().size());
  for (uint64_t epoch = 0; epoch < 20; ++epoch) {
    auto order = permutation(static_cast<uint32_t>(s.train.rows), 100 + epoch);
    std::vector<float> bx(batch * 64);
    std::vector<int32_t> by(batch);
    for (size_t at = 0; at + batch <= order.size(); at += batch) {
      fill_batch(s.train, order, at, batch, bx, by);
      std::fill(g.begin(), g.end(), 0.0f);
      m.accumulate_gradient(bx.data(), by.data(), batch, 1.0f / batch, g);
      opt.step(m.params(), g);
    }
  }
  auto acc = accuracy(m, s.test);
  BOOST_TEST_MESSAGE("digits held-out accuracy " << acc);
  BOOST_TEST(acc >= 0.95);
}

BOOST_AUTO_TEST_CASE(adamw_learns_digits_and_resumes_bit_for_bit_from_its_checkpoint) {
  BOOST_TEST((*parse_optimizer("adamw") == optimizer_kind::adamw));
  auto adam = parse_optimizer("adam");
  BOOST_REQUIRE(!adam);
  BOOST_TEST(text(adam.error()).find("'adam'") != std::string::npos, text(adam.error()));
  auto s = digits_split(2026);
  auto spec = *parse_spec("mlp:64-64-10");
  const size_t batch = 32;
  auto run = [&](model& m, optimizer& opt, uint64_t from, uint64_t to) {
    std::vector<float> g(m.params().size()), bx(batch * 64);
    std::vector<int32_t> by(batch);
    for (uint64_t step = from; step < to; ++step) {
      auto order = permutation(static_cast<uint32_t>(s.train.rows), 100 + step / 40);
      fill_batch(s.train, order, (step % 40) * batch, batch, bx, by);
      std::fill(g.begin(), g.end(), 0.0f);
      m.accumulate_gradient(bx.data(), by.data(), batch, 1.0f / batch, g);
      opt.step(m.params(), g);
    }
  };
  auto adamw = [] {
    optimizer o;
    o.kind = optimizer_kind::adamw;
    o.lr = 0.003f;
    o.weight_decay = 1e-4f;
    return o;
  };
  // 600 steps straight.
  auto straight = model::init(spec, 1);
  auto o1 = adamw();
  run(straight, o1, 0, 600);
  auto acc = accuracy(straight, s.test);
  BOOST_TEST_MESSAGE("adamw digits held-out accuracy " << acc);
  BOOST_TEST(acc >= 0.95);
  // 300 steps, a checkpoint through its bytes, 300 more: the same bits.
  auto half = model::init(spec, 1);
  auto o2 = adamw();
  run(half, o2, 0, 300);
  checkpoint c{spec, {half.params().begin(), half.params().end()}, o2.velocity, 300, 0, 0, 1};
  c.optimizer = o2.kind;
  c.second = o2.second;
  c.adam_steps = o2.t;
  auto bytes = checkpoint_bytes(c);
  BOOST_TEST(std::string(bytes.begin(), bytes.begin() + 8) == "AICKPT02");
  auto back = parse_checkpoint(bytes, "adamw checkpoint");
  BOOST_REQUIRE_MESSAGE(back, test::why(back));
  BOOST_TEST((*back == c));
  auto resumed = *model::from_params(spec, back->params);
  auto o3 = adamw();
  o3.velocity = back->velocity;
  o3.second = back->second;
  o3.t = back->adam_steps;
  run(resumed, o3, 300, 600);
  BOOST_TEST(std::memcmp(resumed.params().data(), straight.params().data(),
                         straight.params().size() * sizeof(float)) == 0);
  // A version 2 checkpoint naming an optimizer this build lacks (its digest
  // made to match) is refused by name.
  auto odd = bytes;
  size_t kind_at = odd.size() - 32 - (8 + 8 + 8 + 4 * c.second.size());
  odd[kind_at] = 7;
  crypto_generichash(odd.data() + odd.size() - 32, 32, odd.data(), odd.size() - 32, nullptr, 0);
  auto refused = parse_checkpoint(odd, "odd checkpoint");
  BOOST_REQUIRE(!refused);
  BOOST_TEST(text(refused.error()).find("unknown optimizer 7") != std::string::npos,
             text(refused.error()));
  // An SGD checkpoint keeps the version 1 bytes.
  checkpoint plain{spec, c.params, c.velocity, 1, 0, 0, 1};
  auto v1 = checkpoint_bytes(plain);
  BOOST_TEST(std::string(v1.begin(), v1.begin() + 8) == "AICKPT01");
}

BOOST_AUTO_TEST_SUITE_END()
