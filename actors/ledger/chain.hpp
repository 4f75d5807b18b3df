// The chain on disk: genesis, block validation and append in one LMDB write
// transaction, committee selection, and a full re-verification from genesis
// (`aicon chain verify`).
#pragma once

#include <map>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>
#include <vector>

#include "actors/block_generator/difficulty.hpp"
#include "actors/ledger/state.hpp"

namespace aicon::ledger {

struct committee_member {
  node_id id;
  uint64_t weight = 1; ///< rating weight (until the rater exists: configured)
};

struct genesis_config {
  uint64_t time_ms = 0;                        ///< timestamp of block 0
  std::vector<genesis_entry> allocations;      ///< initial balances and stakes
  std::vector<committee_member> candidates;    ///< nodes that may generate and vote
  std::set<node_id> authorities;               ///< may mint and slash (the rater)
  uint32_t reward_percent = 30;                ///< a job's PoV reward: <= this % of its escrow
  uint32_t slash_percent = 50;                 ///< a failed verification: this % of the stake
  uint32_t committee_size = 4;                 ///< drawn per height from the candidates
  uint64_t initial_difficulty = 1000;          ///< work units for block 1
  pov::difficulty_params difficulty;           ///< target interval, window, clamp
};

/// The chain's identity: BLAKE2b-256 of "aicon-chain-v1" ‖ to_toml(g), so
/// two chains that differ in any genesis parameter or rule differ in id.
hash256 chain_id(const genesis_config& g);

/// The rules a genesis fixes for every transaction.
chain_params params_of(const genesis_config& g);

/// Parses genesis TOML; errors name the key and line.
caf::expected<genesis_config> parse_genesis(std::string_view text, std::string_view source);
caf::expected<genesis_config> load_genesis(const std::filesystem::path& path);

/// The TOML text parse_genesis reads back to the same config.
std::string to_toml(const genesis_config& g);

/// BLAKE2b-256 of "aicon-header-v1" ‖ canonical(header).
hash256 header_hash(schema::BlockHeader::Reader header);

/// Merkle root (BLAKE2b-256, odd nodes promoted) of the transactions'
/// canonical bytes; 32 zero bytes for an empty list.
hash256 tx_root(capnp::List<schema::SignedTransaction>::Reader txs);

std::vector<uint8_t> block_signing_bytes(const hash256& block_hash);
/// "aicon-vote-v2" ‖ height ‖ round ‖ kind ‖ block hash (zeros: nil).
std::vector<uint8_t> vote_signing_bytes(uint64_t height, uint32_t round, schema::VoteKind kind,
                                        const hash256& block_hash);
/// "aicon-proposal-v1" ‖ round ‖ pol round ‖ block hash.
std::vector<uint8_t> proposal_signing_bytes(uint32_t round, int32_t pol_round,
                                            const hash256& block_hash);

/// `voter`'s signed vote (an envelope of schema::Vote).
envelope sign_vote(const identity& voter, uint64_t height, uint32_t round, schema::VoteKind kind,
                   const hash256& block_hash);
/// The vote is well formed (32-byte voter and hash) and signed by its voter.
bool vote_verifies(schema::Vote::Reader v);

/// A proposal of `block` (without votes) for `round`, signed by `proposer`
/// (the block's generator), with the proof of lock `pol` for `pol_round`.
envelope make_proposal(const envelope& block, uint32_t round, int32_t pol_round,
                       const std::vector<envelope>& pol, const identity& proposer);

/// A DoubleVote transaction of `reporter` with votes `a` and `b`.
envelope make_double_vote(const identity& reporter, const hash256& chain, uint64_t nonce,
                          const envelope& a, const envelope& b);

/// The committee for the block after `prev_hash`: a weighted draw without
/// replacement, seeded by the previous block hash (nobody can choose it);
/// element 0 generates, the next ones take over in order if it is silent.
std::vector<node_id> select_committee(const hash256& prev_hash,
                                      const std::vector<committee_member>& candidates,
                                      uint32_t size);

/// Votes needed for finality: ceil(2/3 of the committee).
uint32_t quorum(uint32_t committee_size);

struct tip_info {
  uint64_t height = 0;
  hash256 hash{};
  hash256 state_root{};
  uint64_t difficulty = 0; ///< of the tip block
  uint64_t time_ms = 0;
};

/// What a generator wants in its next block: the work receipts that earn
/// it (all of one training session; the header's session, job, model and
/// work units come from them) and the transactions to include.
struct block_draft {
  std::vector<envelope> receipts;
  std::vector<envelope> transactions;
  uint64_t time_ms = 0;
};

/// A copy of `block` with `change` applied to the builder (which starts as
/// a full copy: header, transactions, receipts, signature, votes).
envelope rebuild_block(const envelope& block,
                       const std::function<void(schema::Block::Builder)>& change);

class chain {
public:
  /// Opens DATA_DIR/store and initializes block 0 from `genesis` when the
  /// store is empty; refuses a store made from another genesis.
  static caf::expected<std::unique_ptr<chain>> open(const std::filesystem::path& data_dir,
                                                    const genesis_config& genesis,
                                                    const store::options& opts = {});

  caf::expected<tip_info> tip();

  /// Difficulty block `height` must meet (retargeted every window).
  caf::expected<uint64_t> difficulty_for(uint64_t height);

  /// Validates `block` against the tip and appends it, state and all, in
  /// one write transaction; a refused block changes nothing. Errors name the
  /// rule (wrong height, unknown generator, short quorum, bad tx i, ...).
  caf::error append(const envelope& block);

  /// A generator's proposal: applies the draft's transactions that pass (the
  /// refused ones are returned in `refused`) to a throwaway transaction,
  /// fills the header and signs it. Votes are added by `add_vote`.
  caf::expected<envelope> propose(const identity& generator, const block_draft& draft,
                                  std::vector<std::pair<size_t, caf::error>>* refused = nullptr);

  /// `block` with one more committee precommit (round 0) by `voter`.
  static envelope add_vote(const envelope& block, const identity& voter);
  /// `voter`'s signed precommit for `block` in `round`.
  static envelope make_vote(const envelope& block, const identity& voter, uint32_t round = 0);
  /// `block` with the Vote envelopes `votes` appended (malformed ones skipped;
  /// append checks every vote anyway).
  static envelope with_votes(const envelope& block, const std::vector<envelope>& votes);

  /// What a validator checks before it votes: every rule of `append` except
  /// the quorum, the state transition on a throwaway transaction. Changes
  /// nothing.
  caf::error check_proposal(const envelope& block);

  /// The height of the block that used this work receipt, if any.
  caf::expected<std::optional<uint64_t>> receipt_used(const hash256& receipt);

  caf::expected<envelope> block_at(uint64_t height);
  caf::expected<account> account_of(const node_id& who);
  /// Every rule for `stx` against the committed state, as if it were the
  /// next transaction; nothing is written. Takes LMDB's write lock briefly:
  /// call from a detached actor.
  caf::error check_transaction(const envelope& stx);
  caf::expected<std::optional<asset_entry>> asset(const hash256& id);

  const hash256& chain_id() const {
    return chain_id_;
  }
  const genesis_config& genesis() const {
    return genesis_;
  }
  store::environment& env() {
    return *env_;
  }
  /// The host's environment, for the roles that share it (data node).
  const std::shared_ptr<store::environment>& shared_env() const {
    return env_;
  }

  /// The escrow of `job`, if any.
  caf::expected<std::optional<escrow_entry>> escrow_of(const hash256& job);

private:
  chain() = default;
  caf::error check_header(store::txn& t, schema::Block::Reader block, const tip_info& tip,
                          hash256& hash_out);
  caf::error append_checked(const envelope& block);

  genesis_config genesis_;
  hash256 chain_id_{};
  chain_params params_;
  std::shared_ptr<store::environment> env_;
};

struct verify_report {
  uint64_t blocks = 0;
  uint64_t transactions = 0;
  hash256 state_root{};
};

/// Re-checks every stored block from genesis in memory (headers, signatures,
/// votes, every state transition, state roots) and compares with the store.
caf::expected<verify_report> verify_chain(const std::filesystem::path& data_dir,
                                          const genesis_config& genesis);

/// Hex of a hash, for messages.
std::string hex(const hash256& h);

} // namespace aicon::ledger
