// The ledger's state machine: accounts, escrow and assets, and the rules
// every transaction must pass. Pure logic over an abstract store, so it is
// tested without an actor system and runs the same over memory (tests,
// simulation) and LMDB (hosts).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

#include <caf/error.hpp>
#include <caf/expected.hpp>

#include "runtime/envelope.hpp"
#include "runtime/identity.hpp"
#include "runtime/store.hpp"
#include "schemas/chain.capnp.h"

namespace aicon::ledger {

using hash256 = std::array<uint8_t, 32>;

struct account {
  uint64_t balance = 0; ///< spendable
  uint64_t nonce = 0;   ///< nonce of the author's last applied transaction
  uint64_t stake = 0;   ///< locked; can be slashed
  bool operator==(const account&) const = default;
};

/// A job's escrow. The record outlives its settlement (amount 0, settled)
/// so the chain can still tell which jobs were escrowed, for how much, and
/// whether their reward was minted or a trainer slashed for them.
/// EscrowTerms: what the payer lets its job's agent (a job host) do.
struct escrow_terms {
  node_id agent;
  uint64_t max_price = 0;   ///< per trainer per step
  uint64_t units = 0;       ///< trainer-steps signed for
  uint64_t deadline_ms = 0; ///< block time the agent must settle by
  std::vector<hash256> assets;
  bool operator==(const escrow_terms&) const = default;
};

struct escrow_entry {
  node_id payer;
  uint64_t amount = 0;  ///< still locked
  uint64_t locked = 0;  ///< locked by the EscrowLock (the job's terms)
  bool settled = false;
  bool rewarded = false;             ///< its PoV reward was minted
  std::vector<node_id> slashed;      ///< targets slashed for this job, in order
  std::optional<escrow_terms> terms; ///< set when an agent runs the job
  bool model_registered = false;     ///< its agent registered the trained model for the payer
  bool operator==(const escrow_entry&) const = default;
};

/// Most trainers one job's failed verification may slash.
constexpr size_t slashes_per_job_max = 1024;

struct asset_entry {
  node_id owner;
  std::string kind;
  hash256 metadata{};
  uint64_t price = 0; ///< per use, paid by each job that uses it
  bool operator==(const asset_entry&) const = default;
};

/// Totals kept beside the state so supply can be audited in O(1).
struct supply_totals {
  uint64_t supply = 0; ///< balances + stakes + escrow
  uint64_t minted = 0; ///< ever minted (genesis included)
  uint64_t slashed = 0;
  bool operator==(const supply_totals&) const = default;
};

/// Where the state lives. Reads return defaults for absent entries.
class state_store {
public:
  virtual ~state_store() = default;
  virtual caf::expected<account> get_account(const node_id& who) = 0;
  virtual caf::error put_account(const node_id& who, const account& a) = 0;
  virtual caf::expected<std::optional<escrow_entry>> get_escrow(const hash256& job) = 0;
  virtual caf::error put_escrow(const hash256& job, const escrow_entry& e) = 0;
  virtual caf::error erase_escrow(const hash256& job) = 0;
  virtual caf::expected<std::optional<asset_entry>> get_asset(const hash256& id) = 0;
  virtual caf::error put_asset(const hash256& id, const asset_entry& a) = 0;
  virtual caf::expected<supply_totals> get_totals() = 0;
  virtual caf::error put_totals(const supply_totals& t) = 0;
  /// The height of the block that used a work receipt (nullopt: unused).
  /// Not part of the state root: it follows from the blocks.
  virtual caf::expected<std::optional<uint64_t>> receipt_used(const hash256& receipt) = 0;
  virtual caf::error mark_receipt(const hash256& receipt, uint64_t height) = 0;
  /// BLAKE2b-256 over every account, escrow and asset in key order and the
  /// totals: two hosts with the same state have the same root.
  virtual caf::expected<hash256> state_root() = 0;
};

/// The state in ordered maps (tests, simulations).
class memory_store : public state_store {
public:
  caf::expected<account> get_account(const node_id& who) override;
  caf::error put_account(const node_id& who, const account& a) override;
  caf::expected<std::optional<escrow_entry>> get_escrow(const hash256& job) override;
  caf::error put_escrow(const hash256& job, const escrow_entry& e) override;
  caf::error erase_escrow(const hash256& job) override;
  caf::expected<std::optional<asset_entry>> get_asset(const hash256& id) override;
  caf::error put_asset(const hash256& id, const asset_entry& a) override;
  caf::expected<supply_totals> get_totals() override;
  caf::error put_totals(const supply_totals& t) override;
  caf::expected<std::optional<uint64_t>> receipt_used(const hash256& receipt) override;
  caf::error mark_receipt(const hash256& receipt, uint64_t height) override;
  caf::expected<hash256> state_root() override;

  const std::map<node_id, account>& accounts() const {
    return accounts_;
  }

private:
  std::map<node_id, account> accounts_;
  std::map<hash256, escrow_entry> escrow_;
  std::map<hash256, asset_entry> assets_;
  std::map<hash256, uint64_t> receipts_;
  supply_totals totals_;
};

/// The state inside one LMDB transaction: whatever a block does is
/// committed or dropped with it.
class lmdb_store : public state_store {
public:
  explicit lmdb_store(store::txn& t) : txn_(t) {
  }
  caf::expected<account> get_account(const node_id& who) override;
  caf::error put_account(const node_id& who, const account& a) override;
  caf::expected<std::optional<escrow_entry>> get_escrow(const hash256& job) override;
  caf::error put_escrow(const hash256& job, const escrow_entry& e) override;
  caf::error erase_escrow(const hash256& job) override;
  caf::expected<std::optional<asset_entry>> get_asset(const hash256& id) override;
  caf::error put_asset(const hash256& id, const asset_entry& a) override;
  caf::expected<supply_totals> get_totals() override;
  caf::error put_totals(const supply_totals& t) override;
  caf::expected<std::optional<uint64_t>> receipt_used(const hash256& receipt) override;
  caf::error mark_receipt(const hash256& receipt, uint64_t height) override;
  caf::expected<hash256> state_root() override;

private:
  store::txn& txn_;
};

/// Chain parameters fixed at genesis.
struct chain_params {
  /// Keys allowed to mint PoV rewards and slash stakes (the rater's).
  std::set<node_id> authorities;
  /// A job's PoV reward: at most this percent of its escrowed amount, once.
  uint32_t reward_percent = 30;
  /// What a failed verification costs: this percent of the target's stake.
  uint32_t slash_percent = 50;
  /// The chain's id (chain.hpp chain_id): every transaction names it.
  hash256 chain_id{};
};

/// Every way a transaction can be refused; the name is in the error text.
enum class rule : uint8_t {
  malformed,             ///< a field of the wrong size or a missing body
  bad_signature,         ///< the signature is not the author's
  replayed_nonce,        ///< nonce <= the author's last nonce
  skipped_nonce,         ///< nonce > the author's last nonce + 1
  zero_amount,           ///< a transfer, lock or stake of nothing
  overdraft,             ///< more than the author's balance
  amount_overflow,       ///< a sum that does not fit in 64 bits
  escrow_exists,         ///< a second lock for the same job
  unknown_escrow,        ///< settling a job that has no escrow
  not_escrow_payer,      ///< settling someone else's escrow
  settle_exceeds_escrow, ///< payouts above the escrowed amount
  not_authority,         ///< mint or slash by a key that is not an authority
  asset_exists,          ///< registering an asset id twice
  unknown_asset,         ///< transferring an asset that does not exist
  not_asset_owner,       ///< transferring an asset you do not own
  slash_exceeds_stake,   ///< slashing more than the target's stake
  escrow_settled,        ///< settling a job that was already settled
  already_rewarded,      ///< a second mint for the same job
  reward_exceeds_rule,   ///< a mint above reward_percent of the job's escrow
  already_slashed,       ///< a second slash of the same target for the same job
  slash_not_by_rule,     ///< a slash that names its own amount
  wrong_chain,           ///< a transaction signed for another chain
  terms_exceed_escrow,   ///< escrow terms that pay more than the lock (or pay nothing)
  settle_exceeds_terms,  ///< an agent's settle above maxPrice x units or an asset's price
  escrow_expired,        ///< an agent settling after the terms' deadline
  refund_only,           ///< a payer paying others from an agent's escrow after the deadline
  escrow_has_agent,      ///< a payer settling an agent's escrow before the deadline
  bad_evidence,          ///< a DoubleVote whose votes do not conflict or are not signed
  already_punished,      ///< a second DoubleVote for the same voter and height
  not_escrow_agent,      ///< registering for a job's payer without being its agent (or twice)
};

const char* to_string(rule r);

/// The bytes an author signs for `tx`: "aicon-tx-v2" ‖ canonical(tx)
/// (tx.chain included, so a signature counts on one chain only).
std::vector<uint8_t> signing_bytes(schema::Transaction::Reader tx);

/// Builds and signs a transaction for the chain `chain`: `fill` sets the body.
template <class F>
envelope make_signed_transaction(const identity& author, const hash256& chain, uint64_t nonce,
                                 F&& fill) {
  // Build the unsigned transaction first to get its canonical bytes.
  capnp::MallocMessageBuilder body;
  auto tx = body.initRoot<schema::Transaction>();
  tx.setAuthor(kj::arrayPtr(author.id().bytes.data(), 32));
  tx.setNonce(nonce);
  tx.setChain(kj::arrayPtr(chain.data(), chain.size()));
  fill(tx.initBody());
  auto sig = author.sign(signing_bytes(tx.asReader()));
  return make_envelope<schema::SignedTransaction>([&](schema::SignedTransaction::Builder b) {
    b.setTx(tx.asReader());
    b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  });
}

/// Checks every rule for `stx` against the state and, only if all pass,
/// applies it. A refused transaction changes nothing; the error is
/// errc::bad_signature, errc::forbidden or errc::invalid_argument with text
/// "rule <name>: <what>".
/// `signature_checked`: the caller already verified the signature (block
/// application verifies a whole block's signatures on all cores first).
/// `time_ms`: the block's time (deadlines of escrow terms are judged by
/// it); 0 for the wall clock (checking a transaction for the pool).
caf::error apply_transaction(state_store& st, const chain_params& params,
                             schema::SignedTransaction::Reader stx,
                             bool signature_checked = false, uint64_t time_ms = 0);

/// Only the signature rule of `stx` (malformed fields or bad_signature).
caf::error check_signature(schema::SignedTransaction::Reader stx);

/// Credits genesis balances (minting them) and stakes.
struct genesis_entry {
  node_id wallet;
  uint64_t balance = 0;
  uint64_t stake = 0;
};
caf::error apply_genesis(state_store& st, const std::vector<genesis_entry>& entries);

/// Error helpers: the rule a refusal broke (nullopt for other errors).
std::optional<rule> rule_of(const caf::error& err);

} // namespace aicon::ledger
