// Little-endian fixed-width fields for aicon's own small binary records
// (checkpoints, owed-evidence records): a writer and a bounds-checked
// reader that never reads past its bytes.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

namespace aicon {

/// Appends `v`, little-endian.
inline void put_le64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

/// Appends a length (put_le64) and then the bytes.
inline void put_bytes(std::vector<uint8_t>& out, std::span<const uint8_t> b) {
  put_le64(out, b.size());
  out.insert(out.end(), b.begin(), b.end());
}

/// Reads fields in order; a read past the end sets `ok` to false and gives
/// zeros (check `ok` once at the end).
struct byte_reader {
  std::span<const uint8_t> bytes;
  size_t at = 0;
  bool ok = true;

  uint64_t u64() {
    uint64_t v = 0;
    if (!ok || bytes.size() - at < 8) {
      ok = false;
      return 0;
    }
    for (int i = 0; i < 8; ++i)
      v |= uint64_t{bytes[at + i]} << (8 * i);
    at += 8;
    return v;
  }

  template <size_t N>
  void take(std::array<uint8_t, N>& out) {
    if (!ok || bytes.size() - at < N) {
      ok = false;
      return;
    }
    std::memcpy(out.data(), bytes.data() + at, N);
    at += N;
  }

  /// The next `n` bytes (empty, and `ok` false, past the end).
  std::span<const uint8_t> next(size_t n) {
    if (!ok || bytes.size() - at < n) {
      ok = false;
      return {};
    }
    auto out = bytes.subspan(at, n);
    at += n;
    return out;
  }

  size_t left() const {
    return bytes.size() - at;
  }
};

} // namespace aicon
