#include "runtime/store.hpp"

#include <mutex>

#include <fmt/format.h>

#include "runtime/error.hpp"

namespace aicon::store {

namespace {

MDB_val as_val(std::span<const uint8_t> bytes) {
  return MDB_val{bytes.size(), const_cast<uint8_t*>(bytes.data())};
}

std::span<const uint8_t> as_span(const MDB_val& v) {
  return {static_cast<const uint8_t*>(v.mv_data), v.mv_size};
}

} // namespace

const char* to_string(db which) {
  switch (which) {
    case db::meta: return "meta";
    case db::blocks: return "blocks";
    case db::block_by_hash: return "block_by_hash";
    case db::accounts: return "accounts";
    case db::escrow: return "escrow";
    case db::assets: return "assets";
    case db::receipts: return "receipts";
    case db::datasets: return "datasets";
    case db::uploads: return "uploads";
    case db::leases: return "leases";
    case db::holders: return "holders";
    case db::challenges: return "challenges";
    case db::alloc_offers: return "alloc_offers";
    case db::alloc_leases: return "alloc_leases";
    case db::alloc_asks: return "alloc_asks";
    case db::ratings: return "ratings";
    case db::rated_jobs: return "rated_jobs";
    case db::jobs: return "jobs";
    case db::vote_locks: return "vote_locks";
    case db::models: return "models";
    case db::shares: return "shares";
    case db::shard_keys: return "shard_keys";
  }
  return "unknown";
}

caf::error lmdb_error(int rc, std::string_view what) {
  return make_error(errc::io_error,
                    fmt::format("{}: {} (LMDB {}){}", what, mdb_strerror(rc), rc,
                                rc == MDB_MAP_FULL ? "; raise the map size" : ""));
}

std::array<uint8_t, 8> height_key(uint64_t height) {
  std::array<uint8_t, 8> out;
  for (int i = 7; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<uint8_t>(height & 0xff);
    height >>= 8;
  }
  return out;
}

caf::expected<std::unique_ptr<environment>> environment::open(const std::filesystem::path& dir,
                                                              const options& opts) {
  std::unique_ptr<environment> env{new environment};
  auto path = dir / "store";
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec)
    return make_error(errc::io_error,
                      fmt::format("cannot create {}: {}", path.string(), ec.message()));
  if (int rc = mdb_env_create(&env->env_))
    return lmdb_error(rc, "mdb_env_create");
  if (int rc = mdb_env_set_mapsize(env->env_, opts.map_bytes))
    return lmdb_error(rc, "mdb_env_set_mapsize");
  if (int rc = mdb_env_set_maxdbs(env->env_, db_count + 2))
    return lmdb_error(rc, "mdb_env_set_maxdbs");
  unsigned flags = MDB_NOTLS | (opts.sync ? 0u : MDB_NOSYNC);
  if (int rc = mdb_env_open(env->env_, path.c_str(), flags, 0600))
    return lmdb_error(rc, fmt::format("cannot open LMDB environment {}", path.string()));
  MDB_txn* t = nullptr;
  if (int rc = mdb_txn_begin(env->env_, nullptr, 0, &t))
    return lmdb_error(rc, "mdb_txn_begin");
  for (size_t i = 0; i < db_count; ++i) {
    if (int rc = mdb_dbi_open(t, to_string(static_cast<db>(i)), MDB_CREATE, &env->dbis_[i])) {
      mdb_txn_abort(t);
      return lmdb_error(rc, fmt::format("cannot open database {}", to_string(static_cast<db>(i))));
    }
  }
  if (int rc = mdb_txn_commit(t))
    return lmdb_error(rc, "mdb_txn_commit");
  return env;
}

caf::expected<std::shared_ptr<environment>> shared_environment(const std::filesystem::path& dir,
                                                               const options& opts) {
  static std::mutex mtx;
  static std::map<std::string, std::weak_ptr<environment>> opened;
  std::lock_guard<std::mutex> guard{mtx};
  std::error_code ec;
  auto key = std::filesystem::absolute(dir, ec).lexically_normal().string();
  if (auto existing = opened[key].lock())
    return existing;
  auto env = environment::open(dir, opts);
  if (!env)
    return env.error();
  std::shared_ptr<environment> shared{std::move(*env)};
  opened[key] = shared;
  return shared;
}

environment::~environment() {
  if (env_)
    mdb_env_close(env_);
}

caf::expected<txn> txn::begin(environment& env, bool write) {
  MDB_txn* t = nullptr;
  if (int rc = mdb_txn_begin(env.handle(), nullptr, write ? 0 : MDB_RDONLY, &t))
    return lmdb_error(rc, "mdb_txn_begin");
  return txn{&env, t, write};
}

txn::txn(txn&& other) noexcept : env_(other.env_), txn_(other.txn_), write_(other.write_) {
  other.txn_ = nullptr;
}

txn& txn::operator=(txn&& other) noexcept {
  if (this != &other) {
    abort();
    env_ = other.env_;
    txn_ = other.txn_;
    write_ = other.write_;
    other.txn_ = nullptr;
  }
  return *this;
}

txn::~txn() {
  abort();
}

void txn::abort() {
  if (txn_) {
    mdb_txn_abort(txn_);
    txn_ = nullptr;
  }
}

caf::error txn::commit() {
  if (!txn_)
    return make_error(errc::internal, "commit of a finished transaction");
  int rc = mdb_txn_commit(txn_);
  txn_ = nullptr; // LMDB frees the transaction whether or not the commit worked
  if (rc)
    return lmdb_error(rc, "mdb_txn_commit");
  return caf::none;
}

caf::expected<std::optional<std::span<const uint8_t>>> txn::get(db which,
                                                                std::span<const uint8_t> key) {
  MDB_val k = as_val(key), v{};
  int rc = mdb_get(txn_, env_->dbi(which), &k, &v);
  if (rc == MDB_NOTFOUND)
    return std::optional<std::span<const uint8_t>>{};
  if (rc)
    return lmdb_error(rc, fmt::format("mdb_get in {}", to_string(which)));
  return std::optional<std::span<const uint8_t>>{as_span(v)};
}

caf::error txn::put(db which, std::span<const uint8_t> key, std::span<const uint8_t> value,
                    unsigned flags) {
  MDB_val k = as_val(key), v = as_val(value);
  if (int rc = mdb_put(txn_, env_->dbi(which), &k, &v, flags))
    return lmdb_error(rc, fmt::format("mdb_put in {}", to_string(which)));
  return caf::none;
}

caf::error txn::del(db which, std::span<const uint8_t> key) {
  MDB_val k = as_val(key);
  int rc = mdb_del(txn_, env_->dbi(which), &k, nullptr);
  if (rc && rc != MDB_NOTFOUND)
    return lmdb_error(rc, fmt::format("mdb_del in {}", to_string(which)));
  return caf::none;
}

caf::error txn::for_each(db which,
                         const std::function<bool(std::span<const uint8_t>,
                                                  std::span<const uint8_t>)>& fn) {
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn_, env_->dbi(which), &cur))
    return lmdb_error(rc, "mdb_cursor_open");
  MDB_val k{}, v{};
  int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
  while (rc == 0) {
    if (!fn(as_span(k), as_span(v)))
      break;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND)
    return lmdb_error(rc, fmt::format("cursor over {}", to_string(which)));
  return caf::none;
}

caf::expected<std::optional<std::pair<std::span<const uint8_t>, std::span<const uint8_t>>>>
txn::last(db which) {
  using result = std::optional<std::pair<std::span<const uint8_t>, std::span<const uint8_t>>>;
  MDB_cursor* cur = nullptr;
  if (int rc = mdb_cursor_open(txn_, env_->dbi(which), &cur))
    return lmdb_error(rc, "mdb_cursor_open");
  MDB_val k{}, v{};
  int rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  mdb_cursor_close(cur);
  if (rc == MDB_NOTFOUND)
    return result{};
  if (rc)
    return lmdb_error(rc, fmt::format("cursor over {}", to_string(which)));
  return result{std::make_pair(as_span(k), as_span(v))};
}

} // namespace aicon::store
