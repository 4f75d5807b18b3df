#include "actors/ledger/state.hpp"
#include "actors/ledger/chain.hpp"
#include "actors/ledger/hashing.hpp"

#include <chrono>

#include <algorithm>
#include <cstring>

#include <capnp/serialize.h>
#include <fmt/format.h>
#include <sodium.h>

#include "runtime/error.hpp"

namespace aicon::ledger {

namespace {

// --- value encodings (little endian, fixed layout) --------------------------

void put_u64(std::vector<uint8_t>& out, uint64_t x) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<uint8_t>(x >> (8 * i)));
}

uint64_t get_u64(std::span<const uint8_t> in, size_t offset) {
  uint64_t x = 0;
  for (int i = 7; i >= 0; --i)
    x = x << 8 | in[offset + static_cast<size_t>(i)];
  return x;
}

std::vector<uint8_t> encode(const account& a) {
  std::vector<uint8_t> out;
  out.reserve(24);
  put_u64(out, a.balance);
  put_u64(out, a.nonce);
  put_u64(out, a.stake);
  return out;
}

std::vector<uint8_t> encode(const escrow_entry& e) {
  // payer, amount, locked, flags (bit 0 settled, bit 1 rewarded, bit 2
  // terms, bit 3 model registered), [terms: agent, max price, units, deadline, asset count, assets,]
  // then the slashed targets, 32 bytes each.
  std::vector<uint8_t> out(e.payer.bytes.begin(), e.payer.bytes.end());
  put_u64(out, e.amount);
  put_u64(out, e.locked);
  put_u64(out, (e.settled ? 1u : 0u) | (e.rewarded ? 2u : 0u) | (e.terms ? 4u : 0u)
                 | (e.model_registered ? 8u : 0u));
  if (e.terms) {
    out.insert(out.end(), e.terms->agent.bytes.begin(), e.terms->agent.bytes.end());
    put_u64(out, e.terms->max_price);
    put_u64(out, e.terms->units);
    put_u64(out, e.terms->deadline_ms);
    put_u64(out, e.terms->assets.size());
    for (auto& a : e.terms->assets)
      out.insert(out.end(), a.begin(), a.end());
  }
  for (auto& t : e.slashed)
    out.insert(out.end(), t.bytes.begin(), t.bytes.end());
  return out;
}

std::vector<uint8_t> encode(const asset_entry& a) {
  std::vector<uint8_t> out(a.owner.bytes.begin(), a.owner.bytes.end());
  out.insert(out.end(), a.metadata.begin(), a.metadata.end());
  put_u64(out, a.price);
  out.insert(out.end(), a.kind.begin(), a.kind.end());
  return out;
}

std::vector<uint8_t> encode(const supply_totals& t) {
  std::vector<uint8_t> out;
  put_u64(out, t.supply);
  put_u64(out, t.minted);
  put_u64(out, t.slashed);
  return out;
}

caf::error corrupt(const char* what, size_t size) {
  return make_error(errc::internal,
                    fmt::format("stored {} has {} bytes: the store is corrupt", what, size));
}

caf::expected<account> decode_account(std::span<const uint8_t> v) {
  if (v.size() != 24)
    return corrupt("account", v.size());
  return account{get_u64(v, 0), get_u64(v, 8), get_u64(v, 16)};
}

caf::expected<escrow_entry> decode_escrow(std::span<const uint8_t> v) {
  if (v.size() < 56)
    return corrupt("escrow", v.size());
  escrow_entry e;
  std::memcpy(e.payer.bytes.data(), v.data(), 32);
  e.amount = get_u64(v, 32);
  e.locked = get_u64(v, 40);
  auto flags = get_u64(v, 48);
  if (flags > 15)
    return corrupt("escrow flags", flags);
  e.settled = flags & 1;
  e.rewarded = flags & 2;
  e.model_registered = flags & 8;
  size_t off = 56;
  if (flags & 4) {
    if (v.size() < off + 64)
      return corrupt("escrow terms", v.size());
    escrow_terms t;
    std::memcpy(t.agent.bytes.data(), v.data() + off, 32);
    t.max_price = get_u64(v, off + 32);
    t.units = get_u64(v, off + 40);
    t.deadline_ms = get_u64(v, off + 48);
    auto n = get_u64(v, off + 56);
    off += 64;
    if (n > (v.size() - off) / 32)
      return corrupt("escrow terms' assets", v.size());
    for (uint64_t i = 0; i < n; ++i, off += 32) {
      hash256 a;
      std::memcpy(a.data(), v.data() + off, 32);
      t.assets.push_back(a);
    }
    e.terms = std::move(t);
  }
  if ((v.size() - off) % 32 != 0)
    return corrupt("escrow", v.size());
  for (; off < v.size(); off += 32) {
    node_id t;
    std::memcpy(t.bytes.data(), v.data() + off, 32);
    e.slashed.push_back(t);
  }
  return e;
}

caf::expected<asset_entry> decode_asset(std::span<const uint8_t> v) {
  if (v.size() < 72)
    return corrupt("asset", v.size());
  asset_entry a;
  std::memcpy(a.owner.bytes.data(), v.data(), 32);
  std::memcpy(a.metadata.data(), v.data() + 32, 32);
  a.price = get_u64(v, 64);
  a.kind.assign(reinterpret_cast<const char*>(v.data() + 72), v.size() - 72);
  return a;
}

caf::expected<supply_totals> decode_totals(std::span<const uint8_t> v) {
  if (v.size() != 24)
    return corrupt("totals", v.size());
  return supply_totals{get_u64(v, 0), get_u64(v, 8), get_u64(v, 16)};
}

constexpr std::string_view totals_key = "totals";

std::span<const uint8_t> bytes_of(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

/// Hashes state entries in the one order both stores use.
class root_hasher {
public:
  root_hasher() {
    crypto_generichash_init(&st_, nullptr, 0, 32);
    static constexpr std::string_view tag = "aicon-state-v1";
    update('V', bytes_of(tag), {});
  }
  void update(char table, std::span<const uint8_t> key, std::span<const uint8_t> value) {
    uint8_t hdr[9];
    hdr[0] = static_cast<uint8_t>(table);
    uint32_t k = static_cast<uint32_t>(key.size()), v = static_cast<uint32_t>(value.size());
    std::memcpy(hdr + 1, &k, 4);
    std::memcpy(hdr + 5, &v, 4);
    crypto_generichash_update(&st_, hdr, sizeof(hdr));
    crypto_generichash_update(&st_, key.data(), key.size());
    crypto_generichash_update(&st_, value.data(), value.size());
  }
  hash256 finish() {
    hash256 out;
    crypto_generichash_final(&st_, out.data(), out.size());
    return out;
  }

private:
  crypto_generichash_state st_;
};

caf::error refuse(rule r, std::string what) {
  errc code = r == rule::bad_signature ? errc::bad_signature
              : (r == rule::not_authority || r == rule::not_escrow_payer
                 || r == rule::not_asset_owner)
                ? errc::forbidden
                : errc::invalid_argument;
  return make_error(code, fmt::format("rule {}: {}", to_string(r), what));
}

template <class Reader>
caf::expected<hash256> hash_field(Reader data, const char* field) {
  if (data.size() != 32)
    return refuse(rule::malformed, fmt::format("{} must be 32 bytes, has {}", field, data.size()));
  hash256 out;
  std::memcpy(out.data(), data.begin(), 32);
  return out;
}

template <class Reader>
caf::expected<node_id> key_field(Reader data, const char* field) {
  auto h = hash_field(data, field);
  if (!h)
    return h.error();
  node_id id;
  id.bytes = *h;
  return id;
}

bool add_overflows(uint64_t a, uint64_t b, uint64_t& out) {
  return __builtin_add_overflow(a, b, &out);
}

/// Accounts touched by one transaction, loaded once and written back only
/// when every rule passed (so aliasing, e.g. paying yourself, is handled).
class touched_accounts {
public:
  explicit touched_accounts(state_store& st) : st_(st) {
  }
  caf::expected<account*> get(const node_id& who) {
    auto i = cache_.find(who);
    if (i == cache_.end()) {
      auto a = st_.get_account(who);
      if (!a)
        return a.error();
      i = cache_.emplace(who, *a).first;
    }
    return &i->second;
  }
  caf::error write_back() {
    for (auto& [who, a] : cache_)
      if (auto err = st_.put_account(who, a))
        return err;
    return caf::none;
  }

private:
  state_store& st_;
  std::map<node_id, account> cache_;
};

/// Adds `amount` to `to`'s pending credit, checking every sum.
caf::error credit(touched_accounts& accts, const node_id& to, uint64_t amount) {
  auto a = accts.get(to);
  if (!a)
    return a.error();
  uint64_t sum;
  if (add_overflows((*a)->balance, amount, sum))
    return refuse(rule::amount_overflow,
                  fmt::format("crediting {} to {} overflows its balance", amount, to.short_hex()));
  (*a)->balance = sum;
  return caf::none;
}

/// The escrow a transaction names by `id` (its `field`): the job id and
/// its record, or the refusal (malformed, unknown_escrow with `missing`).
caf::expected<std::pair<hash256, escrow_entry>> named_escrow(state_store& st,
                                                              capnp::Data::Reader id,
                                                              const char* field,
                                                              const char* missing) {
  auto job = hash_field(id, field);
  if (!job)
    return job.error();
  auto e = st.get_escrow(*job);
  if (!e)
    return e.error();
  if (!*e)
    return refuse(rule::unknown_escrow, missing);
  return std::make_pair(*job, **e);
}

/// Sums payouts, checking sizes and overflow.
caf::expected<uint64_t> sum_payouts(capnp::List<schema::Payout>::Reader payouts) {
  uint64_t total = 0;
  for (auto p : payouts) {
    auto to = key_field(p.getTo(), "payout.to");
    if (!to)
      return to.error();
    if (add_overflows(total, p.getAmount(), total))
      return refuse(rule::amount_overflow, "payouts sum overflows 64 bits");
  }
  return total;
}

} // namespace

const char* to_string(rule r) {
  switch (r) {
    case rule::malformed: return "malformed";
    case rule::bad_signature: return "bad_signature";
    case rule::replayed_nonce: return "replayed_nonce";
    case rule::skipped_nonce: return "skipped_nonce";
    case rule::zero_amount: return "zero_amount";
    case rule::overdraft: return "overdraft";
    case rule::amount_overflow: return "amount_overflow";
    case rule::escrow_exists: return "escrow_exists";
    case rule::unknown_escrow: return "unknown_escrow";
    case rule::not_escrow_payer: return "not_escrow_payer";
    case rule::settle_exceeds_escrow: return "settle_exceeds_escrow";
    case rule::not_authority: return "not_authority";
    case rule::asset_exists: return "asset_exists";
    case rule::unknown_asset: return "unknown_asset";
    case rule::not_asset_owner: return "not_asset_owner";
    case rule::slash_exceeds_stake: return "slash_exceeds_stake";
    case rule::escrow_settled: return "escrow_settled";
    case rule::already_rewarded: return "already_rewarded";
    case rule::reward_exceeds_rule: return "reward_exceeds_rule";
    case rule::already_slashed: return "already_slashed";
    case rule::slash_not_by_rule: return "slash_not_by_rule";
    case rule::wrong_chain: return "wrong_chain";
    case rule::terms_exceed_escrow: return "terms_exceed_escrow";
    case rule::settle_exceeds_terms: return "settle_exceeds_terms";
    case rule::escrow_expired: return "escrow_expired";
    case rule::refund_only: return "refund_only";
    case rule::escrow_has_agent: return "escrow_has_agent";
    case rule::bad_evidence: return "bad_evidence";
    case rule::already_punished: return "already_punished";
    case rule::not_escrow_agent: return "not_escrow_agent";
  }
  return "unknown";
}

std::optional<rule> rule_of(const caf::error& err) {
  auto text = what_of(err);
  if (text.rfind("rule ", 0) != 0)
    return std::nullopt;
  auto name = text.substr(5, text.find(':') - 5);
  for (uint8_t i = 0; i <= static_cast<uint8_t>(rule::not_escrow_agent); ++i)
    if (name == to_string(static_cast<rule>(i)))
      return static_cast<rule>(i);
  return std::nullopt;
}

std::vector<uint8_t> signing_bytes(schema::Transaction::Reader tx) {
  static constexpr std::string_view tag = "aicon-tx-v2";
  auto canonical = capnp::canonicalize(tx);
  auto bytes = canonical.asBytes();
  std::vector<uint8_t> out(tag.size() + bytes.size());
  std::memcpy(out.data(), tag.data(), tag.size());
  std::memcpy(out.data() + tag.size(), bytes.begin(), bytes.size());
  return out;
}

// --- memory_store -------------------------------------------------------------

caf::expected<account> memory_store::get_account(const node_id& who) {
  auto i = accounts_.find(who);
  return i == accounts_.end() ? account{} : i->second;
}

caf::error memory_store::put_account(const node_id& who, const account& a) {
  if (a == account{})
    accounts_.erase(who); // an empty account is no account: same root as LMDB
  else
    accounts_[who] = a;
  return caf::none;
}

caf::expected<std::optional<escrow_entry>> memory_store::get_escrow(const hash256& job) {
  auto i = escrow_.find(job);
  if (i == escrow_.end())
    return std::optional<escrow_entry>{};
  return std::optional<escrow_entry>{i->second};
}

caf::error memory_store::put_escrow(const hash256& job, const escrow_entry& e) {
  escrow_[job] = e;
  return caf::none;
}

caf::error memory_store::erase_escrow(const hash256& job) {
  escrow_.erase(job);
  return caf::none;
}

caf::expected<std::optional<asset_entry>> memory_store::get_asset(const hash256& id) {
  auto i = assets_.find(id);
  if (i == assets_.end())
    return std::optional<asset_entry>{};
  return std::optional<asset_entry>{i->second};
}

caf::error memory_store::put_asset(const hash256& id, const asset_entry& a) {
  assets_[id] = a;
  return caf::none;
}

caf::expected<supply_totals> memory_store::get_totals() {
  return totals_;
}

caf::error memory_store::put_totals(const supply_totals& t) {
  totals_ = t;
  return caf::none;
}

caf::expected<std::optional<uint64_t>> memory_store::receipt_used(const hash256& receipt) {
  auto i = receipts_.find(receipt);
  if (i == receipts_.end())
    return std::optional<uint64_t>{};
  return std::optional<uint64_t>{i->second};
}

caf::error memory_store::mark_receipt(const hash256& receipt, uint64_t height) {
  receipts_[receipt] = height;
  return caf::none;
}

caf::expected<hash256> memory_store::state_root() {
  root_hasher h;
  for (auto& [k, v] : accounts_)
    h.update('A', k.bytes, encode(v));
  for (auto& [k, v] : escrow_)
    h.update('E', k, encode(v));
  for (auto& [k, v] : assets_)
    h.update('S', k, encode(v));
  h.update('T', bytes_of(totals_key), encode(totals_));
  return h.finish();
}

// --- lmdb_store ---------------------------------------------------------------

caf::expected<account> lmdb_store::get_account(const node_id& who) {
  auto v = txn_.get(store::db::accounts, who.bytes);
  if (!v)
    return v.error();
  if (!*v)
    return account{};
  return decode_account(**v);
}

caf::error lmdb_store::put_account(const node_id& who, const account& a) {
  if (a == account{})
    return txn_.del(store::db::accounts, who.bytes);
  return txn_.put(store::db::accounts, who.bytes, encode(a));
}

caf::expected<std::optional<escrow_entry>> lmdb_store::get_escrow(const hash256& job) {
  auto v = txn_.get(store::db::escrow, job);
  if (!v)
    return v.error();
  if (!*v)
    return std::optional<escrow_entry>{};
  auto e = decode_escrow(**v);
  if (!e)
    return e.error();
  return std::optional<escrow_entry>{*e};
}

caf::error lmdb_store::put_escrow(const hash256& job, const escrow_entry& e) {
  return txn_.put(store::db::escrow, job, encode(e));
}

caf::error lmdb_store::erase_escrow(const hash256& job) {
  return txn_.del(store::db::escrow, job);
}

caf::expected<std::optional<asset_entry>> lmdb_store::get_asset(const hash256& id) {
  auto v = txn_.get(store::db::assets, id);
  if (!v)
    return v.error();
  if (!*v)
    return std::optional<asset_entry>{};
  auto a = decode_asset(**v);
  if (!a)
    return a.error();
  return std::optional<asset_entry>{*a};
}

caf::error lmdb_store::put_asset(const hash256& id, const asset_entry& a) {
  return txn_.put(store::db::assets, id, encode(a));
}

caf::expected<supply_totals> lmdb_store::get_totals() {
  auto v = txn_.get(store::db::meta, bytes_of(totals_key));
  if (!v)
    return v.error();
  if (!*v)
    return supply_totals{};
  return decode_totals(**v);
}

caf::error lmdb_store::put_totals(const supply_totals& t) {
  return txn_.put(store::db::meta, bytes_of(totals_key), encode(t));
}

caf::expected<std::optional<uint64_t>> lmdb_store::receipt_used(const hash256& receipt) {
  auto v = txn_.get(store::db::receipts, receipt);
  if (!v)
    return v.error();
  if (!*v)
    return std::optional<uint64_t>{};
  if ((*v)->size() != 8)
    return make_error(errc::internal, "a stored receipt record is corrupt");
  uint64_t h = 0;
  for (int i = 0; i < 8; ++i)
    h = h << 8 | (**v)[static_cast<size_t>(i)];
  return std::optional<uint64_t>{h};
}

caf::error lmdb_store::mark_receipt(const hash256& receipt, uint64_t height) {
  return txn_.put(store::db::receipts, receipt, store::height_key(height));
}

caf::expected<hash256> lmdb_store::state_root() {
  root_hasher h;
  for (auto [which, tag] : {std::pair{store::db::accounts, 'A'}, std::pair{store::db::escrow, 'E'},
                            std::pair{store::db::assets, 'S'}}) {
    char table = tag; // clang 14 cannot capture a structured binding
    if (auto err = txn_.for_each(which, [&h, table](auto k, auto v) {
          h.update(table, k, v);
          return true;
        }))
      return err;
  }
  auto totals = get_totals();
  if (!totals)
    return totals.error();
  h.update('T', bytes_of(totals_key), encode(*totals));
  return h.finish();
}

// --- the rules ----------------------------------------------------------------

caf::error apply_genesis(state_store& st, const std::vector<genesis_entry>& entries) {
  auto totals = st.get_totals();
  if (!totals)
    return totals.error();
  touched_accounts accts{st};
  for (auto& e : entries) {
    auto a = accts.get(e.wallet);
    if (!a)
      return a.error();
    uint64_t amount;
    if (add_overflows(e.balance, e.stake, amount) || add_overflows((*a)->balance, e.balance, (*a)->balance)
        || add_overflows((*a)->stake, e.stake, (*a)->stake)
        || add_overflows(totals->supply, amount, totals->supply)
        || add_overflows(totals->minted, amount, totals->minted))
      return refuse(rule::amount_overflow, "genesis amounts overflow 64 bits");
  }
  if (auto err = accts.write_back())
    return err;
  return st.put_totals(*totals);
}

caf::error check_signature(schema::SignedTransaction::Reader stx) {
  if (!stx.hasTx())
    return refuse(rule::malformed, "no transaction");
  auto tx = stx.getTx();
  auto author = key_field(tx.getAuthor(), "author");
  if (!author)
    return author.error();
  auto sig = stx.getSignature();
  if (sig.size() != 64)
    return refuse(rule::malformed, fmt::format("signature must be 64 bytes, has {}", sig.size()));
  if (!verify_signature(*author, signing_bytes(tx), {sig.begin(), sig.size()}))
    return refuse(rule::bad_signature,
                  fmt::format("signature does not verify for author {}", author->short_hex()));
  return caf::none;
}

caf::error apply_transaction(state_store& st, const chain_params& params,
                             schema::SignedTransaction::Reader stx, bool signature_checked,
                             uint64_t time_ms) {
  if (time_ms == 0)
    time_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::system_clock::now().time_since_epoch())
                                      .count());
  if (!signature_checked)
    if (auto err = check_signature(stx))
      return err;
  auto tx = stx.getTx();
  auto author = key_field(tx.getAuthor(), "author");
  if (!author)
    return author.error();
  auto chain = hash_field(tx.getChain(), "chain");
  if (!chain)
    return chain.error();
  if (*chain != params.chain_id)
    return refuse(rule::wrong_chain,
                  fmt::format("signed for chain {}..., this is chain {}...",
                              to_hex({chain->data(), 4}), to_hex({params.chain_id.data(), 4})));
  touched_accounts accts{st};
  auto me = accts.get(*author);
  if (!me)
    return me.error();
  auto nonce = tx.getNonce();
  if (nonce <= (*me)->nonce)
    return refuse(rule::replayed_nonce, fmt::format("nonce {} of {} was already used (last {})",
                                                    nonce, author->short_hex(), (*me)->nonce));
  if (nonce > (*me)->nonce + 1)
    return refuse(rule::skipped_nonce, fmt::format("nonce {} of {} skips ahead (expected {})",
                                                   nonce, author->short_hex(), (*me)->nonce + 1));
  auto totals = st.get_totals();
  if (!totals)
    return totals.error();
  auto spend = [&](uint64_t amount, const char* what) -> caf::error {
    if (amount == 0)
      return refuse(rule::zero_amount, fmt::format("{} of 0", what));
    if (amount > (*me)->balance)
      return refuse(rule::overdraft, fmt::format("{} of {} exceeds the balance {} of {}", what,
                                                 amount, (*me)->balance, author->short_hex()));
    (*me)->balance -= amount;
    return caf::none;
  };
  bool totals_changed = false;
  // A slash by the rules: slash_percent of `who`'s stake, leaving the supply.
  struct stake_cut_t {
    account* victim;
    uint64_t amount;
  };
  auto stake_cut = [&](const node_id& who) -> caf::expected<stake_cut_t> {
    auto victim = accts.get(who);
    if (!victim)
      return victim.error();
    auto cut = static_cast<uint64_t>(static_cast<unsigned __int128>((*victim)->stake)
                                     * params.slash_percent / 100);
    if (cut == 0)
      return refuse(rule::zero_amount, fmt::format("{} has no stake to slash", who.short_hex()));
    if (cut > (*victim)->stake)
      return refuse(rule::slash_exceeds_stake,
                    fmt::format("slash of {} exceeds the stake {} of {}", cut, (*victim)->stake,
                                who.short_hex()));
    return stake_cut_t{*victim, cut};
  };
  auto apply_cut = [&](const stake_cut_t& c) {
    c.victim->stake -= c.amount;
    totals->supply -= c.amount;
    totals->slashed += c.amount;
    totals_changed = true;
  };
  auto body = tx.getBody();
  switch (body.which()) {
    case schema::Transaction::Body::TRANSFER: {
      auto t = body.getTransfer();
      auto to = key_field(t.getTo(), "transfer.to");
      if (!to)
        return to.error();
      if (auto err = spend(t.getAmount(), "transfer"))
        return err;
      if (auto err = credit(accts, *to, t.getAmount()))
        return err;
      break;
    }
    case schema::Transaction::Body::ESCROW_LOCK: {
      auto l = body.getEscrowLock();
      auto job = hash_field(l.getJobId(), "escrowLock.jobId");
      if (!job)
        return job.error();
      auto existing = st.get_escrow(*job);
      if (!existing)
        return existing.error();
      if (*existing)
        return refuse(rule::escrow_exists, "this job already has an escrow");
      std::optional<escrow_terms> terms;
      if (l.hasTerms()) {
        auto t = l.getTerms();
        auto agent = key_field(t.getAgent(), "escrowLock.terms.agent");
        if (!agent)
          return agent.error();
        escrow_terms et;
        et.agent = *agent;
        et.max_price = t.getMaxPrice();
        et.units = t.getUnits();
        et.deadline_ms = t.getDeadlineMs();
        if (t.getAssets().size() > 16)
          return refuse(rule::malformed, "escrowLock.terms.assets: at most 16");
        for (auto a : t.getAssets()) {
          auto id = hash_field(a, "escrowLock.terms.assets[]");
          if (!id)
            return id.error();
          et.assets.push_back(*id);
        }
        uint64_t trainers = 0;
        if (et.max_price == 0 || et.units == 0
            || __builtin_mul_overflow(et.max_price, et.units, &trainers)
            || trainers > l.getAmount())
          return refuse(rule::terms_exceed_escrow,
                        fmt::format("terms pay trainers maxPrice {} x units {}: that must be "
                                    "more than 0 and at most the amount {}",
                                    et.max_price, et.units, l.getAmount()));
        if (et.deadline_ms <= time_ms)
          return refuse(rule::terms_exceed_escrow,
                        fmt::format("terms' deadline {} is not after the block time {}",
                                    et.deadline_ms, time_ms));
        terms = std::move(et);
      }
      if (auto err = spend(l.getAmount(), "escrow lock"))
        return err;
      (*me)->nonce = nonce;
      if (auto err = accts.write_back())
        return err;
      escrow_entry e;
      e.payer = *author;
      e.amount = e.locked = l.getAmount();
      e.terms = std::move(terms);
      return st.put_escrow(*job, e);
    }
    case schema::Transaction::Body::SETTLE: {
      auto s = body.getSettle();
      auto named = named_escrow(st, s.getJobId(), "settle.jobId", "no escrow for this job");
      if (!named)
        return named.error();
      auto& [job, escrow] = *named;
      auto* e = &escrow;
      if (e->settled)
        return refuse(rule::escrow_settled, "this job's escrow was already settled");
      bool by_agent = e->terms && e->terms->agent == *author && e->payer != *author;
      if (e->payer != *author && !by_agent)
        return refuse(rule::not_escrow_payer,
                      fmt::format("the escrow belongs to {}{}, not {}", e->payer.short_hex(),
                                  e->terms ? " (agent " + e->terms->agent.short_hex() + ")" : "",
                                  author->short_hex()));
      auto total = sum_payouts(s.getPayouts());
      if (!total)
        return total.error();
      if (*total > e->amount)
        return refuse(rule::settle_exceeds_escrow,
                      fmt::format("payouts {} exceed the escrow {}", *total, e->amount));
      if (e->terms) {
        bool expired = time_ms > e->terms->deadline_ms;
        if (by_agent && expired)
          return refuse(rule::escrow_expired,
                        fmt::format("the agent's deadline {} has passed (block time {}): only "
                                    "the payer's refund is left",
                                    e->terms->deadline_ms, time_ms));
        if (!by_agent && !expired)
          return refuse(rule::escrow_has_agent,
                        fmt::format("agent {} settles this escrow until {} (block time {})",
                                    e->terms->agent.short_hex(), e->terms->deadline_ms, time_ms));
        if (!by_agent && *total > 0)
          return refuse(rule::refund_only,
                        "after the agent's deadline the escrow can only be refunded whole");
        if (by_agent) {
          // Each listed asset's owner may get its registered price; every
          // other payout counts as trainers' pay, capped by the terms.
          std::map<node_id, uint64_t> asset_allowance;
          for (auto& id : e->terms->assets) {
            auto a = st.get_asset(id);
            if (!a)
              return a.error();
            if (*a) {
              auto& allow = asset_allowance[(*a)->owner];
              if (add_overflows(allow, (*a)->price, allow))
                allow = UINT64_MAX;
            }
          }
          uint64_t trainers = 0;
          for (auto p : s.getPayouts()) {
            auto to = *key_field(p.getTo(), "payout.to");
            auto& allow = asset_allowance[to];
            auto from_asset = std::min(allow, p.getAmount());
            allow -= from_asset;
            trainers += p.getAmount() - from_asset; // <= total, no overflow
          }
          auto cap = e->terms->max_price * e->terms->units; // checked at the lock
          if (trainers > cap)
            return refuse(rule::settle_exceeds_terms,
                          fmt::format("the agent pays {} beyond the listed assets' prices, above "
                                      "the terms' maxPrice {} x units {} = {}",
                                      trainers, e->terms->max_price, e->terms->units, cap));
        }
      }
      for (auto p : s.getPayouts())
        if (auto err = credit(accts, *key_field(p.getTo(), "payout.to"), p.getAmount()))
          return err;
      if (auto err = credit(accts, e->payer, e->amount - *total)) // the refund
        return err;
      (*me)->nonce = nonce;
      if (auto err = accts.write_back())
        return err;
      auto done = *e;
      done.amount = 0;
      done.settled = true;
      return st.put_escrow(job, done);
    }
    case schema::Transaction::Body::MINT_REWARD: {
      if (!params.authorities.count(*author))
        return refuse(rule::not_authority,
                      fmt::format("{} may not mint rewards", author->short_hex()));
      auto m = body.getMintReward();
      auto named = named_escrow(st, m.getJobId(), "mintReward.jobId",
                                "a reward is minted only for an escrowed job");
      if (!named)
        return named.error();
      auto& [job, escrow] = *named;
      auto* e = &escrow;
      if (e->rewarded)
        return refuse(rule::already_rewarded, "this job's reward was already minted");
      auto total = sum_payouts(m.getPayouts());
      if (!total)
        return total.error();
      auto allowed = static_cast<uint64_t>(static_cast<unsigned __int128>(e->locked)
                                           * params.reward_percent / 100);
      if (*total > allowed)
        return refuse(rule::reward_exceeds_rule,
                      fmt::format("a reward of {} exceeds {}% of the job's escrow {} ({})",
                                  *total, params.reward_percent, e->locked, allowed));
      auto marked = *e;
      marked.rewarded = true;
      if (auto err = st.put_escrow(job, marked))
        return err;
      if (add_overflows(totals->supply, *total, totals->supply)
          || add_overflows(totals->minted, *total, totals->minted))
        return refuse(rule::amount_overflow, "minting would overflow the supply");
      for (auto p : body.getMintReward().getPayouts())
        if (auto err = credit(accts, *key_field(p.getTo(), "payout.to"), p.getAmount()))
          return err;
      totals_changed = true;
      break;
    }
    case schema::Transaction::Body::ASSET_REGISTER: {
      auto r = body.getAssetRegister();
      auto id = hash_field(r.getAssetId(), "assetRegister.assetId");
      if (!id)
        return id.error();
      auto meta = hash_field(r.getMetadataHash(), "assetRegister.metadataHash");
      if (!meta)
        return meta.error();
      if (r.getKind().size() == 0 || r.getKind().size() > 64)
        return refuse(rule::malformed, "assetRegister.kind must be 1..64 characters");
      auto existing = st.get_asset(*id);
      if (!existing)
        return existing.error();
      if (*existing)
        return refuse(rule::asset_exists, "this asset id is already registered");
      auto owner = *author;
      if (r.hasForJob()) {
        auto named = named_escrow(st, r.getForJob(), "assetRegister.forJob",
                                  "no escrow for that job");
        if (!named)
          return named.error();
        auto& [job, e] = *named;
        if (!e.terms || e.terms->agent != *author)
          return refuse(rule::not_escrow_agent,
                        fmt::format("{} is not the agent of that job's escrow", author->short_hex()));
        if (std::string_view{r.getKind().cStr()} != "trained-model")
          return refuse(rule::not_escrow_agent,
                        "an agent registers only the job's \"trained-model\" for its payer");
        if (e.model_registered)
          return refuse(rule::not_escrow_agent, "that job's trained model is already registered");
        auto marked = e;
        marked.model_registered = true;
        if (auto err = st.put_escrow(job, marked))
          return err;
        owner = e.payer;
      }
      (*me)->nonce = nonce;
      if (auto err = accts.write_back())
        return err;
      return st.put_asset(*id, asset_entry{owner, r.getKind().cStr(), *meta, r.getPrice()});
    }
    case schema::Transaction::Body::ASSET_TRANSFER: {
      auto t = body.getAssetTransfer();
      auto id = hash_field(t.getAssetId(), "assetTransfer.assetId");
      if (!id)
        return id.error();
      auto to = key_field(t.getTo(), "assetTransfer.to");
      if (!to)
        return to.error();
      auto existing = st.get_asset(*id);
      if (!existing)
        return existing.error();
      if (!*existing)
        return refuse(rule::unknown_asset, "no such asset");
      if ((*existing)->owner != *author)
        return refuse(rule::not_asset_owner,
                      fmt::format("the asset belongs to {}, not {}",
                                  (*existing)->owner.short_hex(), author->short_hex()));
      auto moved = **existing;
      moved.owner = *to;
      (*me)->nonce = nonce;
      if (auto err = accts.write_back())
        return err;
      return st.put_asset(*id, moved);
    }
    case schema::Transaction::Body::STAKE: {
      auto amount = body.getStake().getAmount();
      if (auto err = spend(amount, "stake"))
        return err;
      if (add_overflows((*me)->stake, amount, (*me)->stake))
        return refuse(rule::amount_overflow, "stake overflows 64 bits");
      break;
    }
    case schema::Transaction::Body::SLASH: {
      if (!params.authorities.count(*author))
        return refuse(rule::not_authority, fmt::format("{} may not slash", author->short_hex()));
      auto s = body.getSlash();
      auto target = key_field(s.getTarget(), "slash.target");
      if (!target)
        return target.error();
      if (s.getAmount() != 0)
        return refuse(rule::slash_not_by_rule,
                      fmt::format("slash.amount is {}: it must be 0, the chain cuts {}% of "
                                  "the target's stake", s.getAmount(), params.slash_percent));
      auto named = named_escrow(st, s.getJobId(), "slash.jobId", "a slash names an escrowed job");
      if (!named)
        return named.error();
      auto& [job, escrow] = *named;
      auto& done = escrow.slashed;
      if (std::find(done.begin(), done.end(), *target) != done.end())
        return refuse(rule::already_slashed,
                      fmt::format("{} was already slashed for this job", target->short_hex()));
      if (done.size() >= slashes_per_job_max)
        return refuse(rule::already_slashed,
                      fmt::format("this job already slashed {} targets", done.size()));
      auto cut = stake_cut(*target);
      if (!cut)
        return cut.error();
      auto marked = escrow;
      marked.slashed.push_back(*target);
      if (auto err = st.put_escrow(job, marked))
        return err;
      apply_cut(*cut);
      break;
    }
    case schema::Transaction::Body::DOUBLE_VOTE: {
      auto d = body.getDoubleVote();
      auto a = d.getA(), b = d.getB();
      auto voter = key_field(a.getVoter(), "doubleVote.a.voter");
      if (!voter)
        return voter.error();
      auto other = key_field(b.getVoter(), "doubleVote.b.voter");
      if (!other)
        return other.error();
      auto ha = hash_field(a.getBlockHash(), "doubleVote.a.blockHash");
      if (!ha)
        return ha.error();
      auto hb = hash_field(b.getBlockHash(), "doubleVote.b.blockHash");
      if (!hb)
        return hb.error();
      if (*voter != *other || a.getHeight() != b.getHeight() || a.getRound() != b.getRound()
          || a.getKind() != b.getKind())
        return refuse(rule::bad_evidence, "the votes are by different voters, or at different "
                                          "heights, rounds or kinds (a member may change its "
                                          "vote from round to round)");
      if (*ha == *hb)
        return refuse(rule::bad_evidence, "the votes are for the same block");
      for (auto v : {a, b})
        if (!vote_verifies(v))
          return refuse(rule::bad_evidence,
                        fmt::format("a vote is not signed by {}", voter->short_hex()));
      std::vector<uint8_t> mark_bytes(voter->bytes.begin(), voter->bytes.end());
      for (int i = 0; i < 8; ++i)
        mark_bytes.push_back(static_cast<uint8_t>(a.getHeight() >> (8 * i)));
      auto mark = blake2b("aicon-double-vote-v1", mark_bytes);
      auto used = st.receipt_used(mark);
      if (!used)
        return used.error();
      if (*used)
        return refuse(rule::already_punished,
                      fmt::format("{} was already punished for height {}", voter->short_hex(),
                                  a.getHeight()));
      auto cut = stake_cut(*voter);
      if (!cut)
        return cut.error();
      if (auto err = st.mark_receipt(mark, a.getHeight()))
        return err;
      apply_cut(*cut);
      break;
    }
    default:
      return refuse(rule::malformed, "unknown transaction body");
  }
  (*me)->nonce = nonce;
  if (auto err = accts.write_back())
    return err;
  if (totals_changed)
    return st.put_totals(*totals);
  return caf::none;
}

} // namespace aicon::ledger
