// The block generator's mempool: signed transactions waiting for a block.
// Pure logic (no actor), so it is tested alone. Entry checks: well-formed,
// signature, not a duplicate, nonce above the author's committed nonce,
// bounded in total and per author. Selection hands out each author's
// transactions in nonce order without gaps, authors in arrival order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <vector>

#include <caf/error.hpp>

#include "actors/ledger/state.hpp"
#include "runtime/envelope.hpp"

namespace aicon::pov {

struct mempool_limits {
  size_t txs_max = 100'000;     ///< transactions held at once (~30 MB of small transfers)
  size_t per_author_max = 1'000; ///< pending per author: one key cannot fill the pool
};

class mempool {
public:
  /// The author's last committed nonce, from the ledger.
  using nonce_lookup = std::function<uint64_t(const node_id&)>;

  explicit mempool(mempool_limits lim = {}) : lim_(lim) {
  }

  /// The author's committed spendable balance, from the ledger.
  using balance_lookup = std::function<uint64_t(const node_id&)>;

  /// Admits `stx` or says why not (the rule's name is in the text):
  /// malformed, bad_signature, replayed_nonce, duplicate, pool full, and,
  /// when `balance` is given, overdraft: what the author's pending
  /// transactions and this one draw (transfers, escrow locks, stakes) must
  /// not exceed the committed balance.
  caf::error add(const envelope& stx, const nonce_lookup& committed,
                 const balance_lookup& balance = nullptr);

  /// Up to `n` transactions that can be applied in the returned order.
  std::vector<envelope> take(size_t n, const nonce_lookup& committed) const;

  /// Forgets transactions whose nonce is now committed.
  void prune(const nonce_lookup& committed);

  /// Forgets `stx` (e.g. a generator found it no longer applies).
  void remove(const envelope& stx);

  size_t size() const {
    return size_;
  }

private:
  mempool_limits lim_;
  /// author -> nonce -> transaction
  std::map<node_id, std::map<uint64_t, envelope>> by_author_;
  /// tx hashes held, for duplicate detection
  std::set<ledger::hash256> hashes_;
  std::map<node_id, uint64_t> arrival_; ///< author -> first arrival order
  uint64_t next_arrival_ = 0;
  size_t size_ = 0;
};

/// What `tx` draws from its author's balance (0 for settle, mint, slash,
/// asset moves).
uint64_t spend_of(schema::Transaction::Reader tx);

/// BLAKE2b-256 of a signed transaction's canonical bytes.
ledger::hash256 tx_hash(schema::SignedTransaction::Reader stx);

} // namespace aicon::pov
