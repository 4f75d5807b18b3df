// Helpers shared by the unit tests.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <ostream>
#include <string>

#include "runtime/error.hpp"
#include "runtime/identity.hpp"

#include <caf/expected.hpp>

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

/// The error of `x` as text, or "" when it holds a value (Boost.Test
/// evaluates a message even when the check passes).
template <class T>
std::string why(const caf::expected<T>& x) {
  return x ? std::string{} : describe(x.error());
}


/// A fresh directory under the system temp dir, removed on destruction.
class temp_dir {
public:
  temp_dir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "aicon-test-XXXXXX").string();
    if (!mkdtemp(tmpl.data()))
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~temp_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const {
    return path_;
  }
  std::filesystem::path operator/(const std::string& name) const {
    return path_ / name;
  }

private:
  std::filesystem::path path_;
};

} // namespace aicon::test
