#include "actors/block_generator/mempool.hpp"

#include <capnp/serialize.h>
#include <fmt/format.h>
#include <sodium.h>

#include "runtime/error.hpp"

namespace aicon::pov {

ledger::hash256 tx_hash(schema::SignedTransaction::Reader stx) {
  auto canonical = capnp::canonicalize(stx);
  auto bytes = canonical.asBytes();
  ledger::hash256 out;
  crypto_generichash(out.data(), out.size(), bytes.begin(), bytes.size(), nullptr, 0);
  return out;
}

uint64_t spend_of(schema::Transaction::Reader tx) {
  auto body = tx.getBody();
  switch (body.which()) {
    case schema::Transaction::Body::TRANSFER:
      return body.getTransfer().getAmount();
    case schema::Transaction::Body::ESCROW_LOCK:
      return body.getEscrowLock().getAmount();
    case schema::Transaction::Body::STAKE:
      return body.getStake().getAmount();
    default:
      return 0;
  }
}

caf::error mempool::add(const envelope& env, const nonce_lookup& committed,
                        const balance_lookup& balance) {
  opened<schema::SignedTransaction> stx{env};
  if (!stx)
    return stx.error();
  if (auto err = ledger::check_signature(stx.root()))
    return err;
  auto author = *node_id::from_bytes({stx->getTx().getAuthor().begin(), 32});
  auto nonce = stx->getTx().getNonce();
  auto last = committed(author);
  if (nonce <= last)
    return make_error(errc::invalid_argument,
                      fmt::format("rule replayed_nonce: nonce {} of {} is already committed "
                                  "(last {})",
                                  nonce, author.short_hex(), last));
  auto hash = tx_hash(stx.root());
  if (hashes_.count(hash))
    return make_error(errc::invalid_argument, "rule duplicate: this transaction is already pending");
  if (balance) {
    // Saturating sum: an overflowing total is an overdraft either way.
    uint64_t drawn = spend_of(stx->getTx());
    auto pending = by_author_.find(author);
    if (pending != by_author_.end())
      for (auto& [_, other] : pending->second) {
        auto s = spend_of(opened<schema::SignedTransaction>{other}->getTx());
        drawn = drawn + s < drawn ? UINT64_MAX : drawn + s;
      }
    auto have = balance(author);
    if (drawn > have)
      return make_error(errc::invalid_argument,
                        fmt::format("rule overdraft: {} has {} and its pending transactions "
                                    "with this one draw {}",
                                    author.short_hex(), have, drawn));
  }
  auto& mine = by_author_[author];
  if (mine.count(nonce))
    return make_error(errc::invalid_argument,
                      fmt::format("rule duplicate: {} already has a pending transaction with "
                                  "nonce {}",
                                  author.short_hex(), nonce));
  if (size_ >= lim_.txs_max || mine.size() >= lim_.per_author_max) {
    if (mine.empty())
      by_author_.erase(author);
    return make_error(errc::busy,
                      fmt::format("the mempool is full ({} of {} total, {} of {} for {}); "
                                  "retry later",
                                  size_, lim_.txs_max, mine.size(), lim_.per_author_max,
                                  author.short_hex()));
  }
  mine.emplace(nonce, env);
  hashes_.insert(hash);
  arrival_.emplace(author, next_arrival_++);
  ++size_;
  return caf::none;
}

std::vector<envelope> mempool::take(size_t n, const nonce_lookup& committed) const {
  // Authors in order of first arrival; each contributes its gap-free run.
  std::vector<std::pair<uint64_t, const node_id*>> order;
  for (auto& [author, txs] : by_author_)
    order.emplace_back(arrival_.at(author), &author);
  std::sort(order.begin(), order.end());
  std::vector<envelope> out;
  for (auto& [_, author] : order) {
    auto expected = committed(*author) + 1;
    for (auto& [nonce, env] : by_author_.at(*author)) {
      if (out.size() >= n)
        return out;
      if (nonce != expected)
        break; // a gap: later nonces must wait
      out.push_back(env);
      ++expected;
    }
  }
  return out;
}

void mempool::remove(const envelope& env) {
  opened<schema::SignedTransaction> stx{env};
  if (!stx)
    return;
  auto author = node_id::from_bytes({stx->getTx().getAuthor().begin(),
                                     stx->getTx().getAuthor().size()});
  if (!author)
    return;
  auto a = by_author_.find(*author);
  if (a == by_author_.end())
    return;
  auto t = a->second.find(stx->getTx().getNonce());
  if (t == a->second.end() || tx_hash(opened<schema::SignedTransaction>{t->second}.root())
                                != tx_hash(stx.root()))
    return;
  hashes_.erase(tx_hash(stx.root()));
  a->second.erase(t);
  --size_;
  if (a->second.empty()) {
    arrival_.erase(a->first);
    by_author_.erase(a);
  }
}

void mempool::prune(const nonce_lookup& committed) {
  for (auto a = by_author_.begin(); a != by_author_.end();) {
    auto last = committed(a->first);
    auto& txs = a->second;
    for (auto t = txs.begin(); t != txs.end() && t->first <= last;) {
      hashes_.erase(tx_hash(opened<schema::SignedTransaction>{t->second}.root()));
      t = txs.erase(t);
      --size_;
    }
    if (txs.empty()) {
      arrival_.erase(a->first);
      a = by_author_.erase(a);
    } else {
      ++a;
    }
  }
}

} // namespace aicon::pov
