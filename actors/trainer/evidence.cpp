#include "actors/trainer/evidence.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <fmt/format.h>

#include "runtime/error.hpp"

namespace aicon::train {

namespace {

std::string sys_error() {
  return std::strerror(errno);
}

} // namespace

caf::expected<std::unique_ptr<evidence_store>> evidence_store::create(std::filesystem::path file,
                                                                      uint64_t max_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(file.parent_path(), ec);
  if (ec)
    return make_error(errc::io_error, fmt::format("evidence: cannot create {}: {}",
                                                  file.parent_path().string(), ec.message()));
  int fd = ::open(file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return make_error(errc::io_error,
                      fmt::format("evidence: cannot create {}: {}", file.string(), sys_error()));
  return std::unique_ptr<evidence_store>(new evidence_store(std::move(file), fd, max_bytes));
}

evidence_store::~evidence_store() {
  if (fd_ >= 0)
    ::close(fd_);
  std::error_code ec;
  std::filesystem::remove(file_, ec);
}

void evidence_store::release(const record& r) {
  bytes_ -= r.floats * 4;
  // Gives the disk back; where the file system cannot punch holes the
  // space stays taken until the store goes, but the record is gone.
  (void)::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(r.offset), static_cast<off_t>(r.floats * 4));
}

caf::error evidence_store::put(uint64_t step, uint64_t epoch, uint64_t cursor,
                               std::span<const float> weights) {
  const auto* p = reinterpret_cast<const char*>(weights.data());
  size_t left = weights.size_bytes();
  uint64_t at = end_;
  while (left > 0) {
    auto n = ::pwrite(fd_, p, left, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return make_error(errc::io_error, fmt::format("evidence: cannot write step {} to {}: {}",
                                                    step, file_.string(),
                                                    n < 0 ? sys_error() : "nothing written"));
    p += n;
    at += static_cast<uint64_t>(n);
    left -= static_cast<size_t>(n);
  }
  if (auto it = index_.find(step); it != index_.end()) {
    release(it->second);
    index_.erase(it);
  }
  index_[step] = record{epoch, cursor, end_, weights.size()};
  end_ = at;
  bytes_ += weights.size_bytes();
  // Past the limit the oldest steps go; a challenge of one of those is
  // answered "no evidence" and counts as failed (the trainer refuses runs
  // that would need it: see the TrainStep check).
  while (bytes_ > max_bytes_ && index_.size() > 1) {
    release(index_.begin()->second);
    index_.erase(index_.begin());
  }
  return {};
}

caf::expected<evidence_store::entry> evidence_store::get(uint64_t step) const {
  auto it = index_.find(step);
  if (it == index_.end())
    return make_error(errc::not_found,
                      index_.empty()
                        ? fmt::format("no evidence of step {} here (none kept)", step)
                        : fmt::format("no evidence of step {} here (steps {}..{} kept, {} of them)",
                                      step, index_.begin()->first, index_.rbegin()->first,
                                      index_.size()));
  auto& r = it->second;
  entry out{r.epoch, r.cursor, std::vector<float>(r.floats)};
  auto* p = reinterpret_cast<char*>(out.weights.data());
  size_t left = r.floats * 4;
  uint64_t at = r.offset;
  while (left > 0) {
    auto n = ::pread(fd_, p, left, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return make_error(errc::io_error, fmt::format("evidence: cannot read step {} from {}: {}",
                                                    step, file_.string(),
                                                    n < 0 ? sys_error() : "the file is short"));
    p += n;
    at += static_cast<uint64_t>(n);
    left -= static_cast<size_t>(n);
  }
  return out;
}

} // namespace aicon::train
