#include "runtime/temp_dir.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "runtime/error.hpp"

namespace aicon {

caf::expected<temp_dir> temp_dir::create(const std::string& prefix) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (!mkdtemp(tmpl.data()))
    return make_error(errc::io_error, fmt::format("cannot create a temporary directory {}: {}",
                                                  tmpl, std::strerror(errno)));
  return temp_dir{std::filesystem::path{tmpl}};
}

temp_dir& temp_dir::operator=(temp_dir&& other) noexcept {
  if (this != &other) {
    std::error_code ec;
    if (!path_.empty())
      std::filesystem::remove_all(path_, ec);
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

temp_dir::~temp_dir() {
  if (path_.empty())
    return;
  // AICON_KEEP_TEMP=1 keeps every temporary directory (host logs, stores)
  // for a look after a failed test.
  if (auto keep = std::getenv("AICON_KEEP_TEMP"); keep && std::string_view{keep} == "1")
    return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

} // namespace aicon
