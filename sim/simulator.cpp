#include "sim/simulator.hpp"

#include <algorithm>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <random>
#include <set>

#include <atomic>
#include <filesystem>

#include <unistd.h>

#include <fmt/format.h>

#include "actors/block_generator/consensus.hpp"
#include "actors/ledger/chain.hpp"
#include "actors/ledger/hashing.hpp"

namespace aicon::sim {

namespace {

using consensus::hash256;
using bytes = std::vector<uint8_t>;

constexpr uint32_t client_base = 1000;    ///< accounts of simulated clients: 1000, 1001, ...
constexpr uint32_t clients = 8;
constexpr uint64_t client_balance = 1'000'000;
constexpr uint64_t validator_stake = 10'000;
constexpr uint64_t slash_percent = 10;
constexpr uint64_t clock_skew_ms_max = 1000; ///< a block may be this far ahead of a validator's clock
constexpr uint32_t block_txs_max = 64;
constexpr uint64_t tick_ms = 100;         ///< a node looks at its pool this often
constexpr uint64_t sync_ms = 1000;        ///< and asks a peer for what it lacks this often
constexpr uint32_t commits_per_answer = 16;

struct transfer {
  uint32_t from = 0, to = 0;
  uint64_t amount = 0, nonce = 0;
  auto operator<=>(const transfer&) const = default;
};

struct evidence {
  uint32_t voter = 0;
  uint64_t height = 0;
  auto operator<=>(const evidence&) const = default;
};

struct sim_block {
  uint64_t height = 0;
  hash256 prev{};
  uint32_t proposer = 0;
  uint64_t time_ms = 0;
  std::vector<transfer> txs;
  std::vector<evidence> punish;
  uint8_t bad = 0; ///< a Byzantine proposer's invalid block
};

void put64(bytes& b, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    b.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

uint64_t get64(const bytes& b, size_t& at, bool& ok) {
  if (at + 8 > b.size()) {
    ok = false;
    return 0;
  }
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= uint64_t{b[at + i]} << (8 * i);
  at += 8;
  return v;
}

bytes encode(const sim_block& s) {
  bytes b;
  put64(b, s.height);
  b.insert(b.end(), s.prev.begin(), s.prev.end());
  put64(b, s.proposer);
  put64(b, s.time_ms);
  put64(b, s.txs.size());
  for (auto& t : s.txs) {
    put64(b, t.from);
    put64(b, t.to);
    put64(b, t.amount);
    put64(b, t.nonce);
  }
  put64(b, s.punish.size());
  for (auto& e : s.punish) {
    put64(b, e.voter);
    put64(b, e.height);
  }
  b.push_back(s.bad);
  return b;
}

std::optional<sim_block> decode(const bytes& b) {
  sim_block s;
  size_t at = 0;
  bool ok = true;
  s.height = get64(b, at, ok);
  if (!ok || at + 32 > b.size())
    return std::nullopt;
  std::memcpy(s.prev.data(), b.data() + at, 32);
  at += 32;
  s.proposer = static_cast<uint32_t>(get64(b, at, ok));
  s.time_ms = get64(b, at, ok);
  auto n = get64(b, at, ok);
  if (!ok || n > block_txs_max)
    return std::nullopt;
  for (uint64_t i = 0; i < n; ++i)
    s.txs.push_back({static_cast<uint32_t>(get64(b, at, ok)), static_cast<uint32_t>(get64(b, at, ok)),
                     get64(b, at, ok), get64(b, at, ok)});
  auto m = get64(b, at, ok);
  if (!ok || m > 64)
    return std::nullopt;
  for (uint64_t i = 0; i < m; ++i)
    s.punish.push_back({static_cast<uint32_t>(get64(b, at, ok)), get64(b, at, ok)});
  if (!ok || at + 1 != b.size())
    return std::nullopt;
  s.bad = b[at];
  return s;
}

consensus::value make_value(const sim_block& s) {
  auto b = std::make_shared<bytes>(encode(s));
  return {ledger::blake2b("aicon-sim-block", *b), b};
}

uint64_t get(const std::map<uint32_t, uint64_t>& m, uint32_t k) {
  auto it = m.find(k);
  return it == m.end() ? 0 : it->second;
}

/// The ledger a simulated node keeps: balances, nonces, stakes.
struct ledger_state {
  std::map<uint32_t, uint64_t> balance, nonce, stake;
  std::set<evidence> punished;
  uint64_t slashed = 0;

  hash256 root() const {
    bytes b;
    for (auto* m : {&balance, &nonce, &stake}) {
      put64(b, m->size());
      for (auto& [k, v] : *m) {
        put64(b, k);
        put64(b, v);
      }
    }
    put64(b, slashed);
    return ledger::blake2b("aicon-sim-state", b);
  }

  uint64_t supply() const {
    uint64_t s = 0;
    for (auto& [_, v] : balance)
      s += v;
    for (auto& [_, v] : stake)
      s += v;
    return s;
  }
};

/// Every vote any node signed: (voter, height, round, kind) -> ids. What
/// signatures give the real chain: evidence is checkable, votes unforgeable.
using vote_registry = std::map<std::tuple<uint32_t, uint64_t, uint32_t, uint8_t>, std::set<hash256>>;

/// Applies `s` to `st` under the chain's rules; false (st untouched) if any fails.
bool apply(ledger_state& st, const sim_block& s, const vote_registry& reg) {
  auto next = st;
  if (s.bad)
    return false;
  for (auto& t : s.txs) {
    if (t.from == t.to || t.amount == 0 || next.nonce[t.from] + 1 != t.nonce
        || next.balance[t.from] < t.amount)
      return false;
    next.nonce[t.from] = t.nonce;
    next.balance[t.from] -= t.amount;
    next.balance[t.to] += t.amount;
  }
  for (auto& e : s.punish) {
    if (next.punished.count(e))
      return false; // already_punished
    bool conflicting = false;
    for (auto it = reg.lower_bound({e.voter, e.height, 0, 0});
         it != reg.end() && std::get<0>(it->first) == e.voter && std::get<1>(it->first) == e.height; ++it)
      conflicting |= it->second.size() > 1;
    if (!conflicting)
      return false; // bad_evidence
    auto cut = next.stake[e.voter] * slash_percent / 100;
    next.stake[e.voter] -= cut;
    next.slashed += cut;
    next.punished.insert(e);
  }
  st = std::move(next);
  return true;
}

/// A transfer as clients make it; in the real-ledger mode also signed.
struct sim_tx {
  transfer t;
  std::shared_ptr<const envelope> signed_tx; ///< real ledger: the SignedTransaction
};

/// Two conflicting votes of one voter (the machine's evidence output).
struct sim_evidence {
  uint32_t voter = 0;
  uint64_t height = 0;
  consensus::vote a, b;
};

/// What an appended block did, for the invariants and the result.
struct block_facts {
  uint64_t txs = 0;
  std::vector<uint32_t> punished; ///< validators its evidence slashed
};

/// A simulated node's chain under the rules: what survives a crash.
class sim_chain {
public:
  virtual ~sim_chain() = default;
  virtual uint64_t height() const = 0; ///< blocks appended
  virtual hash256 tip_hash() const = 0;
  virtual uint64_t tip_time() const = 0;
  virtual uint64_t nonce_of(uint32_t account) const = 0;
  virtual bool punished(uint32_t voter, uint64_t height) const = 0;
  /// A block at `time` of the transfers that apply (in order) and the
  /// evidence not yet punished; nothing if nothing applies.
  virtual std::optional<consensus::value> build(uint64_t height, uint32_t proposer, uint64_t time,
                                                const std::vector<const sim_tx*>& txs,
                                                const std::vector<const sim_evidence*>& evidence) = 0;
  /// A Byzantine proposer's other block: `dt` ms later, invalid if `bad`.
  virtual std::optional<consensus::value> variant(const consensus::value& v, uint32_t proposer,
                                                  uint64_t dt, bool bad) = 0;
  /// The block's time, if it decodes.
  virtual std::optional<uint64_t> time_of(const consensus::value& v) const = 0;
  /// Every rule for a block at `height` on the tip.
  virtual bool valid(uint64_t height, const consensus::value& v) = 0;
  /// Appends a decided block with its certificate; "" or the rule refused.
  virtual std::string append(const consensus::commit& c, block_facts& facts) = 0;
  virtual const consensus::commit& cert(uint64_t height) const = 0;
  virtual hash256 state_root() const = 0;
  virtual uint64_t supply() const = 0;
  virtual uint64_t slashed() const = 0;
  /// Every block's prev hash is the block before it.
  virtual bool links() const = 0;
};

/// The simulator's own transfer ledger (fast: a million events per second).
class toy_chain : public sim_chain {
public:
  toy_chain(const ledger_state& genesis, uint64_t interval_ms, const vote_registry& reg)
    : state_(genesis), interval_ms_(interval_ms), reg_(reg) {}

  uint64_t height() const override { return chain_.size(); }
  hash256 tip_hash() const override { return tip_hash_; }
  uint64_t tip_time() const override { return tip_time_; }
  uint64_t nonce_of(uint32_t account) const override { return get(state_.nonce, account); }
  bool punished(uint32_t voter, uint64_t height) const override {
    return state_.punished.count({voter, height}) > 0;
  }

  std::optional<consensus::value> build(uint64_t height, uint32_t proposer, uint64_t time,
                                        const std::vector<const sim_tx*>& txs,
                                        const std::vector<const sim_evidence*>& evidence) override {
    sim_block s;
    s.height = height;
    s.prev = tip_hash_;
    s.proposer = proposer;
    s.time_ms = time;
    auto st = state_;
    for (auto* x : txs) {
      auto& t = x->t;
      if (s.txs.size() >= block_txs_max)
        break;
      if (st.nonce[t.from] + 1 != t.nonce || st.balance[t.from] < t.amount)
        continue;
      st.nonce[t.from] = t.nonce;
      st.balance[t.from] -= t.amount;
      st.balance[t.to] += t.amount;
      s.txs.push_back(t);
    }
    for (auto* e : evidence)
      if (s.punish.size() < 8)
        s.punish.push_back({e->voter, e->height});
    if (s.txs.empty() && s.punish.empty())
      return std::nullopt;
    return make_value(s);
  }

  std::optional<consensus::value> variant(const consensus::value& v, uint32_t, uint64_t dt,
                                          bool bad) override {
    auto s = decode(*v.bytes);
    if (!s)
      return std::nullopt;
    s->time_ms += dt;
    s->bad = bad ? 1 : 0;
    return make_value(*s);
  }

  std::optional<uint64_t> time_of(const consensus::value& v) const override {
    auto s = decode(*v.bytes);
    if (!s)
      return std::nullopt;
    return s->time_ms;
  }

  bool valid(uint64_t height, const consensus::value& v) override {
    if (!v.bytes || ledger::blake2b("aicon-sim-block", *v.bytes) != v.id)
      return false;
    auto s = decode(*v.bytes);
    if (!s || s->height != height || s->prev != tip_hash_ || s->time_ms < tip_time_ + interval_ms_)
      return false;
    auto st = state_;
    return apply(st, *s, reg_);
  }

  std::string append(const consensus::commit& c, block_facts& facts) override {
    auto s = decode(*c.block.bytes);
    if (!s)
      return "undecodable";
    if (s->height != chain_.size() + 1 || s->prev != tip_hash_ || !apply(state_, *s, reg_))
      return "a rule refuses it";
    chain_.push_back({*s, c});
    tip_hash_ = c.block.id;
    tip_time_ = s->time_ms;
    facts.txs = s->txs.size();
    for (auto& e : s->punish)
      facts.punished.push_back(e.voter);
    return {};
  }

  const consensus::commit& cert(uint64_t height) const override { return chain_.at(height - 1).cert; }
  hash256 state_root() const override { return state_.root(); }
  uint64_t supply() const override { return state_.supply(); }
  uint64_t slashed() const override { return state_.slashed; }
  bool links() const override {
    for (size_t i = 1; i < chain_.size(); ++i)
      if (chain_[i].block.prev != chain_[i - 1].cert.block.id)
        return false;
    return true;
  }

private:
  struct stored {
    sim_block block;
    consensus::commit cert;
  };
  ledger_state state_;
  uint64_t interval_ms_;
  const vote_registry& reg_;
  std::vector<stored> chain_;
  hash256 tip_hash_{};
  uint64_t tip_time_ = 0;
};

/// ledger::chain itself over LMDB: real blocks, real ed25519 signatures on
/// blocks, proposals' votes and transfers, every rule of the chain.
class real_chain : public sim_chain {
public:
  using account_ids = std::function<node_id(uint32_t)>;

  real_chain(std::unique_ptr<ledger::chain> c, const identity& self, account_ids ids,
             std::map<node_id, uint32_t> index, std::vector<uint32_t> validators,
             uint64_t stake)
    : c_(std::move(c)), self_(self), ids_(std::move(ids)), index_(std::move(index)),
      validators_(std::move(validators)), stake_(stake) {}

  uint64_t height() const override { return tip().height; }
  hash256 tip_hash() const override { return tip().hash; }
  uint64_t tip_time() const override { return tip().time_ms; }
  uint64_t nonce_of(uint32_t account) const override {
    auto a = c_->account_of(ids_(account));
    return a ? a->nonce : 0;
  }
  bool punished(uint32_t voter, uint64_t height) const override {
    return punished_.count({voter, height}) > 0;
  }

  std::optional<consensus::value> build(uint64_t height, uint32_t, uint64_t time,
                                        const std::vector<const sim_tx*>& txs,
                                        const std::vector<const sim_evidence*>& evidence) override {
    ledger::block_draft d;
    d.time_ms = time;
    for (auto* x : txs)
      if (x->signed_tx && d.transactions.size() < block_txs_max)
        d.transactions.push_back(*x->signed_tx);
    auto nonce = nonce_of(index_.at(self_.id()));
    for (auto* e : evidence)
      if (e->a.proof && e->b.proof)
        d.transactions.push_back(ledger::make_double_vote(
          self_, c_->chain_id(), ++nonce,
          envelope_from_bytes(*e->a.proof, capnp::typeId<schema::Vote>()),
          envelope_from_bytes(*e->b.proof, capnp::typeId<schema::Vote>())));
    auto blk = c_->propose(self_, d);
    if (!blk || opened<schema::Block>{*blk}->getHeader().getHeight() != height)
      return std::nullopt;
    return value_of(*blk);
  }

  std::optional<consensus::value> variant(const consensus::value& v, uint32_t, uint64_t dt,
                                          bool bad) override {
    auto blk = ledger::rebuild_block(envelope_from_bytes(*v.bytes, capnp::typeId<schema::Block>()),
                                     [&](schema::Block::Builder b) {
                                       auto h = b.getHeader();
                                       h.setTimeMs(h.getTimeMs() + dt);
                                       if (bad) {
                                         std::vector<uint8_t> root(h.getStateRoot().begin(),
                                                                   h.getStateRoot().end());
                                         root[0] ^= 0xff;
                                         h.setStateRoot(kj::arrayPtr(root.data(), root.size()));
                                       }
                                     });
    auto hash = ledger::header_hash(opened<schema::Block>{blk}->getHeader());
    auto sig = self_.sign(ledger::block_signing_bytes(hash));
    blk = ledger::rebuild_block(blk, [&](schema::Block::Builder b) {
      b.setGeneratorSignature(kj::arrayPtr(sig.data(), sig.size()));
    });
    return value_of(blk);
  }

  std::optional<uint64_t> time_of(const consensus::value& v) const override {
    opened<schema::Block> b{envelope_from_bytes(*v.bytes, capnp::typeId<schema::Block>())};
    if (!b)
      return std::nullopt;
    return b->getHeader().getTimeMs();
  }

  bool valid(uint64_t height, const consensus::value& v) override {
    auto blk = envelope_from_bytes(*v.bytes, capnp::typeId<schema::Block>());
    opened<schema::Block> b{blk};
    if (!b || b->getHeader().getHeight() != height
        || ledger::header_hash(b->getHeader()) != v.id)
      return false;
    return !c_->check_proposal(blk);
  }

  std::string append(const consensus::commit& c, block_facts& facts) override {
    std::vector<envelope> votes;
    for (auto& v : c.precommits)
      if (v.proof)
        votes.push_back(envelope_from_bytes(*v.proof, capnp::typeId<schema::Vote>()));
    auto final_block = ledger::chain::with_votes(
      envelope_from_bytes(*c.block.bytes, capnp::typeId<schema::Block>()), votes);
    if (auto err = c_->append(final_block))
      return describe(err);
    certs_.push_back(c);
    opened<schema::Block> b{final_block};
    facts.txs = b->getTransactions().size();
    for (auto stx : b->getTransactions()) {
      auto body = stx.getTx().getBody();
      if (body.which() != schema::Transaction::Body::DOUBLE_VOTE)
        continue;
      auto voter = node_id::from_bytes({body.getDoubleVote().getA().getVoter().begin(), 32});
      if (voter && index_.count(*voter)) {
        facts.punished.push_back(index_.at(*voter));
        punished_.insert({index_.at(*voter), body.getDoubleVote().getA().getHeight()});
      }
    }
    return {};
  }

  const consensus::commit& cert(uint64_t height) const override { return certs_.at(height - 1); }
  hash256 state_root() const override { return tip().state_root; }
  uint64_t supply() const override {
    uint64_t s = 0;
    for (auto& [id, _] : index_)
      if (auto a = c_->account_of(id))
        s += a->balance + a->stake;
    return s;
  }
  uint64_t slashed() const override {
    uint64_t cut = 0;
    for (auto v : validators_)
      if (auto a = c_->account_of(ids_(v)))
        cut += stake_ - a->stake;
    return cut;
  }
  bool links() const override {
    for (size_t i = 1; i < certs_.size(); ++i) {
      opened<schema::Block> b{envelope_from_bytes(*certs_[i].block.bytes, capnp::typeId<schema::Block>())};
      if (!b || b->getHeader().getPrevHash().size() != 32
          || std::memcmp(b->getHeader().getPrevHash().begin(), certs_[i - 1].block.id.data(), 32) != 0)
        return false;
    }
    return true;
  }

private:
  static consensus::value value_of(const envelope& blk) {
    auto bytes = blk.bytes();
    return {ledger::header_hash(opened<schema::Block>{blk}->getHeader()),
            std::make_shared<const std::vector<uint8_t>>(bytes.begin(), bytes.end())};
  }
  ledger::tip_info tip() const {
    auto t = c_->tip();
    return t ? *t : ledger::tip_info{};
  }

  std::unique_ptr<ledger::chain> c_;
  identity self_;
  account_ids ids_;
  std::map<node_id, uint32_t> index_; ///< every account's id -> its number
  std::vector<uint32_t> validators_;
  uint64_t stake_;
  std::vector<consensus::commit> certs_;
  std::set<std::pair<uint32_t, uint64_t>> punished_;
};

struct message {
  enum class type : uint8_t { proposal, vote, commit, commit_request, tx };
  type what = type::tx;
  uint32_t from = 0;
  std::shared_ptr<const consensus::proposal> prop;
  std::shared_ptr<const consensus::vote> v;
  std::shared_ptr<const consensus::commit> c;
  uint64_t height = 0;
  std::shared_ptr<const sim_tx> tx;
};

struct event {
  enum class type : uint8_t { deliver, timer, tick, sync, crash, restart, partition, heal, client, faults_end };
  uint64_t t = 0;
  uint64_t seq = 0;
  type what = type::deliver;
  uint32_t node = 0;
  uint64_t epoch = 0;
  message msg;
  consensus::timer_kind timer{};
  uint64_t height = 0;
  uint32_t round = 0;
};

struct later {
  bool operator()(const event& a, const event& b) const {
    return std::tie(a.t, a.seq) > std::tie(b.t, b.seq);
  }
};

class world;

struct node;

/// consensus::app over a simulated node's chain.
struct node_app : consensus::app {
  world& w;
  node& n;
  node_app(world& w, node& n) : w(w), n(n) {}
  std::optional<consensus::value> make_block(uint64_t height, uint32_t round) override;
  bool valid(uint64_t height, const consensus::value& v) override;
};

struct node {
  uint32_t idx = 0;
  node_id id;
  std::optional<identity> key;  ///< real ledger: signs blocks, votes, evidence
  bool byzantine = false;
  bool up = true;
  uint64_t epoch = 0;
  int64_t clock_offset_ms = 0;
  double rate = 1.0; ///< timer speed (clock drift)
  // Durable: the chain and the consensus promise.
  std::unique_ptr<sim_chain> chain;
  std::optional<consensus::promise> promise;
  // Volatile: lost in a crash.
  std::unique_ptr<node_app> app;
  std::unique_ptr<consensus::machine> m;
  std::map<std::pair<uint32_t, uint64_t>, sim_tx> pool; ///< (from, nonce) -> tx
  std::map<std::pair<uint32_t, uint64_t>, sim_evidence> pending_evidence; ///< (voter, height)
  std::map<uint64_t, consensus::commit> future; ///< commits above the tip, applied in order
  std::set<std::pair<uint32_t, uint64_t>> answered; ///< laggards told (peer, height)
};

class world {
public:
  explicit world(const sim_options& o) : o_(o), rng_(o.seed) {}
  ~world() {
    nodes_.clear(); // close the stores before their directory goes
    if (!dir_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }

  sim_result run();

  uint64_t clock_of(const node& n) const {
    auto t = static_cast<int64_t>(now_) + n.clock_offset_ms;
    return t < 0 ? 0 : static_cast<uint64_t>(t);
  }

  std::optional<consensus::value> make_block(node& n, uint64_t height) {
    auto clock = clock_of(n);
    auto tip_time = n.chain->tip_time();
    if ((n.pool.empty() && n.pending_evidence.empty()) || clock < tip_time + o_.interval_ms)
      return std::nullopt;
    std::vector<const sim_tx*> txs;
    for (auto& [_, t] : n.pool)
      txs.push_back(&t);
    std::vector<const sim_evidence*> ev;
    for (auto& [_, e] : n.pending_evidence)
      if (!n.chain->punished(e.voter, e.height) && ev.size() < 8)
        ev.push_back(&e);
    return n.chain->build(height, n.idx, std::max(clock, tip_time + o_.interval_ms), txs, ev);
  }

  bool valid(node& n, uint64_t height, const consensus::value& v) {
    if (!v.bytes)
      return false;
    auto t = n.chain->time_of(v);
    if (!t || *t > clock_of(n) + clock_skew_ms_max)
      return false;
    return n.chain->valid(height, v);
  }

private:
  bool real() const {
    return o_.real_ledger;
  }

  void schedule(event e) {
    e.seq = seq_++;
    queue_.push(std::move(e));
  }

  void send(uint32_t from, uint32_t to, message msg) {
    if (from == to)
      return;
    if (in_faults() && (cut_[from] != cut_[to]))
      return; // partitioned
    if (in_faults() && chance(o_.loss))
      return;
    msg.from = from;
    int copies = in_faults() && chance(o_.duplicate) ? 2 : 1;
    for (int i = 0; i < copies; ++i) {
      event e;
      e.what = event::type::deliver;
      e.t = now_ + uniform(o_.delay_ms_min, o_.delay_ms_max)
            + (in_faults() ? slow_[from * nodes_.size() + to] : 0);
      // The adversary schedules the network: news of a decision is what it
      // holds back most (safety must not depend on how fast it spreads).
      if (in_faults() && msg.what == message::type::commit && chance(0.5))
        e.t += uniform(0, 3000);
      e.node = to;
      e.msg = msg;
      schedule(std::move(e));
    }
  }

  void send_all(uint32_t from, const message& msg) {
    for (uint32_t j = 0; j < nodes_.size(); ++j)
      send(from, j, msg);
  }

  bool in_faults() const {
    return now_ < o_.fault_ms;
  }

  bool chance(double p) {
    return std::uniform_real_distribution<double>(0, 1)(rng_) < p;
  }

  uint64_t uniform(uint64_t lo, uint64_t hi) {
    return std::uniform_int_distribution<uint64_t>(lo, std::max(lo, hi))(rng_);
  }

  uint32_t index_of(const node_id& id) const {
    return by_id_.at(id);
  }

  std::vector<node_id> committee_after(const hash256& prev) const {
    return ledger::select_committee(prev, candidates_, static_cast<uint32_t>(candidates_.size()));
  }

  /// `n` signs `v`: the simulator's record of signatures, and in the
  /// real-ledger mode an ed25519 signature as proof.
  consensus::vote sign(node& n, consensus::vote v) {
    registry_[{n.idx, v.height, v.round, static_cast<uint8_t>(v.kind)}].insert(v.id);
    if (real() && !v.proof)
      v.proof = std::make_shared<const std::vector<uint8_t>>([&] {
        auto env = ledger::sign_vote(*n.key, v.height, v.round,
                                     v.kind == consensus::vote_kind::prevote
                                       ? schema::VoteKind::PREVOTE
                                       : schema::VoteKind::PRECOMMIT,
                                     v.id);
        auto b = env.bytes();
        return std::vector<uint8_t>(b.begin(), b.end());
      }());
    return v;
  }

  /// Whether `v` was signed by its voter (no one can forge another's vote).
  bool authentic(const consensus::vote& v) const {
    auto voter = by_id_.find(v.voter);
    if (voter == by_id_.end())
      return false;
    if (!real()) {
      auto it = registry_.find({voter->second, v.height, v.round, static_cast<uint8_t>(v.kind)});
      return it != registry_.end() && it->second.count(v.id) > 0;
    }
    if (!v.proof)
      return false;
    opened<schema::Vote> o{envelope_from_bytes(*v.proof, capnp::typeId<schema::Vote>())};
    return o && o->getHeight() == v.height && o->getRound() == v.round
           && (o->getKind() == schema::VoteKind::PREVOTE) == (v.kind == consensus::vote_kind::prevote)
           && o->getBlockHash().size() == 32
           && std::memcmp(o->getBlockHash().begin(), v.id.data(), 32) == 0
           && std::memcmp(o->getVoter().begin(), v.voter.bytes.data(), 32) == 0
           && ledger::vote_verifies(o.root());
  }

  void fail(const std::string& what) {
    if (result_.ok) {
      result_.ok = false;
      result_.violation = fmt::format("seed {}: {} (t={} ms, event {})", o_.seed, what, now_,
                                      result_.events);
    }
  }

  void trace(const std::string& line) {
    if (o_.trace)
      fmt::print("{:>8} ms #{:<6} {}\n", now_, result_.events, line);
  }

  void boot(node& n);
  void carry(node& n, consensus::outputs out);
  void deliver(node& n, const message& msg);
  void appended(node& n, consensus::commit c);
  void answer_commits(node& n, uint32_t peer, uint64_t from_height);
  void byzantine_proposal(node& n, const consensus::proposal& p);
  void byzantine_vote(node& n, const consensus::vote& v);
  void crash(node& n);
  void check_end();
  void setup_chains(uint32_t n);

  sim_options o_;
  std::mt19937_64 rng_;
  std::priority_queue<event, std::vector<event>, later> queue_;
  uint64_t seq_ = 0;
  uint64_t now_ = 0;
  std::filesystem::path dir_; ///< real ledger: the nodes' stores
  std::vector<std::unique_ptr<node>> nodes_;
  std::vector<ledger::committee_member> candidates_;
  std::map<node_id, uint32_t> by_id_;
  std::vector<identity> client_keys_; ///< real ledger: clients sign their transfers
  hash256 chain_id_{};
  std::vector<int> cut_; ///< partition side per node (all 0: connected)
  std::vector<uint64_t> slow_; ///< extra delay per directed link (from * n + to) while faults run
  vote_registry registry_;
  std::map<uint64_t, hash256> final_;      ///< height -> the first decided block
  std::map<uint64_t, hash256> roots_;      ///< height -> its state root
  std::map<uint64_t, uint64_t> first_proposal_ms_;
  struct client_state {
    uint64_t last = 0;                    ///< the last nonce it signed
    std::map<uint64_t, std::shared_ptr<const sim_tx>> unconfirmed; ///< re-sent until final, like a wallet's retries
  };
  std::map<uint32_t, client_state> clients_;
  uint64_t genesis_supply_ = 0;
  uint64_t height_at_faults_end_ = 0;
  sim_result result_;
};

std::optional<consensus::value> node_app::make_block(uint64_t height, uint32_t) {
  return w.make_block(n, height);
}

bool node_app::valid(uint64_t height, const consensus::value& v) {
  return w.valid(n, height, v);
}

void world::boot(node& n) {
  n.app = std::make_unique<node_app>(*this, n);
  consensus::params p;
  p.propose_ms = 600;
  p.vote_ms = 300;
  p.round_delta_ms = 300;
  p.mutation_ignore_lock = o_.mutation_ignore_lock;
  n.m = std::make_unique<consensus::machine>(n.id, p, *n.app);
  n.pool.clear();
  n.pending_evidence.clear();
  n.future.clear();
  n.answered.clear();
  auto height = n.chain->height() + 1;
  std::optional<consensus::promise> restored;
  if (n.promise && n.promise->height == height)
    restored = n.promise;
  carry(n, n.m->new_height(height, committee_after(n.chain->tip_hash()), restored));
  for (auto type : {event::type::tick, event::type::sync}) {
    event e;
    e.what = type;
    e.node = n.idx;
    e.epoch = n.epoch;
    e.t = now_ + uniform(1, type == event::type::tick ? tick_ms : sync_ms);
    schedule(std::move(e));
  }
}

void world::crash(node& n) {
  trace(fmt::format("node {} crashes at height {}", n.idx, n.chain->height()));
  n.up = false;
  ++n.epoch;
  n.m.reset();
  n.app.reset();
}

void world::carry(node& n, consensus::outputs out) {
  // A crash may cut a batch short: what was not carried out (a persist, a
  // message) is lost, as on a host killed mid-handler.
  size_t crash_at = out.size();
  if (o_.crashes && in_faults() && !n.byzantine && !out.empty() && chance(0.004))
    crash_at = uniform(0, out.size() - 1);
  for (size_t i = 0; i < out.size(); ++i) {
    if (i == crash_at) {
      crash(n);
      event e;
      e.what = event::type::restart;
      e.node = n.idx;
      e.t = std::min(now_ + uniform(200, 4000), std::max(now_ + 1, o_.fault_ms));
      schedule(std::move(e));
      return;
    }
    auto& o = out[i];
    using t = consensus::output::type;
    switch (o.what) {
      case t::persist:
        n.promise = *o.promise;
        // A vote promised is a vote this node will sign (a restarted node
        // re-signs the votes of its promise on the way out).
        for (auto& [key, id] : o.promise->signed_votes)
          registry_[{n.idx, o.promise->height, key.first, key.second}].insert(id);
        break;
      case t::broadcast_proposal: {
        first_proposal_ms_.try_emplace(o.prop->height, now_);
        trace(fmt::format("node {} proposes {} at {}/{}", n.idx, ledger::short_hex(o.prop->block.id),
                          o.prop->height, o.prop->round));
        auto prop = *o.prop;
        for (auto& v : prop.pol)
          if (!v.proof && v.voter == n.id)
            v = sign(n, v);
        if (n.byzantine) {
          byzantine_proposal(n, prop);
          break;
        }
        message msg;
        msg.what = message::type::proposal;
        msg.prop = std::make_shared<consensus::proposal>(std::move(prop));
        send_all(n.idx, msg);
        break;
      }
      case t::broadcast_vote: {
        auto v = sign(n, *o.v);
        trace(fmt::format("node {} {} {} at {}/{}", n.idx,
                          v.kind == consensus::vote_kind::prevote ? "prevotes" : "precommits",
                          consensus::is_nil(v.id) ? std::string{"nil"} : ledger::short_hex(v.id),
                          v.height, v.round));
        if (n.byzantine) {
          byzantine_vote(n, v);
          break;
        }
        message msg;
        msg.what = message::type::vote;
        msg.v = std::make_shared<consensus::vote>(std::move(v));
        send_all(n.idx, msg);
        break;
      }
      case t::send_commit_request: {
        message msg;
        msg.what = message::type::commit_request;
        msg.height = o.height;
        send(n.idx, index_of(o.peer), msg);
        break;
      }
      case t::start_timer: {
        event e;
        e.what = event::type::timer;
        e.node = n.idx;
        e.epoch = n.epoch;
        e.timer = o.timer;
        e.height = o.height;
        e.round = o.round;
        e.t = now_ + static_cast<uint64_t>(static_cast<double>(o.delay_ms) * n.rate);
        schedule(std::move(e));
        break;
      }
      case t::evidence: {
        auto& a = *o.conflict.first;
        auto voter = index_of(a.voter);
        n.pending_evidence.try_emplace({voter, a.height},
                                       sim_evidence{voter, a.height, a, *o.conflict.second});
        break;
      }
      case t::decide:
        appended(n, *o.decided);
        return; // appended() started the next height and carried its outputs
    }
  }
}

void world::appended(node& n, consensus::commit c) {
  for (auto& v : c.precommits)
    if (!v.proof && v.voter == n.id)
      v = sign(n, v);
  block_facts facts;
  auto refused = n.chain->append(c, facts);
  if (!refused.empty()) {
    fail(fmt::format("node {} decided block {} that the chain's rules refuse: {}", n.idx, c.height,
                     refused));
    return;
  }
  for (auto v : facts.punished)
    if (!nodes_[v]->byzantine)
      fail(fmt::format("honest validator {} punished at height {}", v, c.height));
  auto root = n.chain->state_root();
  // Invariants: one final block per height, the same state root, supply.
  auto [f, first] = final_.try_emplace(c.height, c.block.id);
  if (!first && f->second != c.block.id)
    fail(fmt::format("two blocks final at height {}: {} and {} (node {})", c.height,
                     ledger::short_hex(f->second), ledger::short_hex(c.block.id), n.idx));
  auto [r, fresh] = roots_.try_emplace(c.height, root);
  if (!fresh && r->second != root)
    fail(fmt::format("state roots differ at height {} (node {})", c.height, n.idx));
  if (n.chain->supply() != genesis_supply_ - n.chain->slashed())
    fail(fmt::format("supply {} != genesis {} - slashed {} at node {}", n.chain->supply(),
                     genesis_supply_, n.chain->slashed(), n.idx));
  if (first) {
    result_.heights = std::max(result_.heights, c.height);
    result_.txs_final += facts.txs;
    result_.evidence += facts.punished.size();
    result_.max_round = std::max<uint64_t>(result_.max_round, c.round);
    auto p = first_proposal_ms_.find(c.height);
    result_.finality_ms.push_back(p == first_proposal_ms_.end() ? 0 : now_ - p->second);
    result_.finality_rounds.push_back(c.round);
    trace(fmt::format("height {} final at node {}: {} (round {}, {} txs)", c.height, n.idx,
                      ledger::short_hex(c.block.id), c.round, facts.txs));
  }
  std::erase_if(n.pool, [&](auto& kv) { return kv.second.t.nonce <= n.chain->nonce_of(kv.second.t.from); });
  std::erase_if(n.pending_evidence, [&](auto& kv) { return n.chain->punished(kv.first.first, kv.first.second); });
  // Tell the others (the ledger's broadcast of a final block).
  message msg;
  msg.what = message::type::commit;
  msg.c = std::make_shared<consensus::commit>(c);
  send_all(n.idx, msg);
  if (!n.m)
    return;
  auto height = c.height + 1;
  std::optional<consensus::promise> restored;
  if (n.promise && n.promise->height == height)
    restored = n.promise;
  carry(n, n.m->new_height(height, committee_after(n.chain->tip_hash()), restored));
  if (!n.m)
    return;
  auto next = n.future.find(height);
  if (next != n.future.end()) {
    auto commit = next->second;
    n.future.erase(n.future.begin(), std::next(next));
    carry(n, n.m->on_commit(commit));
  }
}

void world::answer_commits(node& n, uint32_t peer, uint64_t from_height) {
  for (uint64_t h = std::max<uint64_t>(from_height, 1);
       h <= n.chain->height() && h < from_height + commits_per_answer; ++h) {
    message msg;
    msg.what = message::type::commit;
    msg.c = std::make_shared<consensus::commit>(n.chain->cert(h));
    send(n.idx, peer, msg);
  }
}

void world::byzantine_proposal(node& n, const consensus::proposal& p) {
  // Propose another block than the honest rule says (a later time, so
  // another id; sometimes invalid), to everyone or to half the committee,
  // without the proof of lock: the locked members must refuse it.
  auto other = p;
  if (auto v = n.chain->variant(p.block, n.idx, 1 + uniform(0, 50), chance(0.2))) {
    other.block = *v;
    other.pol_round = -1;
    other.pol.clear();
  }
  bool split = chance(0.5);
  for (uint32_t j = 0; j < nodes_.size(); ++j) {
    message msg;
    msg.what = message::type::proposal;
    msg.prop = std::make_shared<consensus::proposal>(split && chance(0.5) ? p : other);
    send(n.idx, j, msg);
  }
}

void world::byzantine_vote(node& n, const consensus::vote& v) {
  // Double vote: some peers get the vote, others one for another block.
  auto other = v;
  other.proof.reset();
  if (consensus::is_nil(v.id)) {
    other.id = ledger::blake2b("aicon-sim-fake", bytes(v.id.begin(), v.id.end()));
    other.id[0] ^= static_cast<uint8_t>(uniform(1, 255));
  } else {
    other.id = hash256{};
  }
  // A precommit for a block goes to few (one may decide while the rest
  // cannot, the setting in which a broken lock forks); other votes to a
  // random half.
  bool equivocate = chance(0.5);
  bool targeted = v.kind == consensus::vote_kind::precommit && !consensus::is_nil(v.id) && chance(0.7);
  if (equivocate || targeted)
    other = sign(n, other);
  auto lucky = static_cast<uint32_t>(uniform(0, nodes_.size() - 1));
  for (uint32_t j = 0; j < nodes_.size(); ++j) {
    message msg;
    msg.what = message::type::vote;
    bool honest = targeted ? j == lucky : !(equivocate && chance(0.5));
    msg.v = std::make_shared<consensus::vote>(honest ? v : other);
    send(n.idx, j, msg);
  }
}

void world::deliver(node& n, const message& msg) {
  switch (msg.what) {
    case message::type::tx: {
      auto& t = msg.tx->t;
      if (t.nonce <= n.chain->nonce_of(t.from)
          || !n.pool.emplace(std::pair{t.from, t.nonce}, *msg.tx).second)
        return;
      message relay = msg;
      send_all(n.idx, relay);
      return;
    }
    case message::type::commit_request:
      answer_commits(n, msg.from, msg.height);
      return;
    case message::type::commit: {
      auto& c = *msg.c;
      trace(fmt::format("node {} gets the commit of height {} round {} ({} precommits) from node {}; it is at {}",
                        n.idx, c.height, c.round, c.precommits.size(), msg.from, n.m->height()));
      // Votes are signed: a certificate holds only votes their voters signed.
      for (auto& v : c.precommits)
        if (!authentic(v)) {
          trace(fmt::format("  a vote by {} in the commit is not signed by it", index_of(v.voter)));
          return;
        }
      if (c.height == n.m->height()) {
        carry(n, n.m->on_commit(c));
      } else if (c.height > n.m->height()) {
        n.future.emplace(c.height, c);
        if (n.future.size() == 1) {
          message req;
          req.what = message::type::commit_request;
          req.height = n.m->height();
          send(n.idx, msg.from, req);
        }
      }
      return;
    }
    case message::type::proposal:
    case message::type::vote: {
      uint64_t h = msg.prop ? msg.prop->height : msg.v->height;
      if (msg.v && !authentic(*msg.v))
        return; // a forged vote: the signature check refuses it
      if (msg.prop)
        for (auto& v : msg.prop->pol)
          if (!authentic(v))
            return; // a forged proof of lock: the signature check refuses it
      if (h < n.m->height()) {
        if (n.answered.insert({msg.from, h}).second)
          answer_commits(n, msg.from, h);
        return;
      }
      carry(n, msg.prop ? n.m->on_proposal(*msg.prop) : n.m->on_vote(*msg.v));
      return;
    }
  }
}

void world::check_end() {
  uint64_t top = 0;
  for (auto& n : nodes_)
    if (!n->byzantine)
      top = std::max<uint64_t>(top, n->chain->height());
  std::string nodes;
  for (auto& n : nodes_)
    nodes += fmt::format(" [node {}{}: height {} round {}{}, {} txs pending]", n->idx,
                         n->byzantine ? " byzantine" : "", n->chain->height(),
                         n->m ? n->m->round() : 0, n->up ? "" : " down", n->pool.size());
  if (top <= height_at_faults_end_)
    fail(fmt::format("no progress in the {} ms after faults stopped (height {}){}", o_.settle_ms,
                     top, nodes));
  for (auto& n : nodes_)
    if (!n->byzantine && n->chain->height() + 2 < top)
      fail(fmt::format("node {} stuck at height {} while the chain is at {}", n->idx,
                       n->chain->height(), top));
  // Every honest node's chain is a prefix of the longest: blocks were
  // checked against final_ as they were appended; check the links too.
  for (auto& n : nodes_)
    if (!n->chain->links())
      fail(fmt::format("node {} has a broken chain", n->idx));
}

void world::setup_chains(uint32_t n) {
  if (!real()) {
    ledger_state genesis;
    for (uint32_t c = 0; c < clients; ++c)
      genesis.balance[client_base + c] = client_balance;
    for (uint32_t i = 0; i < n; ++i)
      genesis.stake[i] = validator_stake;
    genesis_supply_ = genesis.supply();
    for (auto& nd : nodes_)
      nd->chain = std::make_unique<toy_chain>(genesis, o_.interval_ms, registry_);
    return;
  }
  // The real chain: one LMDB store per node under a directory of this run.
  static std::atomic<uint64_t> runs{0};
  dir_ = std::filesystem::temp_directory_path()
         / fmt::format("aicon-sim-{}-{}-{}", ::getpid(), o_.seed, runs++);
  std::filesystem::create_directories(dir_);
  ledger::genesis_config g;
  g.time_ms = 0;
  g.committee_size = n;
  g.initial_difficulty = 1000;
  g.difficulty.target_interval_ms = o_.interval_ms;
  g.slash_percent = static_cast<uint32_t>(slash_percent);
  std::map<node_id, uint32_t> index;
  std::vector<uint32_t> validators;
  for (auto& nd : nodes_) {
    g.candidates.push_back({nd->id, 1});
    g.allocations.push_back({nd->id, 0, validator_stake});
    index[nd->id] = nd->idx;
    validators.push_back(nd->idx);
  }
  for (uint32_t c = 0; c < clients; ++c) {
    std::array<uint8_t, 32> seed{};
    seed[0] = static_cast<uint8_t>(c);
    seed[31] = 0xc1;
    client_keys_.push_back(identity::from_seed(seed));
    g.allocations.push_back({client_keys_.back().id(), client_balance, 0});
    index[client_keys_.back().id()] = client_base + c;
  }
  chain_id_ = ledger::chain_id(g);
  genesis_supply_ = uint64_t{clients} * client_balance + uint64_t{n} * validator_stake;
  auto ids = [this](uint32_t account) {
    return account >= client_base ? client_keys_.at(account - client_base).id() : nodes_.at(account)->id;
  };
  store::options opts;
  opts.sync = false; // durable within the process; a simulated crash loses no committed block
  opts.map_bytes = 64ull << 20;
  for (auto& nd : nodes_) {
    auto c = ledger::chain::open(dir_ / fmt::format("node{}", nd->idx), g, opts);
    if (!c) {
      fail("cannot open a node's chain store: " + describe(c.error()));
      return;
    }
    nd->chain = std::make_unique<real_chain>(std::move(*c), *nd->key, ids, index, validators,
                                             validator_stake);
  }
}

sim_result world::run() {
  result_.seed = o_.seed;
  uint32_t n = std::max<uint32_t>(o_.nodes, 1);
  cut_.assign(n, 0);
  slow_.assign(size_t{n} * n, 0);
  std::vector<uint32_t> order(n);
  for (uint32_t i = 0; i < n; ++i)
    order[i] = i;
  std::shuffle(order.begin(), order.end(), rng_);
  std::set<uint32_t> byz(order.begin(), order.begin() + std::min(o_.byzantine, n));
  for (uint32_t i = 0; i < n; ++i) {
    auto nd = std::make_unique<node>();
    nd->idx = i;
    std::array<uint8_t, 32> seed{};
    seed[0] = static_cast<uint8_t>(i);
    seed[1] = static_cast<uint8_t>(i >> 8);
    seed[31] = 0x51;
    nd->key = identity::from_seed(seed);
    nd->id = nd->key->id();
    nd->byzantine = byz.count(i) > 0;
    nd->clock_offset_ms = static_cast<int64_t>(uniform(0, 2 * o_.skew_ms_max)) - static_cast<int64_t>(o_.skew_ms_max);
    nd->rate = 0.95 + 0.1 * std::uniform_real_distribution<double>(0, 1)(rng_);
    by_id_[nd->id] = i;
    candidates_.push_back({nd->id, 1});
    nodes_.push_back(std::move(nd));
  }
  setup_chains(n);
  if (!result_.ok)
    return result_;
  for (auto& nd : nodes_)
    boot(*nd);
  // Clients submit transfers all along; faults in [0, fault_ms).
  for (uint64_t t = uniform(1, o_.tx_every_ms); t < o_.fault_ms + o_.settle_ms; t += uniform(1, 2 * o_.tx_every_ms)) {
    event e;
    e.what = event::type::client;
    e.t = t;
    schedule(std::move(e));
  }
  if (o_.partitions)
    for (uint64_t t = uniform(500, 5000); t < o_.fault_ms; t += uniform(2000, 8000)) {
      event e;
      e.what = event::type::partition;
      e.t = t;
      schedule(e);
      e.what = event::type::heal;
      e.t = std::min(t + uniform(300, 4000), o_.fault_ms);
      schedule(e);
    }
  if (o_.split_ms > 0) {
    event e;
    e.what = event::type::partition;
    e.t = o_.split_ms;
    e.node = 1; // the fixed split: first half against second half
    schedule(e);
    e.what = event::type::heal;
    e.t = std::max(o_.heal_ms, o_.split_ms + 1);
    schedule(e);
  }
  if (o_.crashes)
    for (uint64_t t = uniform(500, 4000); t < o_.fault_ms; t += uniform(1000, 6000)) {
      event e;
      e.what = event::type::crash;
      e.t = t;
      e.node = static_cast<uint32_t>(uniform(0, n - 1));
      schedule(e);
    }
  {
    event e;
    e.what = event::type::faults_end;
    e.t = o_.fault_ms;
    schedule(e);
  }
  const uint64_t end = o_.fault_ms + o_.settle_ms;
  while (!queue_.empty() && result_.ok) {
    auto e = queue_.top();
    queue_.pop();
    if (e.t > end)
      break;
    now_ = e.t;
    ++result_.events;
    switch (e.what) {
      case event::type::deliver: {
        auto& nd = *nodes_[e.node];
        if (nd.up)
          deliver(nd, e.msg);
        break;
      }
      case event::type::timer: {
        auto& nd = *nodes_[e.node];
        if (nd.up && nd.epoch == e.epoch)
          carry(nd, nd.m->on_timeout(e.timer, e.height, e.round));
        break;
      }
      case event::type::tick: {
        auto& nd = *nodes_[e.node];
        if (!nd.up || nd.epoch != e.epoch)
          break;
        if ((!nd.pool.empty() || !nd.pending_evidence.empty())
            && clock_of(nd) >= nd.chain->tip_time() + o_.interval_ms)
          carry(nd, nd.m->poke());
        if (nd.up && nd.epoch == e.epoch) {
          e.t = now_ + tick_ms;
          schedule(e);
        }
        break;
      }
      case event::type::sync: {
        auto& nd = *nodes_[e.node];
        if (!nd.up || nd.epoch != e.epoch)
          break;
        message req;
        req.what = message::type::commit_request;
        req.height = nd.chain->height() + 1;
        send(nd.idx, static_cast<uint32_t>(uniform(0, n - 1)), req);
        carry(nd, nd.m->resend());
        if (!nd.up)
          break;
        e.t = now_ + sync_ms;
        schedule(e);
        break;
      }
      case event::type::crash: {
        auto& nd = *nodes_[e.node];
        if (!nd.up || nd.byzantine)
          break;
        crash(nd);
        event r;
        r.what = event::type::restart;
        r.node = nd.idx;
        r.t = std::min(now_ + uniform(200, 4000), std::max(now_ + 1, o_.fault_ms));
        schedule(r);
        break;
      }
      case event::type::restart: {
        auto& nd = *nodes_[e.node];
        if (nd.up)
          break;
        nd.up = true;
        trace(fmt::format("node {} restarts at height {}", nd.idx, nd.chain->height()));
        boot(nd);
        break;
      }
      case event::type::partition: {
        for (uint32_t i = 0; i < n; ++i)
          cut_[i] = e.node == 1 ? (i < n / 2 ? 0 : 1) : static_cast<int>(uniform(0, 1));
        // Some links also turn slow (an overloaded route): one side learns
        // what the other decided only much later.
        if (e.node != 1)
          for (auto& d : slow_)
            d = chance(0.2) ? uniform(200, 3000) : 0;
        trace("partition");
        break;
      }
      case event::type::heal:
        std::fill(cut_.begin(), cut_.end(), 0);
        trace("heal");
        break;
      case event::type::client: {
        auto from = client_base + static_cast<uint32_t>(uniform(0, clients - 1));
        auto& cl = clients_[from];
        auto first = static_cast<uint32_t>(uniform(0, n - 1));
        // The wallet asks the host it reaches for its committed nonce, keeps
        // at most 4 transfers in flight and re-sends those not yet final.
        auto& asked = *nodes_[first];
        if (asked.up) {
          auto done = asked.chain->nonce_of(from);
          std::erase_if(cl.unconfirmed, [&](auto& kv) { return kv.first <= done; });
        }
        if (cl.unconfirmed.size() < 4) {
          auto to = client_base + static_cast<uint32_t>(uniform(0, clients - 1));
          if (to == from)
            to = client_base + (to - client_base + 1) % clients;
          ++cl.last;
          auto tx = std::make_shared<sim_tx>();
          tx->t = {from, to, uniform(1, 100), cl.last};
          if (real()) {
            auto& key = client_keys_.at(from - client_base);
            auto dest = client_keys_.at(to - client_base).id();
            tx->signed_tx = std::make_shared<const envelope>(ledger::make_signed_transaction(
              key, chain_id_, cl.last, [&](schema::Transaction::Body::Builder b) {
                auto t = b.initTransfer();
                t.setTo(kj::arrayPtr(dest.bytes.data(), 32));
                t.setAmount(tx->t.amount);
              }));
          }
          cl.unconfirmed[cl.last] = std::move(tx);
        }
        for (uint32_t k = 0; k < 2; ++k) {
          auto& target = *nodes_[(first + k) % n];
          if (!target.up)
            continue;
          for (auto& [_, t] : cl.unconfirmed) {
            message msg;
            msg.what = message::type::tx;
            msg.tx = t;
            deliver(target, msg);
          }
        }
        break;
      }
      case event::type::faults_end: {
        std::fill(cut_.begin(), cut_.end(), 0);
        for (auto& nd : nodes_)
          if (!nd->byzantine)
            height_at_faults_end_ = std::max<uint64_t>(height_at_faults_end_, nd->chain->height());
        break;
      }
    }
  }
  now_ = std::max(now_, end);
  result_.sim_ms = now_;
  if (result_.ok)
    check_end();
  return result_;
}

} // namespace

sim_result run(const sim_options& o) {
  world w{o};
  return w.run();
}

} // namespace aicon::sim
