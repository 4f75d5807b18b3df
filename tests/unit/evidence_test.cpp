// A trainer session's evidence file: every step's weights read back as
// written, a step logged again replaced, the oldest dropped past the limit
// with a refusal that names what is kept, a directory that cannot be
// created named, and the file gone with the store.
#include <boost/test/unit_test.hpp>

#include <fstream>

#include <sodium.h>

#include "actors/trainer/evidence.hpp"
#include "test_util.hpp"

using namespace aicon;
using aicon::train::evidence_store;
namespace train = aicon::train;
using aicon::test::why;

namespace {

std::vector<float> weights_of(uint64_t step, size_t n) {
  std::vector<float> w(n);
  for (size_t i = 0; i < n; ++i)
    w[i] = static_cast<float>(step) * 1000.0f + static_cast<float>(i) * 0.25f;
  return w;
}

} // namespace

BOOST_AUTO_TEST_SUITE(models)

BOOST_AUTO_TEST_CASE(evidence_is_read_back_as_written_and_bounded) {
  test::temp_dir dir;
  auto file = dir / "evidence" / "session-0.ev";
  const size_t n = 1000; // 4000 bytes a step
  {
    auto made = evidence_store::create(file, 10 * n * 4);
    BOOST_REQUIRE_MESSAGE(made, why(made));
    auto& ev = **made;
    BOOST_TEST(std::filesystem::exists(file));
    for (uint64_t s = 5; s < 12; ++s)
      BOOST_REQUIRE(!ev.put(s, s / 4, (s % 4) * 32, weights_of(s, n)));
    BOOST_TEST(ev.count() == 7u);
    BOOST_TEST(ev.bytes() == 7u * n * 4);
    for (uint64_t s = 5; s < 12; ++s) {
      auto e = ev.get(s);
      BOOST_REQUIRE_MESSAGE(e, why(e));
      BOOST_TEST(e->epoch == s / 4);
      BOOST_TEST(e->cursor == (s % 4) * 32);
      BOOST_TEST((e->weights == weights_of(s, n)), "step " << s);
    }
    // A step logged again (a ring resumed from an earlier checkpoint in
    // the same session) replaces its record.
    BOOST_REQUIRE(!ev.put(7, 9, 99, weights_of(70, n)));
    BOOST_TEST(ev.count() == 7u);
    BOOST_TEST(ev.bytes() == 7u * n * 4);
    auto again = ev.get(7);
    BOOST_REQUIRE(again);
    BOOST_TEST(again->epoch == 9u);
    BOOST_TEST((again->weights == weights_of(70, n)));
    // Past the limit (10 steps) the oldest go, and a step never kept or
    // dropped is refused naming what is kept.
    for (uint64_t s = 12; s < 16; ++s)
      BOOST_REQUIRE(!ev.put(s, 0, 0, weights_of(s, n)));
    BOOST_TEST(ev.count() == 10u);
    BOOST_TEST(ev.bytes() <= ev.max_bytes());
    BOOST_TEST(!ev.has(5));
    auto gone = ev.get(5);
    BOOST_REQUIRE(!gone);
    BOOST_TEST((code_of(gone.error()) == errc::not_found));
    BOOST_TEST(describe(gone.error()).find("no evidence of step 5 here (steps 6..15 kept, 10 of them)")
                 != std::string::npos,
               describe(gone.error()));
    auto later = ev.get(15);
    BOOST_REQUIRE(later);
    BOOST_TEST((later->weights == weights_of(15, n)));
    auto never = ev.get(400);
    BOOST_REQUIRE(!never);
    BOOST_TEST(describe(never.error()).find("step 400") != std::string::npos);
  }
  // The file goes with the store.
  BOOST_TEST(!std::filesystem::exists(file));
}

BOOST_AUTO_TEST_CASE(an_evidence_file_that_cannot_be_made_is_named) {
  test::temp_dir dir;
  // Its directory would sit under a regular file.
  std::ofstream(dir / "plain") << "x";
  auto made = evidence_store::create(dir / "plain" / "evidence" / "s-0.ev", 1 << 20);
  BOOST_REQUIRE(!made);
  BOOST_TEST((code_of(made.error()) == errc::io_error));
  BOOST_TEST(describe(made.error()).find("evidence: cannot create") != std::string::npos,
             describe(made.error()));
  BOOST_TEST(describe(made.error()).find("plain") != std::string::npos, describe(made.error()));
}

BOOST_AUTO_TEST_CASE(owed_evidence_outlives_the_process_and_a_torn_record_is_refused) {
  test::temp_dir dir;
  auto file = dir / "evidence" / "s-1.ev";
  const size_t n = 300;
  train::owed_session o;
  o.session.fill(7);
  o.token.fill(9);
  o.rank = 1;
  o.size = 2;
  o.global_batch = 32;
  o.keep_until_ms = 1'900'000'000'000;
  o.rows = 1437;
  o.seed = 42;
  o.first_step = 10;
  o.model = "torch:/data/models/cnn.pt";
  o.model_local = "/var/aicon/evidence/s-1.pt";
  o.model_file.fill(3);
  for (uint64_t s = 10; s < 13; ++s) {
    train::partner_signed p;
    p.step = s;
    p.hash.fill(static_cast<uint8_t>(s));
    p.signature.fill(static_cast<uint8_t>(s + 1));
    o.partner.push_back(p);
  }
  {
    auto made = evidence_store::create(file, 1 << 20);
    BOOST_REQUIRE_MESSAGE(made, why(made));
    for (uint64_t s = 10; s < 14; ++s) {
      BOOST_REQUIRE(!(*made)->put(s, 0, (s - 10) * 32, weights_of(s, n)));
      std::array<uint8_t, 32> d;
      d.fill(static_cast<uint8_t>(s));
      o.log.push_back(d);
    }
    BOOST_REQUIRE(!(*made)->sync());
    o.index = (*made)->index();
    // The host stops with the evidence owed: the file stays.
    (*made)->keep_file();
  }
  BOOST_REQUIRE(std::filesystem::exists(file));
  auto owed_file = dir / "evidence" / "s-1.owed";
  BOOST_REQUIRE(!train::write_owed(owed_file, o));
  BOOST_TEST(!std::filesystem::exists(dir / "evidence" / "s-1.owed.tmp"));
  // The next process reads it back whole and answers from the same file.
  auto back = train::read_owed(owed_file);
  BOOST_REQUIRE_MESSAGE(back, why(back));
  BOOST_TEST((*back == o));
  {
    auto opened = evidence_store::open(file, 1 << 20, back->index);
    BOOST_REQUIRE_MESSAGE(opened, why(opened));
    for (uint64_t s = 10; s < 14; ++s) {
      auto e = (*opened)->get(s);
      BOOST_REQUIRE_MESSAGE(e, why(e));
      BOOST_TEST((e->weights == weights_of(s, n)));
      BOOST_TEST(e->cursor == (s - 10) * 32);
    }
    // An index that reaches past the file is refused by name, and the
    // file is not the refused store's to remove.
    auto longer = back->index;
    longer.back().floats += 1;
    auto refused = evidence_store::open(file, 1 << 20, longer);
    BOOST_REQUIRE(!refused);
    BOOST_TEST(describe(refused.error()).find("its index puts step 13 at") != std::string::npos,
               describe(refused.error()));
    BOOST_TEST(std::filesystem::exists(file));
  }
  BOOST_TEST(!std::filesystem::exists(file)); // its keeping over: gone with the store
  // A torn or flipped record is refused, naming the file.
  auto bytes = train::owed_bytes(o);
  for (size_t at : {size_t{0}, size_t{20}, bytes.size() / 2, bytes.size() - 1}) {
    auto bad = bytes;
    bad[at] ^= 0x40;
    auto r = train::parse_owed(bad, "s-1.owed");
    BOOST_REQUIRE_MESSAGE(!r, "a flipped byte at " << at << " was taken");
    BOOST_TEST(describe(r.error()).find("s-1.owed") != std::string::npos, describe(r.error()));
  }
  auto torn = bytes;
  torn.resize(bytes.size() - 40);
  auto r = train::parse_owed(torn, "s-1.owed");
  BOOST_REQUIRE(!r);
  BOOST_TEST(describe(r.error()).find("checksum does not match") != std::string::npos,
             describe(r.error()));
  BOOST_TEST(!train::read_owed(dir / "missing.owed"));
  // Records of the formats before are still read: AICONOW2 (no partner
  // signatures) and AICONOW1 (no model fields either).
  auto earlier = [&](char version, train::owed_session e, size_t cut) {
    auto bytes = train::owed_bytes(e);
    bytes.resize(bytes.size() - 32 - cut); // the checksum, then the fields it lacks
    bytes[7] = version;
    std::array<uint8_t, 32> h;
    crypto_generichash(h.data(), h.size(), bytes.data(), bytes.size(), nullptr, 0);
    bytes.insert(bytes.end(), h.begin(), h.end());
    auto back = train::parse_owed(bytes, "s-1.owed");
    BOOST_REQUIRE_MESSAGE(back, why(back));
    BOOST_TEST((*back == e), "AICONOW" << version);
  };
  auto v2 = o;
  v2.partner.clear();
  earlier('2', v2, 8); // the (empty) partner list
  auto v1 = v2;
  v1.model.clear();
  v1.model_local.clear();
  v1.model_file = {};
  earlier('1', v1, 8 + 8 + 32 + 8); // the model fields too
}

BOOST_AUTO_TEST_CASE(a_torch_sessions_rows_are_written_down_and_a_bad_record_is_refused) {
  // The rows a torch session's steps used, for a restarted host's
  // gradients: read back as written, every malformed record refused by name.
  test::temp_dir dir;
  train::owed_rows r;
  r.features = 3;
  r.index = {2, 5, 11};
  r.x = {0.5f, 1, 2, 3, 4, 5, 6, 7, -8.25f};
  r.y = {1, 0, 7};
  auto file = dir / "s-1.rows";
  BOOST_REQUIRE(!train::write_owed_rows(file, r));
  auto back = train::read_owed_rows(file);
  BOOST_REQUIRE_MESSAGE(back, why(back));
  BOOST_TEST((*back == r));
  auto bytes = train::owed_rows_bytes(r);
  for (size_t at : {size_t{0}, size_t{9}, bytes.size() / 2, bytes.size() - 1}) {
    auto bad = bytes;
    bad[at] ^= 0x10;
    auto p = train::parse_owed_rows(bad, "s-1.rows");
    BOOST_REQUIRE_MESSAGE(!p, "a flipped byte at " << at << " was taken");
    BOOST_TEST(describe(p.error()).find("s-1.rows") != std::string::npos, describe(p.error()));
  }
  // Sealed but wrong inside: places that do not ascend, and features that
  // do not fill the rows, are named.
  auto unsorted = r;
  std::swap(unsorted.index[0], unsorted.index[1]);
  auto p = train::parse_owed_rows(train::owed_rows_bytes(unsorted), "s-1.rows");
  BOOST_REQUIRE(!p);
  BOOST_TEST(describe(p.error()).find("row place 2 after 5") != std::string::npos,
             describe(p.error()));
  auto short_x = r;
  short_x.x.pop_back();
  p = train::parse_owed_rows(train::owed_rows_bytes(short_x), "s-1.rows");
  BOOST_REQUIRE(!p);
  BOOST_TEST(describe(p.error()).find("for 3 rows of 3 features") != std::string::npos,
             describe(p.error()));
  // An owed record is not a rows record.
  train::owed_session o;
  p = train::parse_owed_rows(train::owed_bytes(o), "s-1.rows");
  BOOST_REQUIRE(!p);
  BOOST_TEST(describe(p.error()).find("no AICONRW1 magic") != std::string::npos,
             describe(p.error()));
}

BOOST_AUTO_TEST_SUITE_END()
