// The round logic of block finality as a pure state machine (Tendermint's
// algorithm: "The latest gossip on BFT consensus", Buchman, Kwon, Milosevic
// 2018, Algorithm 1), one instance per validator.
//
// Inputs are messages (proposals, prevotes, precommits, commits), timer
// events, "there is work" pokes and the answers of an injected `app` (the
// block store: what to propose, whether a block is valid). Outputs are
// messages to send, timers to start, durable writes and decisions, returned
// in the order the caller must carry them out: a `persist` comes before the
// vote it protects, so a caller that writes and fsyncs each persist before
// sending what follows never lets a promise out that a crash could forget.
// No clock, randomness, thread or network inside: the block generator actor
// feeds it from CAF and LMDB, the simulator (sim/) from a seeded event queue.
//
// Safety (no two different blocks decided at one height while faulty
// members hold less than 1/3 of the committee): a member precommits a block
// only after a quorum of prevotes for it in that round and then locks it;
// while locked it prevotes only its locked block, unless a proposal shows a
// quorum of prevotes for another block in a round at least as late as the
// lock (proof of lock). Two quorums of ceil(2n/3) share more than n/3
// members, so at least one honest one, which would have had to break its
// lock. Liveness: timeouts grow with the round, so once messages arrive
// within a bound, some round has an honest proposer whose proposal every
// honest member accepts.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runtime/identity.hpp"

namespace aicon::consensus {

using hash256 = std::array<uint8_t, 32>;

/// A block as consensus sees it: its header hash and its bytes (opaque
/// here; the app checks them). `bytes` is shared, values are copied freely.
struct value {
  hash256 id{};
  std::shared_ptr<const std::vector<uint8_t>> bytes;
};

enum class vote_kind : uint8_t { prevote = 1, precommit = 2 };

/// A vote as the machine counts it; `proof` is the signed form the caller
/// keeps for certificates and evidence (the actor: the Vote envelope's
/// bytes; the simulator: empty, its network is authenticated).
struct vote {
  uint64_t height = 0;
  uint32_t round = 0;
  vote_kind kind = vote_kind::prevote;
  hash256 id{}; ///< all zero: nil
  node_id voter;
  std::shared_ptr<const std::vector<uint8_t>> proof;
};

bool is_nil(const hash256& id);

/// A proposal for (height, round); `pol_round` >= 0 says the proposer saw a
/// quorum of prevotes for this block in that earlier round (its proof of
/// lock, which receivers check against the prevotes they hold).
struct proposal {
  uint64_t height = 0;
  uint32_t round = 0;
  int32_t pol_round = -1;
  value block;
  node_id proposer;
  /// With pol_round >= 0: the quorum of prevotes for `block` at pol_round
  /// (the proof of lock itself, so a member that lost them can check it;
  /// the caller checks their signatures like any vote's).
  std::vector<vote> pol;
};

/// A decided block and the quorum of precommits (one round) that proves it.
struct commit {
  uint64_t height = 0;
  uint32_t round = 0;
  value block;
  std::vector<vote> precommits;
};

/// What a validator promised at its current height: written durably before
/// any vote it protects leaves the host, read back after a restart.
struct promise {
  uint64_t height = 0;
  uint32_t round = 0;
  uint8_t step = 0;           ///< the `step` reached (propose, prevote, precommit)
  int32_t locked_round = -1;
  std::optional<value> locked;
  int32_t valid_round = -1;
  std::optional<value> valid;
  /// The votes signed at this height, (round, kind) -> block id: never sign
  /// another block for the same (round, kind).
  std::map<std::pair<uint32_t, uint8_t>, hash256> signed_votes;
};

enum class timer_kind : uint8_t { propose = 1, prevote = 2, precommit = 3 };

struct params {
  uint64_t propose_ms = 1000;   ///< wait for round 0's proposal this long
  uint64_t vote_ms = 500;       ///< wait for the rest of a vote quorum this long
  uint64_t round_delta_ms = 500; ///< each later round waits this much longer
  /// Test-only mutation for the simulator's self-check (never set by the
  /// actor, not reachable from the wire or the config): a locked member
  /// prevotes any valid proposal. The simulator must find the fork this
  /// allows; a checker that cannot find a planted bug proves nothing.
  bool mutation_ignore_lock = false;
};

/// The caller's side, asked synchronously (deterministic answers).
struct app {
  virtual ~app() = default;
  /// A block to propose at `height`, or nothing (no work or transactions
  /// yet, or the target interval has not passed): the machine asks again on
  /// the next `poke`.
  virtual std::optional<value> make_block(uint64_t height, uint32_t round) = 0;
  /// Every rule of the chain for a block at `height` on the current tip.
  virtual bool valid(uint64_t height, const value& v) = 0;
};

/// One thing for the caller to do, in order.
struct output {
  enum class type : uint8_t {
    broadcast_proposal, ///< send `prop` to every committee member
    broadcast_vote,     ///< sign and send `vote` to every committee member
    send_commit_request, ///< ask `peer` for commits from `height` on (this member is behind)
    start_timer,        ///< feed on_timeout(timer, height, round) after `delay_ms`
    persist,            ///< write `promise` durably before going on
    decide,             ///< append `decided` (the ledger writes it) and call new_height
    evidence,           ///< two votes by one voter for different blocks at one (height, round, kind)
  };
  explicit output(type t) : what(t) {}
  type what;
  std::optional<proposal> prop;
  std::optional<vote> v;
  std::optional<consensus::promise> promise;
  std::optional<consensus::commit> decided;
  std::pair<std::optional<vote>, std::optional<vote>> conflict;
  timer_kind timer = timer_kind::propose;
  uint64_t height = 0;
  uint32_t round = 0;
  uint64_t delay_ms = 0;
  node_id peer;
};

using outputs = std::vector<output>;

/// ceil(2n/3): two quorums share more than n/3 members.
uint32_t quorum_of(uint32_t committee_size);

class machine {
public:
  machine(node_id self, params p, app& a);

  /// Starts `height` (after a decision was appended, or at start-up) with
  /// its committee (in proposer order for round 0, rotating each round). A
  /// `restored` promise for this height (after a restart) brings its round,
  /// lock and signed votes back. Round 0 waits for a `poke` or a message.
  outputs new_height(uint64_t height, std::vector<node_id> committee,
                     std::optional<promise> restored = std::nullopt);
  /// There may be something to propose now (transactions, work, time).
  outputs poke();
  outputs on_proposal(const proposal& p);
  outputs on_vote(const vote& v);
  /// A peer's decided block with its certificate: checked (quorum of
  /// distinct committee precommits of one round for its id), then decided.
  outputs on_commit(const commit& c);
  outputs on_timeout(timer_kind t, uint64_t height, uint32_t round);
  /// This member's proposal of the current round and its votes of every
  /// round of the height again (no new signature): the caller calls it periodically, since a quorum needs
  /// every message eventually, and a lossy network loses some.
  outputs resend() const;

  uint64_t height() const { return height_; }
  uint32_t round() const { return round_; }
  bool decided() const { return decided_; }
  const std::vector<node_id>& committee() const { return committee_; }
  node_id proposer(uint32_t round) const;
  bool member() const;
  /// The block this member signed a vote of kind `k` for in `round` of the
  /// current height, if it did.
  std::optional<hash256> signed_vote(uint32_t round, vote_kind k) const;
  /// The proposal held for `round` of the current height, if any.
  const proposal* proposal_of(uint32_t round) const;

private:
  enum step_t : uint8_t { step_propose = 0, step_prevote = 1, step_precommit = 2 };

  void start_round(uint32_t r, outputs& out);
  /// Asks `peer` once per height for the commits this member lacks.
  void ask_commits(const node_id& peer, outputs& out);
  /// Round 0's timers start at the first work or message of the height.
  void wake(outputs& out);
  void start_timer(timer_kind t, uint64_t delay_ms, outputs& out) const;
  void try_propose(outputs& out);
  void cast(vote_kind k, const hash256& id, outputs& out);
  void add_vote(const vote& v, outputs& out);
  void save(outputs& out);
  void check_rules(outputs& out);
  void decide(const value& v, uint32_t round, outputs& out);
  uint32_t count(uint32_t r, vote_kind k, const hash256& id) const;
  uint32_t count_any(uint32_t r, vote_kind k) const;
  bool in_committee(const node_id& n) const;
  std::optional<value> known_block(const hash256& id) const;
  bool check_valid(const value& v);

  node_id self_;
  params p_;
  app& app_;
  uint64_t height_ = 0;
  uint32_t round_ = 0;
  step_t step_ = step_propose;
  bool awake_ = false;      ///< round 0 started its timers (work or a message seen)
  bool proposed_ = false;   ///< this member proposed in this round
  bool decided_ = false;
  std::vector<node_id> committee_;
  uint32_t quorum_ = 1;
  int32_t locked_round_ = -1;
  std::optional<value> locked_;
  int32_t valid_round_ = -1;
  std::optional<value> valid_;
  std::map<std::pair<uint32_t, uint8_t>, hash256> signed_;
  std::map<uint32_t, proposal> proposals_;     ///< round -> the proposer's proposal
  std::map<hash256, value> blocks_;             ///< every block seen at this height
  std::map<hash256, bool> validity_;           ///< app answers, asked once per block
  /// The first vote of each voter per (round, kind): what is resent,
  /// which voters a round has seen.
  std::map<uint32_t, std::map<uint8_t, std::map<node_id, vote>>> votes_;
  /// Every authentic vote per (round, kind) and block: what is counted. An
  /// equivocator's two votes both count (for different blocks); quorum
  /// intersection already allows the faulty any vote.
  std::map<std::pair<uint32_t, uint8_t>, std::map<hash256, std::map<node_id, vote>>> tally_;
  std::set<uint32_t> prevote_timer_, precommit_timer_, locked_in_; ///< "for the first time" rules
  std::set<std::pair<node_id, uint64_t>> asked_; ///< commit requests sent (peer, from height)
};

} // namespace aicon::consensus
