#include "actors/block_generator/difficulty.hpp"

#include <algorithm>

namespace aicon::pov {

uint64_t retarget(uint64_t difficulty, uint64_t window_elapsed_ms, const difficulty_params& p) {
  using u128 = unsigned __int128;
  auto expected = static_cast<u128>(p.target_interval_ms) * p.window_blocks;
  auto elapsed = std::max<u128>(window_elapsed_ms, 1);
  // new = difficulty * expected / elapsed, in 128 bits so it cannot overflow.
  u128 next = static_cast<u128>(difficulty) * expected / elapsed;
  u128 lo = std::max<u128>(difficulty / p.clamp_factor, 1);
  u128 hi = static_cast<u128>(difficulty) * p.clamp_factor;
  next = std::clamp(next, lo, hi);
  next = std::max<u128>(next, p.min_difficulty);
  return next > UINT64_MAX ? UINT64_MAX : static_cast<uint64_t>(next);
}

} // namespace aicon::pov
