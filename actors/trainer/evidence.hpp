// A trainer session's evidence for the rater: the weights before every
// logged step, with the step's place in the schedule. The rater may
// challenge any step of the log, so an honest trainer must keep them all
// (a step it cannot show fails it): they go to a file of the host's data
// dir, written as the steps run (the page cache absorbs the writes; nothing
// is synced, as a host that dies loses its sessions anyway), and only an
// index stays in memory. The file is the session's own: created empty,
// removed with the store.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include <caf/expected.hpp>

namespace aicon::train {

class evidence_store {
public:
  struct entry {
    uint64_t epoch = 0, cursor = 0;
    std::vector<float> weights;
  };

  /// A fresh store in `file` (replaced if it exists), keeping at most
  /// `max_bytes` of weights: past that, the oldest steps' records go.
  static caf::expected<std::unique_ptr<evidence_store>> create(std::filesystem::path file,
                                                               uint64_t max_bytes);
  ~evidence_store();
  evidence_store(const evidence_store&) = delete;
  evidence_store& operator=(const evidence_store&) = delete;

  /// Keeps the weights before `step` (a step logged again replaces its
  /// record). An error names the file and what the system said.
  caf::error put(uint64_t step, uint64_t epoch, uint64_t cursor, std::span<const float> weights);
  /// The record of `step`: not_found (naming the steps kept) when it was
  /// never kept or has been dropped; an I/O error names the file.
  caf::expected<entry> get(uint64_t step) const;

  bool has(uint64_t step) const {
    return index_.count(step) != 0;
  }
  size_t count() const {
    return index_.size();
  }
  /// Bytes of weights kept (records dropped or replaced not counted).
  uint64_t bytes() const {
    return bytes_;
  }
  uint64_t max_bytes() const {
    return max_bytes_;
  }
  const std::filesystem::path& file() const {
    return file_;
  }

private:
  evidence_store(std::filesystem::path file, int fd, uint64_t max_bytes)
    : file_(std::move(file)), fd_(fd), max_bytes_(max_bytes) {}
  struct record {
    uint64_t epoch, cursor, offset, floats;
  };
  void release(const record& r);

  std::filesystem::path file_;
  int fd_ = -1;
  uint64_t max_bytes_ = 0;
  uint64_t end_ = 0;   ///< the file's length
  uint64_t bytes_ = 0; ///< live records' bytes
  std::map<uint64_t, record> index_;
};

} // namespace aicon::train
