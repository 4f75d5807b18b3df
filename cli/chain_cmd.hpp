// `aicon chain show|verify` on a local store.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace aicon {

struct chain_cmd_options {
  std::string data_dir;
  std::string genesis;
  std::optional<uint64_t> height;
};

/// Prints the tip (or one block) of DATA_DIR's chain.
int chain_show(const chain_cmd_options& opts);

/// Re-checks every block, signature and state transition from genesis and
/// prints the state root; exit 1 naming the first bad block.
int chain_verify(const chain_cmd_options& opts);

} // namespace aicon
