// PoV difficulty: a block may be produced once the verified work since the
// previous block reaches the difficulty; every `window_blocks` blocks the
// difficulty is retargeted so the block interval tracks the target, clamped
// to a factor of `clamp_factor` per retarget (like Bitcoin's 4x).
#pragma once

#include <cstdint>

namespace aicon::pov {

struct difficulty_params {
  uint64_t target_interval_ms = 2000; ///< 0.5 blocks/s, as in the white paper
  uint32_t window_blocks = 10;        ///< retarget every R blocks
  uint32_t clamp_factor = 4;          ///< at most x4 up or down per retarget
  uint64_t min_difficulty = 1;        ///< work units; never zero
};

/// The difficulty for the next window, given the current one and how long
/// the last window of `window_blocks` blocks took. Deterministic integer
/// math (every host must compute the same value).
uint64_t retarget(uint64_t difficulty, uint64_t window_elapsed_ms, const difficulty_params& p);

} // namespace aicon::pov
