#include "actors/block_generator/block_generator.hpp"

#include <chrono>
#include <map>
#include <optional>

#include <cstring>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/block_generator/mempool.hpp"
#include "actors/ledger/chain.hpp"
#include "actors/ledger/ledger.hpp"
#include "actors/ledger/work.hpp"
#include "runtime/log.hpp"
#include "runtime/role.hpp"

namespace aicon {

namespace {

using clock_type = std::chrono::steady_clock;
using ledger::hash256;

uint64_t wall_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
}

envelope make_ack(const hash256& hash, size_t pool) {
  return make_envelope<schema::SubmitAck>([&](schema::SubmitAck::Builder b) {
    b.setHash(kj::arrayPtr(hash.data(), 32));
    b.setPoolSize(static_cast<uint32_t>(pool));
  });
}

/// The block being built on one tip.
struct round_state {
  uint64_t height = UINT64_MAX; ///< of the tip this round builds on
  hash256 tip_hash{};
  clock_type::time_point started;
  std::vector<node_id> committee;
  std::optional<envelope> proposal;
  hash256 proposal_hash{};
  std::map<node_id, envelope> votes;
  clock_type::time_point asked; ///< last time the missing votes were requested
  bool done = false;            ///< appended (or given up); wait for the next tip
};

/// What this host promised at a height: written to LMDB (vote_locks)
/// before the vote leaves the host, so a restart cannot forget it.
struct vote_lock {
  hash256 hash{};
  uint64_t at_ms = 0; ///< wall clock
};

/// A receipt in the pool with what picking work needs, decoded once on entry.
struct pending_receipt {
  envelope env;
  hash256 session{};
  uint64_t units = 0;
};

struct generator_state {
  role_context ctx;
  std::shared_ptr<ledger::chain> chain;
  pov::mempool pool;
  std::map<hash256, pending_receipt> receipts; ///< pending work, by receipt hash
  std::vector<hash256> receipt_order;     ///< arrival order of `receipts`
  round_state round;
  std::map<uint64_t, vote_lock> locks;    ///< height -> the block this host voted for
  /// Votes this host collected, by height and voter, until the height is
  /// final: a final block carrying another vote of the same voter at that
  /// height is evidence of a double vote (DoubleVote).
  std::map<uint64_t, std::map<node_id, envelope>> seen_votes;
  uint64_t evidence_nonce = 0; ///< the last nonce this host used for evidence
  std::unique_ptr<message_table> table;
  static inline const char* name = "aicon.block_generator";

  uint64_t committed_nonce(const node_id& who) {
    auto a = chain->account_of(who);
    return a ? a->nonce : 0;
  }

  pov::mempool::nonce_lookup nonces() {
    return [this](const node_id& who) { return committed_nonce(who); };
  }

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds{ctx.lim.request_timeout_ms};
  }

  /// The height's vote lock allows voting for `hash`.
  bool may_vote_for(uint64_t height, const hash256& hash, uint64_t now_ms) const {
    auto l = locks.find(height);
    return l == locks.end() || l->second.hash == hash
           || now_ms >= l->second.at_ms + ctx.lim.vote_lock_ms;
  }

  static std::array<uint8_t, 8> height_key(uint64_t height) {
    std::array<uint8_t, 8> k{};
    for (int i = 0; i < 8; ++i)
      k[i] = static_cast<uint8_t>(height >> (56 - 8 * i));
    return k;
  }

  /// Locks `height` to `hash`, durably (fsync'd) before the caller lets
  /// the vote out. An error: no vote.
  caf::error lock(uint64_t height, const hash256& hash, uint64_t now_ms) {
    auto& l = locks[height];
    if (l.hash == hash && l.at_ms != 0)
      return {};
    auto t = store::txn::begin(chain->env(), true);
    if (!t)
      return t.error();
    std::vector<uint8_t> v(hash.begin(), hash.end());
    for (int i = 0; i < 8; ++i)
      v.push_back(static_cast<uint8_t>(now_ms >> (56 - 8 * i)));
    auto k = height_key(height);
    if (auto err = t->put(store::db::vote_locks, {k.data(), 8}, v))
      return err;
    if (auto err = t->commit())
      return err;
    l = vote_lock{hash, now_ms};
    return {};
  }

  /// The locks of heights above the tip, as the store has them (a
  /// restarted host keeps its promises); older ones are deleted.
  void load_locks(uint64_t tip_height) {
    auto t = store::txn::begin(chain->env(), true);
    if (!t)
      return;
    std::vector<std::array<uint8_t, 8>> stale;
    (void) t->for_each(store::db::vote_locks, [&](std::span<const uint8_t> k,
                                                  std::span<const uint8_t> v) {
      if (k.size() != 8 || v.size() != 40)
        return true;
      uint64_t h = 0, at = 0;
      for (int i = 0; i < 8; ++i) {
        h = (h << 8) | k[i];
        at = (at << 8) | v[32 + i];
      }
      if (h <= tip_height) {
        stale.push_back(height_key(h));
        return true;
      }
      vote_lock l;
      std::memcpy(l.hash.data(), v.data(), 32);
      l.at_ms = at;
      locks[h] = l;
      return true;
    });
    for (auto& k : stale)
      (void) t->del(store::db::vote_locks, {k.data(), 8});
    (void) t->commit();
    if (!locks.empty())
      log_info("block_generator: {} vote lock(s) restored from the store", locks.size());
  }

  /// Drops receipts that a block has used since they arrived.
  void prune_receipts() {
    std::vector<hash256> keep;
    for (auto& h : receipt_order) {
      auto used = chain->receipt_used(h);
      if (used && *used)
        receipts.erase(h);
      else
        keep.push_back(h);
    }
    receipt_order = std::move(keep);
  }

  /// Receipts of the earliest session whose pending work reaches
  /// `difficulty`, in arrival order, just enough of them.
  std::vector<envelope> pick_work(uint64_t difficulty) const {
    std::map<hash256, std::pair<uint64_t, std::vector<envelope>>> by_session;
    std::vector<hash256> session_order;
    for (auto& h : receipt_order) {
      auto& r = receipts.at(h);
      auto [it, fresh] = by_session.try_emplace(r.session);
      if (fresh)
        session_order.push_back(r.session);
      auto& [sum, picked] = it->second;
      if (sum >= difficulty)
        continue;
      sum = r.units > UINT64_MAX - sum ? UINT64_MAX : sum + r.units; // saturating
      picked.push_back(r.env);
    }
    for (auto& key : session_order) {
      auto& [sum, picked] = by_session.at(key);
      if (sum >= difficulty)
        return picked;
    }
    return {};
  }
};

using generator_actor = caf::stateful_actor<generator_state>;

/// Passes a newly admitted transaction or receipt on to the peers'
/// generators; they pass it on only if it is new to them, so it stops.
void gossip(generator_actor* self, const envelope& env) {
  auto& st = self->state;
  self->request(st.ctx.directory, st.timeout(), peers_atom::value, std::string{"block_generator"})
    .then(
      [self, env](std::vector<std::string>& peers) {
        for (auto& p : peers)
          ask_role(self, self->state.ctx.directory, "block_generator@" + p, env,
                   self->state.timeout(), [](caf::expected<envelope>) {});
      },
      [](caf::error&) {});
}

/// Sends the final block to every peer ledger (a ledger that misses it
/// catches up by itself).
void broadcast(generator_actor* self, const envelope& block) {
  auto& st = self->state;
  self->request(st.ctx.directory, st.timeout(), peers_atom::value, std::string{"ledger"})
    .then(
      [self, block](std::vector<std::string>& peers) {
        for (auto& p : peers)
          ask_role(self, self->state.ctx.directory, "ledger@" + p, block, self->state.timeout(),
                   [](caf::expected<envelope>) {});
      },
      [](caf::error&) {});
}

/// Appends the proposal with its votes and announces it.
void finalize(generator_actor* self) {
  auto& st = self->state;
  auto& r = st.round;
  if (r.done || !r.proposal)
    return;
  r.done = true;
  std::vector<envelope> votes;
  for (auto& [_, v] : r.votes)
    votes.push_back(v);
  auto final_block = ledger::chain::with_votes(*r.proposal, votes);
  if (auto err = st.chain->append(final_block)) {
    // Another path (a peer's block, a catch-up) got there first, or the
    // state moved: the next tip starts a new round.
    log_warning("block_generator: block {} not appended: {}", r.height + 1, describe(err));
    return;
  }
  opened<schema::Block> b{final_block};
  log_info("block {} final: {} txs, {} work units from {} receipts, {}/{} votes, hash {}",
           r.height + 1, b->getTransactions().size(), b->getHeader().getWorkUnits(),
           b->getReceipts().size(), r.votes.size(), r.committee.size(),
           ledger::hex(r.proposal_hash).substr(0, 16));
  broadcast(self, final_block);
  st.pool.prune(st.nonces());
  st.prune_receipts();
}

/// Asks the committee members that have not voted yet.
void request_votes(generator_actor* self) {
  auto& st = self->state;
  auto& r = st.round;
  r.asked = clock_type::now();
  for (auto& member : r.committee) {
    if (r.votes.count(member))
      continue;
    ask_role(self, st.ctx.directory, "block_generator@" + member.hex(), *r.proposal, st.timeout(),
             [self, member, height = r.height, hash = r.proposal_hash](caf::expected<envelope> v) {
               auto& st = self->state;
               auto& r = st.round;
               if (r.height != height || r.proposal_hash != hash || r.done)
                 return; // an old round's answer
               if (!v) {
                 log_debug("block_generator: no vote from {}: {}", member.short_hex(),
                           describe(v.error()));
                 return;
               }
               opened<schema::Vote> vote{*v};
               if (!vote)
                 return;
               auto sig = vote->getSignature();
               if (vote->getHeight() != height + 1 || vote->getVoter().size() != 32
                   || std::memcmp(vote->getVoter().begin(), member.bytes.data(), 32) != 0
                   || vote->getBlockHash().size() != 32
                   || std::memcmp(vote->getBlockHash().begin(), hash.data(), 32) != 0
                   || !verify_signature(member, ledger::vote_signing_bytes(height + 1, hash),
                                        {sig.begin(), sig.size()})) {
                 log_warning("block_generator: {} sent a vote that does not verify",
                             member.short_hex());
                 return;
               }
               r.votes.emplace(member, *v);
               st.seen_votes[height + 1][member] = *v;
               if (r.votes.size() >= ledger::quorum(static_cast<uint32_t>(r.committee.size())))
                 finalize(self);
             });
  }
}

/// Final blocks up to `tip_height` against the votes this host collected
/// at their heights: a voter that signed another block there double voted;
/// the evidence goes to the pool (and the peers) as this host's DoubleVote.
void check_double_votes(generator_actor* self, uint64_t tip_height) {
  auto& st = self->state;
  while (!st.seen_votes.empty() && st.seen_votes.begin()->first <= tip_height) {
    auto node = st.seen_votes.extract(st.seen_votes.begin());
    auto height = node.key();
    auto blk = st.chain->block_at(height);
    if (!blk)
      continue;
    for (auto& [mine, theirs] : ledger::double_votes(node.mapped(), *blk)) {
      opened<schema::Vote> v{mine};
      auto voter = node_id::from_bytes({v->getVoter().begin(), v->getVoter().size()});
      auto committed = st.committed_nonce(st.ctx.self->id());
      st.evidence_nonce = std::max(st.evidence_nonce, committed) + 1;
      auto tx = ledger::make_double_vote(*st.ctx.self, st.chain->chain_id(), st.evidence_nonce,
                                         mine, theirs);
      log_warning("block_generator: {} voted for two blocks at height {}: evidence submitted",
                  voter ? voter->short_hex() : std::string{"?"}, height);
      auto balance = [&st](const node_id& who) -> uint64_t {
        auto a = st.chain->account_of(who);
        return a ? a->balance : 0;
      };
      if (auto err = st.pool.add(tx, st.nonces(), balance))
        log_warning("block_generator: the evidence was not pooled: {}", describe(err));
      else
        gossip(self, tx);
    }
  }
}

void tick(generator_actor* self) {
  auto& st = self->state;
  auto& r = st.round;
  auto tip = st.chain->tip();
  if (!tip)
    return;
  auto now = clock_type::now();
  if (tip->height != r.height || tip->hash != r.tip_hash) {
    r = round_state{};
    r.height = tip->height;
    r.tip_hash = tip->hash;
    r.started = now;
    auto& g = st.chain->genesis();
    r.committee = ledger::select_committee(tip->hash, g.candidates, g.committee_size);
    st.pool.prune(st.nonces());
    st.prune_receipts();
    for (auto l = st.locks.begin(); l != st.locks.end() && l->first <= tip->height;)
      l = st.locks.erase(l);
    check_double_votes(self, tip->height);
  }
  if (r.done)
    return;
  auto takeover = std::chrono::milliseconds{st.ctx.lim.block_takeover_ms};
  if (r.proposal) {
    if (now - r.asked >= takeover)
      request_votes(self);
    return;
  }
  auto me = std::find(r.committee.begin(), r.committee.end(), st.ctx.self->id());
  if (me == r.committee.end())
    return;
  auto rank = static_cast<int64_t>(me - r.committee.begin());
  if (now - r.started < rank * takeover)
    return;
  auto difficulty = st.chain->difficulty_for(tip->height + 1);
  if (!difficulty)
    return;
  ledger::block_draft draft;
  draft.receipts = st.pick_work(*difficulty);
  draft.time_ms = wall_ms();
  if (draft.receipts.empty()) {
    // Not enough verified work: an idle block, if transactions wait and
    // the target interval has passed since the tip (the rule validators
    // check), so transfers are final on a chain where no one trains.
    auto interval = st.chain->genesis().difficulty.target_interval_ms;
    if (st.pool.size() == 0 || draft.time_ms < tip->time_ms + interval)
      return;
  }
  draft.transactions = st.pool.take(st.ctx.lim.block_txs_max, st.nonces());
  if (draft.receipts.empty() && draft.transactions.empty())
    return; // the waiting transactions are not their authors' next yet
  std::vector<std::pair<size_t, caf::error>> refused;
  auto blk = st.chain->propose(*st.ctx.self, draft, &refused);
  for (auto& [i, err] : refused) {
    log_debug("block_generator: left out a transaction: {}", describe(err));
    st.pool.remove(draft.transactions[i]);
  }
  if (!blk) {
    log_warning("block_generator: cannot propose block {}: {}", tip->height + 1,
                describe(blk.error()));
    for (auto& env : draft.receipts) // do not try the same work again
      if (opened<schema::SignedWorkReceipt> o{env}) {
        auto h = ledger::receipt_hash(o.root());
        st.receipts.erase(h);
        std::erase(st.receipt_order, h);
      }
    return;
  }
  auto hash = ledger::header_hash(opened<schema::Block>{*blk}->getHeader());
  if (!st.may_vote_for(tip->height + 1, hash, wall_ms()))
    return; // this host already voted for another block at this height
  if (auto err = st.lock(tip->height + 1, hash, wall_ms())) {
    log_warning("block_generator: vote lock not written, no proposal: {}", describe(err));
    return;
  }
  r.proposal = *blk;
  r.proposal_hash = hash;
  r.votes.emplace(st.ctx.self->id(), ledger::chain::make_vote(*blk, *st.ctx.self));
  log_debug("block_generator: proposing block {} (rank {}, {} txs)", tip->height + 1, rank,
            draft.transactions.size());
  if (r.votes.size() >= ledger::quorum(static_cast<uint32_t>(r.committee.size())))
    finalize(self);
  else
    request_votes(self);
}

caf::behavior block_generator(generator_actor* self, role_context ctx,
                              std::shared_ptr<ledger::chain> chain) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.chain = std::move(chain);
  st.table = std::make_unique<message_table>("block_generator", block_generator_access);
  if (auto tip = st.chain->tip())
    st.load_locks(tip->height);
  st.table->on<schema::SignedTransaction>([self](const envelope& env,
                                                 schema::SignedTransaction::Reader stx)
                                            -> caf::result<envelope> {
    auto& st = self->state;
    auto balance = [&st](const node_id& who) -> uint64_t {
      auto a = st.chain->account_of(who);
      return a ? a->balance : 0;
    };
    // Named at once, not left pending: a transaction for another chain, and
    // one that is its author's next but breaks a rule now (a refused Settle
    // once sat in the pool and blocked its author's next nonce).
    auto tx = stx.getTx();
    if (tx.getChain().size() != 32
        || std::memcmp(tx.getChain().begin(), st.chain->chain_id().data(), 32) != 0)
      return make_error(errc::forbidden,
                        "rule wrong_chain: the transaction is signed for another chain (or "
                        "names none); this is chain "
                          + to_hex({st.chain->chain_id().data(), 8}));
    if (tx.getAuthor().size() == 32) {
      auto author = node_id::from_bytes({tx.getAuthor().begin(), 32});
      if (author && tx.getNonce() == st.nonces()(*author) + 1)
        if (auto err = st.chain->check_transaction(env))
          return err;
    }
    if (auto err = st.pool.add(env, st.nonces(), balance))
      return err;
    gossip(self, env);
    return make_ack(pov::tx_hash(stx), st.pool.size());
  });
  st.table->on<schema::SignedWorkReceipt>([self](const envelope& env,
                                                 schema::SignedWorkReceipt::Reader r)
                                            -> caf::result<envelope> {
    auto& st = self->state;
    if (auto err = ledger::check_receipt(r, st.chain->genesis().authorities))
      return err;
    auto hash = ledger::receipt_hash(r);
    auto used = st.chain->receipt_used(hash);
    if (!used)
      return used.error();
    if (*used)
      return make_error(errc::invalid_argument,
                        fmt::format("receipt: already earned block {}", **used));
    if (st.receipts.count(hash))
      return make_error(errc::invalid_argument, "receipt: duplicate, already pending");
    if (st.receipts.size() >= st.ctx.lim.receipt_pool_max)
      return make_error(errc::busy,
                        fmt::format("receipt pool full ({} receipts); retry later",
                                    st.receipts.size()));
    pending_receipt p{env, {}, r.getReceipt().getUnits()};
    std::memcpy(p.session.data(), r.getReceipt().getSessionId().begin(), 32); // size checked
    st.receipts.emplace(hash, std::move(p));
    st.receipt_order.push_back(hash);
    gossip(self, env);
    return make_ack(hash, st.receipts.size());
  });
  // A proposal from this height's generator: check everything but the
  // quorum, then vote at most once per height.
  st.table->on<schema::Block>([self](const envelope& env, schema::Block::Reader b)
                                -> caf::result<envelope> {
    auto& st = self->state;
    auto h = b.getHeader();
    if (h.getTimeMs() > wall_ms() + st.ctx.lim.clock_skew_ms_max)
      return make_error(errc::invalid_argument,
                        fmt::format("block refused: time {} is more than {} ms ahead of this "
                                    "host's clock",
                                    h.getTimeMs(), st.ctx.lim.clock_skew_ms_max));
    if (auto err = st.chain->check_proposal(env))
      return err;
    auto tip = st.chain->tip();
    if (!tip)
      return tip.error();
    auto& g = st.chain->genesis();
    auto committee = ledger::select_committee(tip->hash, g.candidates, g.committee_size);
    if (std::find(committee.begin(), committee.end(), st.ctx.self->id()) == committee.end())
      return make_error(errc::forbidden,
                        fmt::format("this host is not in the committee of block {}",
                                    h.getHeight()));
    auto hash = ledger::header_hash(h);
    if (!st.may_vote_for(h.getHeight(), hash, wall_ms()))
      return make_error(errc::invalid_argument,
                        fmt::format("already voted for block {} at height {}",
                                    ledger::hex(st.locks[h.getHeight()].hash).substr(0, 16),
                                    h.getHeight()));
    if (auto err = st.lock(h.getHeight(), hash, wall_ms()))
      return err; // no durable promise, no vote
    return ledger::chain::make_vote(env, *st.ctx.self);
  });
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  self->send(self, tick_atom::value);
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
    [self](tick_atom) {
      if (self->state.ctx.stopping->load())
        return;
      tick(self);
      self->delayed_send(self, std::chrono::milliseconds{self->state.ctx.lim.block_tick_ms},
                         tick_atom::value);
    },
  };
}

} // namespace

caf::expected<caf::actor> spawn_block_generator(caf::actor_system& sys, const role_context& ctx) {
  auto chain = shared_chain(ctx);
  if (!chain)
    return chain.error();
  auto& g = (*chain)->genesis();
  bool candidate = std::any_of(g.candidates.begin(), g.candidates.end(),
                               [&](auto& c) { return c.id == ctx.self->id(); });
  if (!candidate)
    log_warning("block_generator: this host ({}) is no [[candidate]] of the genesis; it relays "
                "transactions and receipts but never generates or votes",
                ctx.self->id().short_hex());
  return sys.spawn<caf::detached>(block_generator, ctx, *chain);
}

} // namespace aicon
