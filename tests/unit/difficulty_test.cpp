#include <boost/test/unit_test.hpp>

#include <cmath>

#include "actors/block_generator/difficulty.hpp"

using namespace aicon::pov;

BOOST_AUTO_TEST_SUITE(difficulty)

BOOST_AUTO_TEST_CASE(retarget_is_clamped_and_exact) {
  difficulty_params p;
  BOOST_TEST(retarget(1000, 20000, p) == 1000u);  // on target
  BOOST_TEST(retarget(1000, 10000, p) == 2000u);  // twice too fast
  BOOST_TEST(retarget(1000, 1000, p) == 4000u);   // 20x too fast: clamped to x4
  BOOST_TEST(retarget(1000, 800000, p) == 250u);  // 40x too slow: clamped to /4
  BOOST_TEST(retarget(1, 800000, p) == 1u);       // never below the minimum
  BOOST_TEST(retarget(UINT64_MAX, 1, p) == UINT64_MAX); // no overflow
}

BOOST_AUTO_TEST_CASE(interval_recovers_after_a_10x_work_rate_change) {
  // Simulated clock: work arrives at `rate` units/ms; a block is produced
  // when the work since the last one reaches the difficulty.
  difficulty_params p;
  double rate = 50.0; // units per ms
  uint64_t diff = 100000;
  double now_ms = 0, window_start = 0;
  std::vector<double> window_intervals;
  for (int block = 1; block <= 400; ++block) {
    if (block == 200)
      rate *= 10; // a 10x jump halfway
    now_ms += static_cast<double>(diff) / rate;
    if (block % p.window_blocks == 0) {
      auto elapsed = now_ms - window_start;
      window_intervals.push_back(elapsed / p.window_blocks);
      diff = retarget(diff, static_cast<uint64_t>(elapsed), p);
      window_start = now_ms;
    }
  }
  // Before the jump the interval settled on target.
  BOOST_TEST(std::abs(window_intervals[18] - 2000.0) / 2000.0 < 0.10);
  // The jump lands in window 20 (blocks 191..200 partly fast); within 3
  // windows after it the interval is back within 10 % of 2 s.
  bool recovered = false;
  for (size_t w = 20; w <= 23 && w < window_intervals.size(); ++w)
    if (std::abs(window_intervals[w] - 2000.0) / 2000.0 < 0.10)
      recovered = true;
  BOOST_TEST(recovered);
  BOOST_TEST(std::abs(window_intervals.back() - 2000.0) / 2000.0 < 0.10);
}

BOOST_AUTO_TEST_SUITE_END()
