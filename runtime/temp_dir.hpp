// A private temporary directory that is removed with everything in it when
// the object goes away (client TLS files, the demo's and the benchmark's
// throwaway keys, tests).
#pragma once

#include <filesystem>
#include <string>

#include <caf/expected.hpp>

namespace aicon {

class temp_dir {
public:
  /// Creates /tmp/<prefix>-XXXXXX (mode 0700). Errors: io_error.
  static caf::expected<temp_dir> create(const std::string& prefix);

  temp_dir(temp_dir&& other) noexcept : path_(std::move(other.path_)) {
    other.path_.clear();
  }
  temp_dir& operator=(temp_dir&& other) noexcept;
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  ~temp_dir();

  const std::filesystem::path& path() const {
    return path_;
  }
  std::filesystem::path operator/(const std::string& name) const {
    return path_ / name;
  }

private:
  explicit temp_dir(std::filesystem::path p) : path_(std::move(p)) {
  }
  std::filesystem::path path_;
};

} // namespace aicon
