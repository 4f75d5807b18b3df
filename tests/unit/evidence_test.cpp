// A trainer session's evidence file: every step's weights read back as
// written, a step logged again replaced, the oldest dropped past the limit
// with a refusal that names what is kept, a directory that cannot be
// created named, and the file gone with the store.
#include <boost/test/unit_test.hpp>

#include <fstream>

#include "actors/trainer/evidence.hpp"
#include "test_util.hpp"

using namespace aicon;
using aicon::train::evidence_store;
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

BOOST_AUTO_TEST_SUITE_END()
