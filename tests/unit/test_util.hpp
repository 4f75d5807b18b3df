// Helpers shared by the unit tests.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>

#include "runtime/error.hpp"
#include "runtime/identity.hpp"

#include <caf/expected.hpp>

#include "tests/common/test_dir.hpp"

namespace aicon {

/// Lets Boost.Test print error codes.
inline std::ostream& operator<<(std::ostream& os, const node_id& id) {
  return os << id.hex();
}

inline std::ostream& operator<<(std::ostream& os, retry_advice a) {
  return os << static_cast<int>(a);
}

} // namespace aicon

namespace aicon::test {

/// A deterministic key: tests name wallets and nodes by small numbers.
inline aicon::identity seeded_key(uint8_t n, uint8_t salt) {
  std::array<uint8_t, 32> seed{};
  seed[0] = n;
  seed[1] = salt;
  return aicon::identity::from_seed(seed);
}

/// The error of `x` as text, or "" when it holds a value (Boost.Test
/// evaluates a message even when the check passes).
template <class T>
std::string why(const caf::expected<T>& x) {
  return x ? std::string{} : describe(x.error());
}


} // namespace aicon::test
