#include "actors/trainer/evidence.hpp"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <fmt/format.h>
#include <sodium.h>

#include "runtime/byte_io.hpp"
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

caf::expected<std::unique_ptr<evidence_store>>
evidence_store::open(std::filesystem::path file, uint64_t max_bytes,
                     const std::vector<indexed>& index) {
  int fd = ::open(file.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return make_error(errc::io_error,
                      fmt::format("evidence: cannot open {}: {}", file.string(), sys_error()));
  std::unique_ptr<evidence_store> out(new evidence_store(file, fd, max_bytes));
  out->keep_file_ = true; // until the index checks out: a refused file is not this store's
  std::error_code ec;
  auto length = std::filesystem::file_size(file, ec);
  if (ec)
    return make_error(errc::io_error,
                      fmt::format("evidence: cannot size {}: {}", file.string(), ec.message()));
  for (auto& r : index) {
    if (r.floats > (uint64_t{1} << 40) || r.offset > length || r.floats * 4 > length - r.offset)
      return make_error(errc::not_found,
                        fmt::format("evidence: {} is {} bytes, its index puts step {} at {}..{}",
                                    file.string(), length, r.step, r.offset,
                                    r.offset + r.floats * 4));
    if (!out->index_.emplace(r.step, record{r.epoch, r.cursor, r.offset, r.floats}).second)
      return make_error(errc::invalid_argument,
                        fmt::format("evidence: the index of {} names step {} twice",
                                    file.string(), r.step));
    out->bytes_ += r.floats * 4;
  }
  out->end_ = length;
  out->keep_file_ = false;
  return out;
}

evidence_store::~evidence_store() {
  if (fd_ >= 0)
    ::close(fd_);
  if (keep_file_)
    return;
  std::error_code ec;
  std::filesystem::remove(file_, ec);
}

std::vector<evidence_store::indexed> evidence_store::index() const {
  std::vector<indexed> out;
  out.reserve(index_.size());
  for (auto& [step, r] : index_)
    out.push_back({step, r.epoch, r.cursor, r.offset, r.floats});
  return out;
}

caf::error evidence_store::sync() const {
  if (::fdatasync(fd_) != 0)
    return make_error(errc::io_error,
                      fmt::format("evidence: cannot sync {}: {}", file_.string(), sys_error()));
  return {};
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

// ---- What a finished session owes its rater ----------------------------------

namespace {

constexpr char owed_magic[8] = {'A', 'I', 'C', 'O', 'N', 'O', 'W', '3'};
/// Earlier records, still read (a host upgraded within a keeping still
/// answers its rater from one): v1 without a torch session's model, v2
/// without a ring partner's signed contributions.
constexpr char owed_magic_v1[8] = {'A', 'I', 'C', 'O', 'N', 'O', 'W', '1'};
constexpr char owed_magic_v2[8] = {'A', 'I', 'C', 'O', 'N', 'O', 'W', '2'};
constexpr char rows_magic[8] = {'A', 'I', 'C', 'O', 'N', 'R', 'W', '1'};

/// Appends BLAKE2b-256 of everything before it.
void seal(std::vector<uint8_t>& out) {
  std::array<uint8_t, 32> h;
  crypto_generichash(h.data(), h.size(), out.data(), out.size(), nullptr, 0);
  out.insert(out.end(), h.begin(), h.end());
}

/// The fields between a record's magic and its checksum, or why the
/// bytes are not such a record.
caf::expected<byte_reader> unseal(const std::vector<uint8_t>& bytes, const char (&magic)[8],
                                  const char* kind, const std::string& what) {
  if (bytes.size() < 8 + 32 || std::memcmp(bytes.data(), magic, 8) != 0)
    return make_error(errc::invalid_argument, fmt::format("{}: not {} (no {} magic)", what, kind,
                                                          std::string_view{magic, 8}));
  std::array<uint8_t, 32> h;
  crypto_generichash(h.data(), h.size(), bytes.data(), bytes.size() - 32, nullptr, 0);
  if (sodium_memcmp(h.data(), bytes.data() + bytes.size() - 32, 32) != 0)
    return make_error(errc::invalid_argument,
                      fmt::format("{}: its checksum does not match (a torn or corrupt file)", what));
  return byte_reader{std::span<const uint8_t>{bytes}.subspan(8, bytes.size() - 8 - 32)};
}

std::string text_of(std::span<const uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

std::span<const uint8_t> bytes_of(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

/// Writes `file` whole or not at all: a temporary file, synced, renamed,
/// and the directory synced (its entries must outlive a power loss as
/// well as the process).
caf::error write_whole(const std::filesystem::path& file, std::span<const uint8_t> bytes) {
  auto tmp = file;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return make_error(errc::io_error,
                      fmt::format("evidence: cannot create {}: {}", tmp.string(), sys_error()));
  size_t done = 0;
  while (done < bytes.size()) {
    auto n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      auto why = sys_error();
      ::close(fd);
      return make_error(errc::io_error,
                        fmt::format("evidence: cannot write {}: {}", tmp.string(), why));
    }
    done += static_cast<size_t>(n);
  }
  bool synced = ::fsync(fd) == 0;
  ::close(fd);
  std::error_code ec;
  if (!synced)
    return make_error(errc::io_error,
                      fmt::format("evidence: cannot sync {}: {}", tmp.string(), sys_error()));
  std::filesystem::rename(tmp, file, ec);
  if (ec)
    return make_error(errc::io_error, fmt::format("evidence: cannot rename {} to {}: {}",
                                                  tmp.string(), file.string(), ec.message()));
  int dir = ::open(file.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0 || ::fsync(dir) != 0) {
    auto why = sys_error();
    if (dir >= 0)
      ::close(dir);
    return make_error(errc::io_error, fmt::format("evidence: cannot sync the directory {}: {}",
                                                  file.parent_path().string(), why));
  }
  ::close(dir);
  return {};
}

caf::expected<std::vector<uint8_t>> read_whole(const std::filesystem::path& file,
                                               uint64_t max_bytes) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return make_error(errc::io_error,
                      fmt::format("evidence: cannot open {}: {}", file.string(), sys_error()));
  std::vector<uint8_t> bytes;
  uint8_t buf[65536];
  for (;;) {
    auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      auto why = sys_error();
      ::close(fd);
      return make_error(errc::io_error,
                        fmt::format("evidence: cannot read {}: {}", file.string(), why));
    }
    if (n == 0)
      break;
    bytes.insert(bytes.end(), buf, buf + n);
    if (bytes.size() > max_bytes) {
      ::close(fd);
      return make_error(errc::invalid_argument, fmt::format("evidence: {} is over {} GiB",
                                                            file.string(), max_bytes >> 30));
    }
  }
  ::close(fd);
  return bytes;
}

} // namespace

std::vector<uint8_t> owed_bytes(const owed_session& o) {
  std::vector<uint8_t> out(8 + 32 + 32);
  std::memcpy(out.data(), owed_magic, 8);
  std::memcpy(out.data() + 8, o.session.data(), 32);
  std::memcpy(out.data() + 40, o.token.data(), 32);
  put_le64(out, o.rank);
  put_le64(out, o.size);
  put_le64(out, o.global_batch);
  put_le64(out, o.keep_until_ms);
  put_le64(out, o.rows);
  put_le64(out, o.seed);
  put_le64(out, o.first_step);
  put_le64(out, o.index.size());
  for (auto& r : o.index) {
    put_le64(out, r.step);
    put_le64(out, r.epoch);
    put_le64(out, r.cursor);
    put_le64(out, r.offset);
    put_le64(out, r.floats);
  }
  put_le64(out, o.log.size());
  for (auto& d : o.log)
    out.insert(out.end(), d.begin(), d.end());
  put_bytes(out, bytes_of(o.model));
  put_bytes(out, bytes_of(o.model_local));
  out.insert(out.end(), o.model_file.begin(), o.model_file.end());
  put_le64(out, o.partner.size());
  for (auto& p : o.partner) {
    put_le64(out, p.step);
    out.insert(out.end(), p.hash.begin(), p.hash.end());
    out.insert(out.end(), p.signature.begin(), p.signature.end());
  }
  seal(out);
  return out;
}

caf::expected<owed_session> parse_owed(const std::vector<uint8_t>& bytes, const std::string& what) {
  int version = 3;
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), owed_magic_v1, 8) == 0)
    version = 1;
  else if (bytes.size() >= 8 && std::memcmp(bytes.data(), owed_magic_v2, 8) == 0)
    version = 2;
  auto opened = unseal(bytes, version == 1 ? owed_magic_v1 : version == 2 ? owed_magic_v2 : owed_magic,
                       "an owed-evidence record", what);
  if (!opened)
    return opened.error();
  auto& r = *opened;
  owed_session o;
  r.take(o.session);
  r.take(o.token);
  o.rank = static_cast<uint32_t>(r.u64());
  o.size = static_cast<uint32_t>(r.u64());
  o.global_batch = static_cast<uint32_t>(r.u64());
  o.keep_until_ms = r.u64();
  o.rows = r.u64();
  o.seed = r.u64();
  o.first_step = r.u64();
  auto n = r.u64();
  if (n > r.left() / 40)
    return make_error(errc::invalid_argument,
                      fmt::format("{}: {} index entries do not fit in {} bytes", what, n, r.left()));
  for (uint64_t i = 0; i < n; ++i)
    o.index.push_back({r.u64(), r.u64(), r.u64(), r.u64(), r.u64()});
  auto m = r.u64();
  if (m > r.left() / 32)
    return make_error(errc::invalid_argument,
                      fmt::format("{}: {} step digests do not fit in {} bytes", what, m, r.left()));
  o.log.resize(m);
  for (auto& d : o.log)
    r.take(d);
  if (version >= 2) {
    o.model = text_of(r.next(r.u64()));
    o.model_local = text_of(r.next(r.u64()));
    r.take(o.model_file);
  }
  if (version >= 3) {
    auto k = r.u64();
    if (k > r.left() / 104)
      return make_error(errc::invalid_argument,
                        fmt::format("{}: {} partner signatures do not fit in {} bytes", what, k,
                                    r.left()));
    o.partner.resize(k);
    for (auto& p : o.partner) {
      p.step = r.u64();
      r.take(p.hash);
      r.take(p.signature);
    }
  }
  if (!r.ok || r.left() != 0)
    return make_error(errc::invalid_argument,
                      fmt::format("{}: its fields do not fill it as they should", what));
  if (o.size == 0 || o.rank >= o.size || o.global_batch == 0)
    return make_error(errc::invalid_argument,
                      fmt::format("{}: rank {} of {}, global batch {}", what, o.rank, o.size,
                                  o.global_batch));
  return o;
}

caf::error write_owed(const std::filesystem::path& file, const owed_session& o) {
  return write_whole(file, owed_bytes(o));
}

caf::expected<owed_session> read_owed(const std::filesystem::path& file) {
  auto bytes = read_whole(file, uint64_t{1} << 32);
  if (!bytes)
    return bytes.error();
  return parse_owed(*bytes, file.string());
}

std::vector<uint8_t> owed_rows_bytes(const owed_rows& r) {
  std::vector<uint8_t> out(rows_magic, rows_magic + 8);
  put_le64(out, r.features);
  put_le64(out, r.index.size());
  for (auto i : r.index)
    put_le64(out, i);
  put_bytes(out, {reinterpret_cast<const uint8_t*>(r.x.data()), r.x.size() * 4});
  put_bytes(out, {reinterpret_cast<const uint8_t*>(r.y.data()), r.y.size() * 4});
  seal(out);
  return out;
}

caf::expected<owed_rows> parse_owed_rows(const std::vector<uint8_t>& bytes,
                                         const std::string& what) {
  auto opened = unseal(bytes, rows_magic, "a record of training rows", what);
  if (!opened)
    return opened.error();
  auto& r = *opened;
  owed_rows o;
  o.features = r.u64();
  auto n = r.u64();
  if (n > r.left() / 8)
    return make_error(errc::invalid_argument,
                      fmt::format("{}: {} rows do not fit in {} bytes", what, n, r.left()));
  for (uint64_t i = 0; i < n; ++i) {
    auto at = r.u64();
    if (at > UINT32_MAX || (!o.index.empty() && at <= o.index.back()))
      return make_error(errc::invalid_argument,
                        fmt::format("{}: row place {} after {} (places ascend, below 2^32)", what,
                                    at, o.index.empty() ? 0 : o.index.back()));
    o.index.push_back(static_cast<uint32_t>(at));
  }
  auto x = r.next(r.u64());
  auto y = r.next(r.u64());
  if (!r.ok || r.left() != 0)
    return make_error(errc::invalid_argument,
                      fmt::format("{}: its fields do not fill it as they should", what));
  if (o.features == 0 || o.features > (uint64_t{1} << 32)
      || x.size() != n * o.features * 4 || y.size() != n * 4)
    return make_error(errc::invalid_argument,
                      fmt::format("{}: {} bytes of features and {} of labels for {} rows of {} "
                                  "features",
                                  what, x.size(), y.size(), n, o.features));
  o.x.resize(n * o.features);
  std::memcpy(o.x.data(), x.data(), x.size());
  o.y.resize(n);
  std::memcpy(o.y.data(), y.data(), y.size());
  return o;
}

caf::error write_owed_rows(const std::filesystem::path& file, const owed_rows& r) {
  if (r.x.size() * 4 + r.y.size() * 4 + r.index.size() * 8 > owed_rows_bytes_max - 1024)
    return make_error(errc::invalid_argument,
                      fmt::format("evidence: {} rows of {} features are over the {} GiB a rows "
                                  "record holds",
                                  r.index.size(), r.features, owed_rows_bytes_max >> 30));
  return write_whole(file, owed_rows_bytes(r));
}

caf::error write_whole_file(const std::filesystem::path& file, std::span<const uint8_t> bytes) {
  return write_whole(file, bytes);
}

caf::expected<owed_rows> read_owed_rows(const std::filesystem::path& file) {
  auto bytes = read_whole(file, owed_rows_bytes_max);
  if (!bytes)
    return bytes.error();
  return parse_owed_rows(*bytes, file.string());
}

} // namespace aicon::train
