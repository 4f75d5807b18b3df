// Tagged BLAKE2b-256 and Merkle roots: every hash on the chain is domain
// separated by a tag, so bytes signed or hashed for one purpose can never be
// replayed as another.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <capnp/message.h>
#include <kj/array.h>

namespace aicon::ledger {

using hash256 = std::array<uint8_t, 32>;

/// The first 16 hex digits of `h`, for logs and messages.
inline std::string short_hex(const hash256& h) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < 8; ++i) {
    out += digits[h[i] >> 4];
    out += digits[h[i] & 15];
  }
  return out;
}

/// BLAKE2b-256 of tag ‖ data.
hash256 blake2b(std::string_view tag, std::span<const uint8_t> data);

/// Merkle root over `leaves` (pairs hashed with `node_tag`, an odd node
/// promoted unchanged); 32 zero bytes for no leaves.
hash256 merkle_root(std::vector<hash256> leaves, std::string_view node_tag);

/// The canonical Cap'n Proto bytes of `r`; `keep` owns them.
template <class Reader>
std::span<const uint8_t> canonical_bytes(Reader r, kj::Array<capnp::word>& keep) {
  keep = capnp::canonicalize(r);
  auto b = keep.asBytes();
  return {b.begin(), b.size()};
}

/// Tag ‖ canonical(r), as signed by an author.
template <class Reader>
std::vector<uint8_t> tagged_canonical(std::string_view tag, Reader r) {
  kj::Array<capnp::word> keep;
  auto bytes = canonical_bytes(r, keep);
  std::vector<uint8_t> out(tag.begin(), tag.end());
  out.insert(out.end(), bytes.begin(), bytes.end());
  return out;
}

} // namespace aicon::ledger
