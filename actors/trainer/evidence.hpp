// A trainer session's evidence for the rater: the weights before every
// logged step, with the step's place in the schedule. The rater may
// challenge any step of the log, so an honest trainer must keep them all
// (a step it cannot show fails it): they go to a file of the host's data
// dir, written as the steps run (the page cache absorbs the writes), and
// only an index stays in memory. The file is the session's own: created
// empty, removed with the store, unless the session finished for a
// verifier and the host is stopping (keep_file): then the file is synced
// and an owed_session record beside it lets the next process answer the
// rater.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include <array>
#include <string>

#include <caf/expected.hpp>

namespace aicon::train {

class evidence_store {
public:
  struct entry {
    uint64_t epoch = 0, cursor = 0;
    std::vector<float> weights;
  };

  /// Where a step's weights lie in the file.
  struct indexed {
    uint64_t step = 0, epoch = 0, cursor = 0, offset = 0, floats = 0;
    bool operator==(const indexed&) const = default;
  };

  /// A fresh store in `file` (replaced if it exists), keeping at most
  /// `max_bytes` of weights: past that, the oldest steps' records go.
  static caf::expected<std::unique_ptr<evidence_store>> create(std::filesystem::path file,
                                                               uint64_t max_bytes);
  /// The store a process before this one left in `file`, with the index it
  /// wrote down (owed_session): refused, naming the file, when the file
  /// is missing or shorter than the index says.
  static caf::expected<std::unique_ptr<evidence_store>>
  open(std::filesystem::path file, uint64_t max_bytes, const std::vector<indexed>& index);
  ~evidence_store();
  evidence_store(const evidence_store&) = delete;
  evidence_store& operator=(const evidence_store&) = delete;

  /// Keeps the weights before `step` (a step logged again replaces its
  /// record). An error names the file and what the system said.
  caf::error put(uint64_t step, uint64_t epoch, uint64_t cursor, std::span<const float> weights);
  /// The record of `step`: not_found (naming the steps kept) when it was
  /// never kept or has been dropped; an I/O error names the file.
  caf::expected<entry> get(uint64_t step) const;

  /// Every record, by step.
  std::vector<indexed> index() const;
  /// Flushes the file to the disk (its evidence must outlive the process).
  caf::error sync() const;
  /// The file stays when the store goes (the host is stopping and the
  /// evidence is owed to a rater: the next process takes it up).
  void keep_file() {
    keep_file_ = true;
  }

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
  bool keep_file_ = false;
};

/// What a trainer host writes down when a session finishes for a verifier
/// (`<session>-<rank>.owed` beside its evidence file): enough to answer
/// the rater's digests, evidence and weight digests after the process is
/// gone, until keep_until (wall clock). A TorchScript session also keeps a
/// copy of its model file (`.pt`, with the BLAKE2b-256 of the file it
/// loaded at its join) and the training rows its steps used (`.rows`,
/// owed_rows) beside it: a restarted host
/// recomputes a step's gradient from them for a rater in another numeric
/// environment (TrainQuery.withGradient). Built-in models' steps are the
/// same bits everywhere: no rater asks them for a gradient.
/// What the partner of a rank in a ring of two signed for the gradient it
/// sent at a step (train::contribution_signing_bytes), kept by the rank
/// that took it, for the rater.
struct partner_signed {
  uint64_t step = 0;
  std::array<uint8_t, 32> hash{};
  std::array<uint8_t, 64> signature{};
  bool operator==(const partner_signed&) const = default;
};

struct owed_session {
  std::array<uint8_t, 32> session{}, token{};
  uint32_t rank = 0, size = 1, global_batch = 1;
  uint64_t keep_until_ms = 0, rows = 0, seed = 0, first_step = 0;
  std::vector<evidence_store::indexed> index;
  std::vector<std::array<uint8_t, 32>> log; ///< the step digests
  std::string model;                        ///< torch: the spec ("torch:FILE" or "torch:<id>"); else empty
  std::string model_local;                  ///< torch: the copy of the file kept beside the record
  std::array<uint8_t, 32> model_file{};     ///< torch: BLAKE2b-256 of the file the session loaded
  std::vector<partner_signed> partner;      ///< a ring of two: the partner's, by step
  bool operator==(const owed_session&) const = default;
};

/// The bytes of an owed session: "AICONOW3", the fields, BLAKE2b-256 of
/// all that. Records of "AICONOW1" (no model fields) and "AICONOW2" (no
/// partner signatures) are still read.
std::vector<uint8_t> owed_bytes(const owed_session& o);
/// Parses and checks them; errors name `what` and what was wrong.
caf::expected<owed_session> parse_owed(const std::vector<uint8_t>& bytes, const std::string& what);
/// Writes `file` whole or not at all (a temporary file, synced, renamed).
caf::error write_owed(const std::filesystem::path& file, const owed_session& o);
caf::expected<owed_session> read_owed(const std::filesystem::path& file);

/// The training rows one rank's logged steps used: each row's place in the
/// training split (ascending), its features and its label (or a regression
/// target's bits).
struct owed_rows {
  uint64_t features = 0;
  std::vector<uint32_t> index;
  std::vector<float> x;   ///< index.size() * features
  std::vector<int32_t> y; ///< index.size()
  bool operator==(const owed_rows&) const = default;
};

/// The largest rows record written or read back (16 GiB).
constexpr uint64_t owed_rows_bytes_max = uint64_t{16} << 30;

/// "AICONRW1", the fields, BLAKE2b-256 of all that.
std::vector<uint8_t> owed_rows_bytes(const owed_rows& r);
/// Parses and checks them (sizes agree, places ascending); errors name
/// `what` and what was wrong.
caf::expected<owed_rows> parse_owed_rows(const std::vector<uint8_t>& bytes,
                                         const std::string& what);
/// As write_owed / read_owed; a record over owed_rows_bytes_max is refused.
caf::error write_owed_rows(const std::filesystem::path& file, const owed_rows& r);
caf::expected<owed_rows> read_owed_rows(const std::filesystem::path& file);

/// `bytes` to `file`, whole or not at all (as write_owed).
caf::error write_whole_file(const std::filesystem::path& file, std::span<const uint8_t> bytes);

} // namespace aicon::train
