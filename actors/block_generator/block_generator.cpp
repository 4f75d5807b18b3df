#include "actors/block_generator/block_generator.hpp"

#include <chrono>
#include <map>
#include <optional>
#include <set>

#include <cstring>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/block_generator/consensus.hpp"
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

std::shared_ptr<const std::vector<uint8_t>> bytes_of(const envelope& e) {
  auto b = e.bytes();
  return std::make_shared<const std::vector<uint8_t>>(b.begin(), b.end());
}

envelope block_of(const consensus::value& v) {
  return envelope_from_bytes(*v.bytes, capnp::typeId<schema::Block>());
}

consensus::value value_of(const envelope& block) {
  return {ledger::header_hash(opened<schema::Block>{block}->getHeader()), bytes_of(block)};
}

schema::VoteKind wire_kind(consensus::vote_kind k) {
  return k == consensus::vote_kind::prevote ? schema::VoteKind::PREVOTE : schema::VoteKind::PRECOMMIT;
}

/// A checked wire vote as the machine counts it (its envelope as proof).
consensus::vote vote_from(schema::Vote::Reader v, const envelope& env) {
  consensus::vote out;
  out.height = v.getHeight();
  out.round = v.getRound();
  out.kind = v.getKind() == schema::VoteKind::PREVOTE ? consensus::vote_kind::prevote
                                                      : consensus::vote_kind::precommit;
  std::memcpy(out.id.data(), v.getBlockHash().begin(), 32);
  std::memcpy(out.voter.bytes.data(), v.getVoter().begin(), 32);
  out.proof = bytes_of(env);
  return out;
}

/// A receipt in the pool with what picking work needs, decoded once on entry.
struct pending_receipt {
  envelope env;
  hash256 session{};
  uint64_t units = 0;
};

struct generator_state;

/// The machine's view of the chain store: what to propose, what is valid.
struct chain_app : consensus::app {
  generator_state* st = nullptr;
  std::optional<consensus::value> make_block(uint64_t height, uint32_t round) override;
  bool valid(uint64_t height, const consensus::value& v) override;
};

struct generator_state {
  role_context ctx;
  std::shared_ptr<ledger::chain> chain;
  pov::mempool pool;
  std::map<hash256, pending_receipt> receipts; ///< pending work, by receipt hash
  std::vector<hash256> receipt_order;     ///< arrival order of `receipts`
  chain_app app;
  std::unique_ptr<consensus::machine> m;  ///< the round logic; this actor only feeds it
  uint64_t machine_tip = UINT64_MAX;      ///< the tip height the machine builds on
  hash256 machine_tip_hash{};
  std::map<hash256, caf::error> checked;  ///< proposals checked at this height (by block hash)
  clock_type::time_point resent;          ///< when this member last sent its votes again
  std::set<std::pair<node_id, uint64_t>> reported; ///< double votes already turned into evidence
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

  consensus::params params() const {
    consensus::params p;
    p.propose_ms = ctx.lim.block_takeover_ms;
    p.vote_ms = ctx.lim.vote_wait_ms;
    p.round_delta_ms = ctx.lim.vote_wait_ms;
    return p;
  }

  /// Every rule of the chain for a proposal at the tip (cached per block:
  /// the handler and the machine ask about the same one).
  caf::error check(const envelope& block) {
    auto id = ledger::header_hash(opened<schema::Block>{block}->getHeader());
    if (auto it = checked.find(id); it != checked.end())
      return it->second;
    caf::error err;
    auto h = opened<schema::Block>{block}->getHeader();
    if (h.getTimeMs() > wall_ms() + ctx.lim.clock_skew_ms_max)
      err = make_error(errc::invalid_argument,
                       fmt::format("block refused: time {} is more than {} ms ahead of this "
                                   "host's clock",
                                   h.getTimeMs(), ctx.lim.clock_skew_ms_max));
    else
      err = chain->check_proposal(block);
    checked.emplace(id, err);
    return err;
  }

  static std::array<uint8_t, 8> height_key(uint64_t height) {
    std::array<uint8_t, 8> k{};
    for (int i = 0; i < 8; ++i)
      k[i] = static_cast<uint8_t>(height >> (56 - 8 * i));
    return k;
  }

  /// Writes what this member promised at its height, with fsync, before the
  /// caller lets the vote it protects out. An error: no vote.
  caf::error persist(const consensus::promise& p) {
    auto env = make_envelope<schema::ConsensusPromise>([&](schema::ConsensusPromise::Builder b) {
      b.setHeight(p.height);
      b.setRound(p.round);
      b.setStep(p.step);
      b.setLockedRound(p.locked_round);
      if (p.locked)
        b.setLocked(opened<schema::Block>{block_of(*p.locked)}.root());
      b.setValidRound(p.valid_round);
      if (p.valid)
        b.setValid(opened<schema::Block>{block_of(*p.valid)}.root());
      auto voted = b.initVoted(static_cast<unsigned>(p.signed_votes.size()));
      unsigned i = 0;
      for (auto& [key, id] : p.signed_votes) {
        auto v = voted[i++];
        v.setRound(key.first);
        v.setKind(wire_kind(static_cast<consensus::vote_kind>(key.second)));
        v.setBlockHash(kj::arrayPtr(id.data(), 32));
      }
    });
    auto t = store::txn::begin(chain->env(), true);
    if (!t)
      return t.error();
    auto k = height_key(p.height);
    if (auto err = t->put(store::db::vote_locks, {k.data(), 8}, env.bytes()))
      return err;
    return t->commit();
  }

  /// The promise stored for `height` (a restarted host keeps it); promises
  /// of heights at or below the tip are deleted.
  std::optional<consensus::promise> load_promise(uint64_t height) {
    auto t = store::txn::begin(chain->env(), true);
    if (!t)
      return std::nullopt;
    std::optional<consensus::promise> out;
    std::vector<std::array<uint8_t, 8>> stale;
    (void) t->for_each(store::db::vote_locks, [&](std::span<const uint8_t> k,
                                                  std::span<const uint8_t> v) {
      if (k.size() != 8)
        return true;
      uint64_t h = 0;
      for (int i = 0; i < 8; ++i)
        h = (h << 8) | k[i];
      if (h < height) {
        stale.push_back(height_key(h));
        return true;
      }
      if (h != height)
        return true;
      opened<schema::ConsensusPromise> p{envelope_from_bytes(v, capnp::typeId<schema::ConsensusPromise>())};
      if (!p) {
        log_warning("block_generator: the stored promise for height {} is unreadable: {}", h,
                    describe(p.error()));
        return true;
      }
      consensus::promise pr;
      pr.height = h;
      pr.round = p->getRound();
      pr.step = p->getStep();
      pr.locked_round = p->getLockedRound();
      pr.valid_round = p->getValidRound();
      if (pr.locked_round >= 0 && p->hasLocked())
        pr.locked = value_of(copy_envelope<schema::Block>(p->getLocked()));
      if (pr.valid_round >= 0 && p->hasValid())
        pr.valid = value_of(copy_envelope<schema::Block>(p->getValid()));
      for (auto v : p->getVoted()) {
        if (v.getBlockHash().size() != 32)
          continue;
        hash256 id;
        std::memcpy(id.data(), v.getBlockHash().begin(), 32);
        auto kind = v.getKind() == schema::VoteKind::PREVOTE ? consensus::vote_kind::prevote
                                                             : consensus::vote_kind::precommit;
        pr.signed_votes[{v.getRound(), static_cast<uint8_t>(kind)}] = id;
      }
      out = std::move(pr);
      return true;
    });
    for (auto& k : stale)
      (void) t->del(store::db::vote_locks, {k.data(), 8});
    (void) t->commit();
    return out;
  }

  /// The signed Vote envelope of `v`: its proof, or this host's own vote
  /// signed again (ed25519 is deterministic: the same bytes).
  std::optional<envelope> signed_vote(const consensus::vote& v) const {
    if (v.proof)
      return envelope_from_bytes(*v.proof, capnp::typeId<schema::Vote>());
    if (v.voter == ctx.self->id())
      return ledger::sign_vote(*ctx.self, v.height, v.round, wire_kind(v.kind), v.id);
    return std::nullopt;
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

  /// Something to propose: work reaching the difficulty, or transactions
  /// waiting with the target interval passed since the tip (idle block).
  bool has_work() {
    auto tip = chain->tip();
    if (!tip)
      return false;
    auto difficulty = chain->difficulty_for(tip->height + 1);
    if (difficulty && !pick_work(*difficulty).empty())
      return true;
    return pool.size() > 0
           && wall_ms() >= tip->time_ms + chain->genesis().difficulty.target_interval_ms;
  }
};

std::optional<consensus::value> chain_app::make_block(uint64_t height, uint32_t round) {
  auto& s = *st;
  auto tip = s.chain->tip();
  if (!tip || tip->height + 1 != height)
    return std::nullopt;
  auto difficulty = s.chain->difficulty_for(height);
  if (!difficulty)
    return std::nullopt;
  ledger::block_draft draft;
  draft.receipts = s.pick_work(*difficulty);
  draft.time_ms = std::max(wall_ms(), tip->time_ms + 1);
  if (draft.receipts.empty()) {
    // Not enough verified work: an idle block, if transactions wait and
    // the target interval has passed since the tip (the rule validators
    // check), so transfers are final on a chain where no one trains.
    auto interval = s.chain->genesis().difficulty.target_interval_ms;
    if (s.pool.size() == 0 || draft.time_ms < tip->time_ms + interval)
      return std::nullopt;
  }
  draft.transactions = s.pool.take(s.ctx.lim.block_txs_max, s.nonces());
  if (draft.receipts.empty() && draft.transactions.empty())
    return std::nullopt; // the waiting transactions are not their authors' next yet
  std::vector<std::pair<size_t, caf::error>> refused;
  auto blk = s.chain->propose(*s.ctx.self, draft, &refused);
  for (auto& [i, err] : refused) {
    log_debug("block_generator: left out a transaction: {}", describe(err));
    s.pool.remove(draft.transactions[i]);
  }
  if (!blk) {
    log_warning("block_generator: cannot propose block {}: {}", height, describe(blk.error()));
    for (auto& env : draft.receipts) // do not try the same work again
      if (opened<schema::SignedWorkReceipt> o{env}) {
        auto h = ledger::receipt_hash(o.root());
        s.receipts.erase(h);
        std::erase(s.receipt_order, h);
      }
    return std::nullopt;
  }
  log_debug("block_generator: proposing block {} in round {} ({} txs)", height, round,
            draft.transactions.size());
  auto v = value_of(*blk);
  s.checked.emplace(v.id, caf::error{});
  return v;
}

bool chain_app::valid(uint64_t height, const consensus::value& v) {
  auto blk = block_of(v);
  opened<schema::Block> b{blk};
  if (!b || b->getHeader().getHeight() != height
      || ledger::header_hash(b->getHeader()) != v.id)
    return false;
  return !st->check(blk);
}

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

/// Sends `env` to every other member of the height's committee.
void send_members(generator_actor* self, const envelope& env) {
  auto& st = self->state;
  for (auto& member : st.m->committee())
    if (member != st.ctx.self->id())
      ask_role(self, st.ctx.directory, "block_generator@" + member.hex(), env, st.timeout(),
               [](caf::expected<envelope>) {});
}

void tick(generator_actor* self);

/// Carries out the machine's outputs in order. A promise that cannot be
/// written stops the batch: nothing it protects leaves the host.
void carry(generator_actor* self, const consensus::outputs& out) {
  auto& st = self->state;
  for (auto& o : out) {
    using t = consensus::output::type;
    switch (o.what) {
      case t::persist:
        if (auto err = st.persist(*o.promise)) {
          log_error("block_generator: promise for height {} not written, no vote sent: {}",
                    o.promise->height, describe(err));
          return;
        }
        break;
      case t::broadcast_proposal: {
        std::vector<envelope> pol;
        for (auto& v : o.prop->pol)
          if (auto e = st.signed_vote(v))
            pol.push_back(*e);
        send_members(self, ledger::make_proposal(block_of(o.prop->block), o.prop->round,
                                                 o.prop->pol_round, pol, *st.ctx.self));
        break;
      }
      case t::broadcast_vote:
        send_members(self, *st.signed_vote(*o.v));
        break;
      case t::send_commit_request:
        // The ledger's own catch-up (every ledger_sync_ms, from each peer
        // in turn) fetches the final blocks this host lacks.
        break;
      case t::start_timer:
        self->delayed_send(self, std::chrono::milliseconds{o.delay_ms}, round_timer_atom::value,
                           static_cast<uint8_t>(o.timer), o.height, o.round);
        break;
      case t::decide: {
        auto& c = *o.decided;
        std::vector<envelope> votes;
        for (auto& v : c.precommits)
          if (auto e = st.signed_vote(v))
            votes.push_back(*e);
        auto final_block = ledger::chain::with_votes(block_of(c.block), votes);
        auto height = c.height;
        auto round = c.round;
        // The ledger is the only writer of the chain: it appends, this role
        // then tells the peers' ledgers.
        ask_role(self, st.ctx.directory, "ledger", final_block, st.timeout(),
                 [self, final_block, height, round, n = votes.size()](caf::expected<envelope> r) {
                   if (!r) {
                     // Usually a peer's broadcast of the same block got there first.
                     auto tip = self->state.chain->tip();
                     if (tip && tip->height >= height)
                       log_debug("block_generator: block {} is in the chain already", height);
                     else
                       log_warning("block_generator: block {} not appended: {}", height,
                                   describe(r.error()));
                     tick(self);
                     return;
                   }
                   opened<schema::Block> b{final_block};
                   log_info("block {} final in round {}: {} txs, {} work units from {} receipts, "
                            "{}/{} precommits, hash {}",
                            height, round, b->getTransactions().size(),
                            b->getHeader().getWorkUnits(), b->getReceipts().size(), n,
                            self->state.m->committee().size(),
                            ledger::short_hex(ledger::header_hash(b->getHeader())));
                   broadcast(self, final_block);
                   tick(self);
                 });
        break;
      }
      case t::evidence: {
        auto& [a, b] = o.conflict;
        if (!a || !b || !st.reported.insert({a->voter, a->height}).second)
          break;
        auto ea = st.signed_vote(*a), eb = st.signed_vote(*b);
        if (!ea || !eb)
          break;
        auto committed = st.committed_nonce(st.ctx.self->id());
        st.evidence_nonce = std::max(st.evidence_nonce, committed) + 1;
        auto tx = ledger::make_double_vote(*st.ctx.self, st.chain->chain_id(), st.evidence_nonce,
                                           *ea, *eb);
        log_warning("block_generator: {} signed two votes at height {} round {}: evidence "
                    "submitted",
                    a->voter.short_hex(), a->height, a->round);
        auto balance = [&st](const node_id& who) -> uint64_t {
          auto acc = st.chain->account_of(who);
          return acc ? acc->balance : 0;
        };
        if (auto err = st.pool.add(tx, st.nonces(), balance))
          log_warning("block_generator: the evidence was not pooled: {}", describe(err));
        else
          gossip(self, tx);
        break;
      }
    }
  }
}

/// Starts the machine on the tip's next height when the tip moved (a block
/// this host decided, or one its ledger received or fetched).
void follow_tip(generator_actor* self) {
  auto& st = self->state;
  auto tip = st.chain->tip();
  if (!tip || (tip->height == st.machine_tip && tip->hash == st.machine_tip_hash))
    return;
  st.machine_tip = tip->height;
  st.machine_tip_hash = tip->hash;
  st.checked.clear();
  st.pool.prune(st.nonces());
  st.prune_receipts();
  auto& g = st.chain->genesis();
  auto committee = ledger::select_committee(tip->hash, g.candidates, g.committee_size);
  auto restored = st.load_promise(tip->height + 1);
  if (restored)
    log_info("block_generator: promise for height {} restored from the store (round {}, locked "
             "round {}, {} votes signed)",
             restored->height, restored->round, restored->locked_round,
             restored->signed_votes.size());
  carry(self, st.m->new_height(tip->height + 1, std::move(committee), restored));
}

void tick(generator_actor* self) {
  auto& st = self->state;
  follow_tip(self);
  if (!st.m->member())
    return;
  if (!st.m->decided() && st.has_work())
    carry(self, st.m->poke());
  auto now = clock_type::now();
  if (now - st.resent >= std::chrono::milliseconds{st.ctx.lim.block_takeover_ms}) {
    st.resent = now;
    carry(self, st.m->resend());
  }
}

caf::behavior block_generator(generator_actor* self, role_context ctx,
                              std::shared_ptr<ledger::chain> chain) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.chain = std::move(chain);
  st.app.st = &st;
  st.m = std::make_unique<consensus::machine>(st.ctx.self->id(), st.params(), st.app);
  st.table = std::make_unique<message_table>("block_generator", block_generator_access);
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
  // A proposal from the round's proposer: checked (signature, proposer,
  // every chain rule, its proof of lock), then fed to the machine. The
  // answer is this member's prevote for it, or why there is none. The
  // signature is the round's proposer's; the block's generator is the
  // member who built it, the proposer itself for a new block, anyone of
  // the committee for a re-proposal with a proof of lock (a member locked
  // on another's block proposes that block again: refusing it once let two
  // locked members stall a healed partition forever).
  st.table->on<schema::Proposal>([self](const envelope&, schema::Proposal::Reader p)
                                   -> caf::result<envelope> {
    auto& st = self->state;
    follow_tip(self);
    auto b = p.getBlock();
    auto h = b.getHeader();
    auto height = h.getHeight();
    auto round = p.getRound();
    auto hash = ledger::header_hash(h);
    auto generator = node_id::from_bytes({h.getGenerator().begin(), h.getGenerator().size()});
    if (!generator)
      return make_error(errc::invalid_argument, "proposal: block.header.generator must be 32 bytes");
    if (height != st.m->height())
      return make_error(errc::invalid_argument,
                        fmt::format("proposal for block {}, but this host decides block {}", height,
                                    st.m->height()));
    if (!st.m->member())
      return make_error(errc::forbidden,
                        fmt::format("this host is not in the committee of block {}", height));
    auto proposer = st.m->proposer(round);
    auto sig = p.getSignature();
    if (!verify_signature(proposer, ledger::proposal_signing_bytes(round, p.getPolRound(), hash),
                          {sig.begin(), sig.size()}))
      return make_error(errc::bad_signature,
                        fmt::format("proposal: the signature does not verify for round {}'s "
                                    "proposer {}",
                                    round, proposer.short_hex()));
    if (p.getPolRound() == -1 && proposer != *generator)
      return make_error(errc::forbidden,
                        fmt::format("round {} of block {} is {}'s to propose, and a new block "
                                    "(no proof of lock) must be its own, not {}'s",
                                    round, height, proposer.short_hex(), generator->short_hex()));
    if (b.getVotes().size() != 0)
      return make_error(errc::invalid_argument, "proposal: the block must carry no votes");
    auto pol_round = p.getPolRound();
    if (pol_round < -1 || pol_round >= static_cast<int64_t>(round))
      return make_error(errc::invalid_argument,
                        fmt::format("proposal: polRound {} must be -1 or a round before {}",
                                    pol_round, round));
    if ((pol_round == -1) != (p.getPol().size() == 0))
      return make_error(errc::invalid_argument,
                        "proposal: a proof of lock (pol) comes with a polRound, and only with one");
    auto block = copy_envelope<schema::Block>(b);
    if (auto err = st.check(block)) {
      follow_tip(self); // the ledger may have appended this height meanwhile
      if (st.m->height() != height)
        return make_error(errc::invalid_argument,
                          fmt::format("proposal for block {}, but this host decides block {}",
                                      height, st.m->height()));
      return err;
    }
    consensus::proposal cp;
    cp.height = height;
    cp.round = round;
    cp.pol_round = p.getPolRound();
    cp.block = value_of(block);
    cp.proposer = proposer;
    for (auto v : p.getPol()) {
      if (v.getHeight() != height || static_cast<int64_t>(v.getRound()) != pol_round
          || v.getKind() != schema::VoteKind::PREVOTE || v.getBlockHash().size() != 32
          || std::memcmp(v.getBlockHash().begin(), hash.data(), 32) != 0)
        return make_error(errc::invalid_argument,
                          fmt::format("proposal: a vote of its proof of lock is not a prevote for "
                                      "this block in round {}",
                                      pol_round));
      if (!ledger::vote_verifies(v))
        return make_error(errc::bad_signature,
                          "proposal: a vote of its proof of lock does not verify");
      cp.pol.push_back(vote_from(v, copy_envelope<schema::Vote>(v)));
    }
    carry(self, st.m->on_proposal(cp));
    if (st.m->height() != height)
      return make_ack(hash, st.pool.size()); // decided at once (a committee of one)
    if (auto voted = st.m->signed_vote(round, consensus::vote_kind::prevote)) {
      if (*voted == hash)
        return ledger::sign_vote(*st.ctx.self, height, round, schema::VoteKind::PREVOTE, hash);
      return make_error(errc::invalid_argument,
                        fmt::format("already voted for {} at height {} round {}",
                                    consensus::is_nil(*voted) ? std::string{"nil"}
                                                              : ledger::short_hex(*voted),
                                    height, round));
    }
    if (auto held = st.m->proposal_of(round); held && held->block.id != hash)
      return make_error(errc::invalid_argument,
                        fmt::format("already voted for {} at height {} round {} (its first proposal)",
                                    ledger::short_hex(held->block.id), height, round));
    return make_ack(hash, st.pool.size());
  });
  // A member's vote: signature checked here, membership and counting in the machine.
  st.table->on<schema::Vote>([self](const envelope& env, schema::Vote::Reader v)
                               -> caf::result<envelope> {
    auto& st = self->state;
    if (!ledger::vote_verifies(v))
      return make_error(errc::bad_signature, "vote: the signature does not verify for its voter");
    follow_tip(self);
    auto voter = node_id::from_bytes({v.getVoter().begin(), 32}); // size checked by vote_verifies
    auto& com = st.m->committee();
    if (v.getHeight() == st.m->height() && std::find(com.begin(), com.end(), *voter) == com.end())
      return make_error(errc::forbidden,
                        fmt::format("vote: {} is not in the committee of block {}",
                                    voter->short_hex(), v.getHeight()));
    carry(self, st.m->on_vote(vote_from(v, env)));
    hash256 id;
    std::memcpy(id.data(), v.getBlockHash().begin(), 32);
    return make_ack(id, st.pool.size());
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
    [self](round_timer_atom, uint8_t kind, uint64_t height, uint32_t round) {
      if (self->state.ctx.stopping->load())
        return;
      carry(self, self->state.m->on_timeout(static_cast<consensus::timer_kind>(kind), height, round));
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
