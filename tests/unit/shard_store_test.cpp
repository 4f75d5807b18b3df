// Datasets at rest: shards encrypted with their own keys, content addressed,
// stored with the manifest in one transaction, read back bit-exact;
// corrupt and missing shares are found by name.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstring>

#include "actors/data_node/shard_store.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace aicon::data;

namespace {

struct fixture {
  test::temp_dir dir;
  std::unique_ptr<store::environment> env;
  aicon::identity owner = aicon::identity::generate();
  fixture() {
    auto e = store::environment::open(dir.path());
    BOOST_REQUIRE_MESSAGE(e, test::why(e));
    env = std::move(*e);
  }
};

table digits() {
  auto t = read_csv(std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz", {});
  BOOST_REQUIRE_MESSAGE(t, test::why(t));
  return *t;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(shard_store, fixture)

BOOST_AUTO_TEST_CASE(digits_round_trip_is_bit_exact_through_encrypted_shards) {
  auto t = digits();
  auto tr = fit_and_apply(t, transform::kind::standardize);
  put_options o;
  o.name = "digits";
  o.price = 50;
  o.shard_bytes = 64 * 1024; // several shards
  auto m = put_dataset(*env, owner, t, tr, o);
  BOOST_REQUIRE_MESSAGE(m, test::why(m));
  opened<schema::DatasetManifest> man{*m};
  BOOST_REQUIRE(man);
  BOOST_TEST(man->getRows() == 1797u);
  BOOST_TEST(man->getFeatures() == 64u);
  BOOST_TEST(man->getClasses() == 10u);
  BOOST_TEST(man->getShards().size() == 8u); // 1797 rows of 260 bytes in 64 KiB shards
  BOOST_TEST(man->getPreview().size() == 5u);
  BOOST_TEST(std::string{man->getTransform().getKind().cStr()} == "standardize");
  // The preview rows are the dataset's rows (after the transform).
  for (auto p : man->getPreview()) {
    BOOST_TEST(p.getY() == t.y[p.getRow()]);
    BOOST_TEST(p.getX()[3] == t.x[p.getRow() * 64 + 3]);
  }
  // No share holds plaintext: the first row's bytes appear in none of them.
  {
    auto txn = store::txn::begin(*env, false);
    size_t shares = 0, leaks = 0;
    auto row = reinterpret_cast<const uint8_t*>(t.x.data());
    BOOST_REQUIRE(!txn->for_each(store::db::shares, [&](auto, std::span<const uint8_t> v) {
      ++shares;
      if (std::search(v.begin(), v.end(), row, row + 64 * 4) != v.end())
        ++leaks;
      return true;
    }));
    BOOST_TEST(shares == 8u);
    BOOST_TEST(leaks == 0u);
  }
  auto back = load_dataset(*env, *m);
  BOOST_REQUIRE_MESSAGE(back, test::why(back));
  BOOST_TEST(same_bits(back->x, t.x));
  BOOST_TEST((back->y == t.y));
  auto found = find_dataset(*env, to_hex({man->getDatasetId().begin(), 32}).substr(0, 10));
  BOOST_REQUIRE_MESSAGE(found, test::why(found));
  BOOST_TEST(list_datasets(*env)->size() == 1u);
  auto report = verify_dataset(*env, *m);
  BOOST_REQUIRE(report);
  BOOST_TEST(report->shards == 8u);
  BOOST_TEST(report->problems.empty());
}

BOOST_AUTO_TEST_CASE(every_dtype_round_trips_bit_exact) {
  // Values each dtype can hold, converted to float32 once at ingest; what
  // comes back from the shards must be those exact bits.
  for (auto values : {std::vector<float>{0.1f, -2.5e-7f, 3.4e38f, -0.0f, 1.0f, 7.0f},
                      std::vector<float>{255, 0, 128, 1, 2, 3},
                      std::vector<float>{-2147483648.0f, 2147483520.0f, 0, 1, -1, 5}}) {
    table t;
    t.rows = 3;
    t.features = 2;
    t.x = values;
    put_options o;
    o.shard_bytes = 8; // one row per shard
    auto m = put_dataset(*env, owner, t, {}, o);
    BOOST_REQUIRE_MESSAGE(m, test::why(m));
    auto back = load_dataset(*env, *m);
    BOOST_REQUIRE_MESSAGE(back, test::why(back));
    BOOST_TEST(same_bits(back->x, t.x));
    BOOST_TEST(back->y.empty());
  }
}

BOOST_AUTO_TEST_CASE(corrupt_and_missing_shares_are_named) {
  auto t = digits();
  put_options o;
  o.shard_bytes = 128 * 1024;
  auto m = put_dataset(*env, owner, t, {}, o);
  BOOST_REQUIRE(m);
  opened<schema::DatasetManifest> man{*m};
  auto h0 = man->getShards()[0].getHash();
  auto h1 = man->getShards()[1].getHash();
  {
    auto txn = store::txn::begin(*env, true);
    auto share = txn->get(store::db::shares, {h0.begin(), 32});
    std::vector<uint8_t> bytes((*share)->begin(), (*share)->end());
    bytes[100] ^= 0x01; // one flipped bit on disk
    BOOST_REQUIRE(!txn->put(store::db::shares, {h0.begin(), 32}, bytes));
    BOOST_REQUIRE(!txn->del(store::db::shares, {h1.begin(), 32}));
    BOOST_REQUIRE(!txn->commit());
  }
  auto report = verify_dataset(*env, *m);
  BOOST_REQUIRE(report);
  BOOST_REQUIRE(report->problems.size() == 2u);
  BOOST_TEST(report->problems[0].find("corrupt") != std::string::npos, report->problems[0]);
  BOOST_TEST(report->problems[0].find(to_hex({h0.begin(), 32}).substr(0, 16)) != std::string::npos);
  BOOST_TEST(report->problems[1].find("missing") != std::string::npos, report->problems[1]);
  auto back = load_dataset(*env, *m);
  BOOST_REQUIRE(!back);
  BOOST_TEST(describe(back.error()).find("corrupt") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_share_opens_only_with_its_own_key_and_address) {
  table t;
  t.rows = 2;
  t.features = 1;
  t.x = {1, 2};
  put_options o;
  o.shard_bytes = 4;
  auto m = put_dataset(*env, owner, t, {}, o);
  BOOST_REQUIRE(m);
  opened<schema::DatasetManifest> man{*m};
  auto r0 = man->getShards()[0], r1 = man->getShards()[1];
  auto txn = store::txn::begin(*env, false);
  hash256 h0;
  std::memcpy(h0.data(), r0.getHash().begin(), 32);
  auto share = *txn->get(store::db::shares, {r0.getHash().begin(), 32});
  auto key1 = *txn->get(store::db::shard_keys, {r1.getHash().begin(), 32});
  auto wrong_key = open_share(*share, h0, *key1, r0, 1);
  BOOST_REQUIRE(!wrong_key);
  BOOST_TEST(describe(wrong_key.error()).find("does not decrypt") != std::string::npos);
  // Bad inputs to put are refused before anything is stored.
  o.shard_bytes = 2;
  auto tiny = put_dataset(*env, owner, t, {}, o);
  BOOST_REQUIRE(!tiny);
  BOOST_TEST(describe(tiny.error()).find("smaller than one row") != std::string::npos);
  BOOST_TEST(list_datasets(*env)->size() == 1u);
}

BOOST_AUTO_TEST_SUITE_END()
