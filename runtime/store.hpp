// One LMDB environment per host, with named databases and typed access.
// Threading (LMDB's rule): a transaction and its cursors belong to the thread
// that began it; keep a write transaction inside one handler call or one
// detached actor. Only one write transaction is open at a time per
// environment (LMDB serializes them).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <lmdb.h>

#include <caf/error.hpp>
#include <caf/expected.hpp>

namespace aicon::store {

/// The named databases of a host's environment.
enum class db : uint8_t {
  meta,          ///< chain parameters, supply, tip
  blocks,        ///< height (8-byte big-endian) -> Block (flat Cap'n Proto words)
  block_by_hash, ///< BLAKE2b-256 header hash -> height
  accounts,      ///< wallet (32 bytes) -> balance, nonce, stake
  escrow,        ///< job id (32 bytes) -> payer, amount
  assets,        ///< asset id (32 bytes) -> owner, kind, metadata hash
  receipts,      ///< work receipt hash (32 bytes) -> height of the block that used it
  datasets,      ///< dataset id (32 bytes) -> DatasetManifest (flat Cap'n Proto words)
  shares,        ///< share hash (32 bytes) -> nonce ‖ XChaCha20-Poly1305 ciphertext
  shard_keys,    ///< share hash (32 bytes) -> its 32-byte key (never leaves unsealed)
  uploads,       ///< dataset id -> manifest of a replica upload not yet committed
  leases,        ///< job id ‖ trainer (64 bytes) -> Lease (flat Cap'n Proto words)
  holders,       ///< dataset id ‖ node (64 bytes) -> ms since epoch it was placed there
  challenges,    ///< time ms (8, big-endian) ‖ node (32) -> ChallengeRecord
  alloc_offers,  ///< trainer NodeId (32) -> Offer (timeMs = the allocator's receive time)
  alloc_leases,  ///< job (32) ‖ trainer (32) -> BookLease
  alloc_asks,    ///< job (32) -> AllocAsk of a job holding leases (for replacements)
  ratings,       ///< trainer NodeId (32) -> rating (8-byte IEEE double, little-endian)
  rated_jobs,    ///< job id (32) -> session (32) ‖ ms since epoch it was rated (8, big-endian)
                 ///< ‖ the RateResult's flat words, once the rating ended
  jobs,          ///< job id (32) -> JobRecord of a job host's job (flat Cap'n Proto words)
  vote_locks,    ///< height (8, big-endian) -> ConsensusPromise: this validator's lock and signed votes there
  models,        ///< model id (32) -> ModelFile: a TorchScript file and its signed manifest
};
inline constexpr size_t db_count = 22;
const char* to_string(db which);

struct options {
  /// LMDB map size: the most the environment may ever hold. 1 GiB is
  /// enough for millions of accounts; LMDB reserves address space, not disk.
  uint64_t map_bytes = 1ull << 30;
  /// fsync on every commit (durable). Off only in benchmarks of the ceiling.
  bool sync = true;
};

class environment {
public:
  /// Opens (creating if needed) DIR/store with every named database.
  /// Errors: io_error naming the path and LMDB's reason.
  static caf::expected<std::unique_ptr<environment>> open(const std::filesystem::path& dir,
                                                          const options& opts = {});
  ~environment();
  environment(const environment&) = delete;
  environment& operator=(const environment&) = delete;

  MDB_env* handle() const {
    return env_;
  }
  MDB_dbi dbi(db which) const {
    return dbis_[static_cast<size_t>(which)];
  }

private:
  environment() = default;
  MDB_env* env_ = nullptr;
  MDB_dbi dbis_[db_count] = {};
};

/// The environment of DIR/store, opened once per process and shared by
/// every role of that host (LMDB forbids opening one environment twice in
/// a process). The first caller's options win.
caf::expected<std::shared_ptr<environment>> shared_environment(const std::filesystem::path& dir,
                                                               const options& opts = {});

/// A read or write transaction. Destroying an uncommitted transaction
/// aborts it, so an early return never half-applies anything.
class txn {
public:
  static caf::expected<txn> begin(environment& env, bool write);
  txn(txn&& other) noexcept;
  txn& operator=(txn&& other) noexcept;
  txn(const txn&) = delete;
  txn& operator=(const txn&) = delete;
  ~txn();

  /// The value under `key`, valid until the transaction ends or writes;
  /// nullopt when absent.
  caf::expected<std::optional<std::span<const uint8_t>>> get(db which,
                                                             std::span<const uint8_t> key);
  caf::error put(db which, std::span<const uint8_t> key, std::span<const uint8_t> value,
                 unsigned flags = 0);
  /// Deleting an absent key is not an error.
  caf::error del(db which, std::span<const uint8_t> key);

  /// Calls `fn(key, value)` for every entry in key order (memcmp); stops
  /// early when it returns false.
  caf::error for_each(db which,
                      const std::function<bool(std::span<const uint8_t>,
                                               std::span<const uint8_t>)>& fn);

  /// The last entry in key order, if any.
  caf::expected<std::optional<std::pair<std::span<const uint8_t>, std::span<const uint8_t>>>>
  last(db which);

  caf::error commit();
  void abort();
  bool writable() const {
    return write_;
  }

private:
  txn(environment* env, MDB_txn* t, bool write) : env_(env), txn_(t), write_(write) {
  }
  environment* env_ = nullptr;
  MDB_txn* txn_ = nullptr;
  bool write_ = false;
};

/// An LMDB error as an aicon error naming the operation.
caf::error lmdb_error(int rc, std::string_view what);

/// 8-byte big-endian key: LMDB's memcmp order is numeric order.
std::array<uint8_t, 8> height_key(uint64_t height);

} // namespace aicon::store
