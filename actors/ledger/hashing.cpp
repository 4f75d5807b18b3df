#include "actors/ledger/hashing.hpp"

#include <cstring>

#include <sodium.h>

namespace aicon::ledger {

hash256 blake2b(std::string_view tag, std::span<const uint8_t> data) {
  hash256 out;
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(tag.data()), tag.size());
  crypto_generichash_update(&st, data.data(), data.size());
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

hash256 merkle_root(std::vector<hash256> level, std::string_view node_tag) {
  if (level.empty())
    return hash256{};
  while (level.size() > 1) {
    std::vector<hash256> next;
    next.reserve(level.size() / 2 + 1);
    for (size_t i = 0; i < level.size(); i += 2) {
      if (i + 1 == level.size()) {
        next.push_back(level[i]);
        continue;
      }
      uint8_t pair[64];
      std::memcpy(pair, level[i].data(), 32);
      std::memcpy(pair + 32, level[i + 1].data(), 32);
      next.push_back(blake2b(node_tag, pair));
    }
    level = std::move(next);
  }
  return level[0];
}

} // namespace aicon::ledger
