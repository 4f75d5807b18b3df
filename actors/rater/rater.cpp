#include "actors/rater/rater.hpp"

#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <sodium.h>

#include <capnp/message.h>
#include <capnp/serialize.h>

#include "actors/allocator/allocator.hpp"
#include "actors/data_node/ingest.hpp"
#include "actors/data_node/model_store.hpp"
#include "actors/data_node/remote.hpp"
#include "actors/ledger/chain.hpp"
#include "actors/ledger/hashing.hpp"
#include "actors/ledger/ledger.hpp"
#include "actors/ledger/state.hpp"
#include "actors/ledger/work.hpp"
#include "actors/rater/scores.hpp"
#include "actors/rater/verify.hpp"
#include "actors/trainer/torch_model.hpp"
#include "runtime/directory.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "runtime/role.hpp"
#include "schemas/chain.capnp.h"
#include "schemas/rater.capnp.h"
#include "schemas/trainer.capnp.h"

namespace aicon {

namespace {

using clock_type = std::chrono::steady_clock;
using ledger::hash256;

/// The rater's own rule for how hard it looks: steps faked in this
/// fraction of a trainer's log are caught with this probability (k = 44).
constexpr double cheat_fraction = 0.1;
constexpr double detection_target = 0.99;

caf::error refused(std::string what) {
  return make_error(errc::forbidden, "RateRequest: " + std::move(what));
}

struct rater_state {
  role_context ctx;
  std::unique_ptr<message_table> table;
  caf::actor_system* sys = nullptr;
  ledger::genesis_config genesis;   ///< the chain's rules (reward, slash)
  hash256 chain{};                  ///< chain_id(genesis): what payers sign for
  std::shared_ptr<store::environment> env; ///< rated_jobs
  static inline const char* name = "aicon.rater";

  /// A job's rating as kept: the session rated, when, its RateResult
  /// (as decided; final once done) and the decision's transactions
  /// (`record`, a RatingRecord; absent in a record of an older version).
  struct rated_record {
    hash256 session{};
    uint64_t ms = 0;
    std::optional<envelope> result;
    bool done = false;
    std::optional<envelope> record;
    std::string describe() const {
      return fmt::format("session {} at {} ms since the epoch", ledger::short_hex(session), ms);
    }
  };

  static constexpr std::string_view record_magic = "aRR2";

  static uint64_t now_ms() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
  }

  /// How `job` was rated (nullopt: never).
  caf::expected<std::optional<rated_record>> rated(const hash256& job) {
    auto t = store::txn::begin(*env, false);
    if (!t)
      return t.error();
    auto v = t->get(store::db::rated_jobs, job);
    if (!v)
      return v.error();
    if (!*v)
      return std::optional<rated_record>{};
    auto& bytes = **v;
    rated_record rec;
    if (bytes.size() > record_magic.size()
        && std::memcmp(bytes.data(), record_magic.data(), record_magic.size()) == 0) {
      auto env = envelope_from_bytes({bytes.data() + record_magic.size(),
                                      bytes.size() - record_magic.size()},
                                     capnp::typeId<schema::RatingRecord>());
      opened<schema::RatingRecord> r{env};
      if (!r || r->getSession().size() != 32)
        return make_error(errc::internal, "a stored rated_jobs record is corrupt");
      std::memcpy(rec.session.data(), r->getSession().begin(), 32);
      rec.ms = r->getRatedMs();
      rec.done = r->getDone();
      if (r->getResult().size() > 0) {
        auto result = envelope_from_bytes({r->getResult().begin(), r->getResult().size()},
                                          capnp::typeId<schema::RateResult>());
        if (!opened<schema::RateResult>{result})
          return make_error(errc::internal, "a stored rated_jobs result is corrupt");
        rec.result = std::move(result);
      }
      rec.record = std::move(env);
      return std::optional<rated_record>{std::move(rec)};
    }
    // An older version's record: session, ms and (once ended) the result.
    if (bytes.size() < 40)
      return make_error(errc::internal, "a stored rated_jobs record is corrupt");
    std::memcpy(rec.session.data(), bytes.data(), 32);
    for (int i = 0; i < 8; ++i)
      rec.ms = rec.ms << 8 | bytes[32 + static_cast<size_t>(i)];
    if (bytes.size() > 40) {
      auto result = envelope_from_bytes({bytes.data() + 40, bytes.size() - 40},
                                        capnp::typeId<schema::RateResult>());
      if (!opened<schema::RateResult>{result})
        return make_error(errc::internal, "a stored rated_jobs result is corrupt");
      rec.result = std::move(result);
      rec.done = true;
    }
    return std::optional<rated_record>{std::move(rec)};
  }

  /// Writes `job`'s RatingRecord (one LMDB transaction: it is there whole
  /// or not at all).
  caf::error store_record(const hash256& job, const envelope& record) {
    auto t = store::txn::begin(*env, true);
    if (!t)
      return t.error();
    std::vector<uint8_t> v(record_magic.begin(), record_magic.end());
    v.insert(v.end(), record.bytes().begin(), record.bytes().end());
    if (auto err = t->put(store::db::rated_jobs, job, v))
      return err;
    return t->commit();
  }

  /// A RatingRecord: `decided` with `result` and done set.
  static envelope record_with(schema::RatingRecord::Reader decided, const envelope& result,
                              bool done) {
    return make_envelope<schema::RatingRecord>([&](schema::RatingRecord::Builder b) {
      b.setSession(decided.getSession());
      b.setRatedMs(decided.getRatedMs());
      b.setResult(kj::arrayPtr(result.bytes().data(), result.bytes().size()));
      b.setDone(done);
      b.setReceipts(decided.getReceipts());
      b.setSlashes(decided.getSlashes());
      b.setRewards(decided.getRewards());
    });
  }

  /// Signs and submits this rater's transaction with body `fill`: "ok"
  /// (accepted), "there" (the chain has it already: `already` names the
  /// refusals that say so), "refused" (a rule refused it: `why`) or
  /// "later" (no answer, the pool full, a pending transaction of its own
  /// not yet committed: to be sent again).
  enum class sent { ok, there, refused, later };
  static bool transient(const caf::error& err) {
    auto c = code_of(err);
    return c == errc::busy || c == errc::timeout || c == errc::peer_down
           || c == errc::unknown_node || c == errc::unknown_role;
  }
  sent submit_tx(uint64_t& nonce, const std::function<void(schema::Transaction::Body::Builder)>& fill,
                 std::initializer_list<std::string_view> already, std::string& why) {
    for (int attempt = 0; attempt < 1024; ++attempt) {
      auto ack = ask("block_generator", ledger::make_signed_transaction(*ctx.self, chain, nonce, fill));
      if (ack) {
        ++nonce;
        return sent::ok;
      }
      why = what_of(ack.error());
      if (transient(ack.error()))
        return sent::later;
      if (why.find("rule duplicate: this transaction is already pending") != std::string::npos) {
        ++nonce; // the very same bytes: sent before this rater stopped
        return sent::there;
      }
      if (why.find("rule duplicate") != std::string::npos
          || why.find("rule replayed_nonce") != std::string::npos) {
        // The nonce is held by another of this rater's transactions,
        // pending or committed. Sent past a pending one, this one would
        // skip the chain's rule check at the door (a nonce ahead of the
        // next is only checked in its block) and could leave a gap if the
        // block refused it: wait for the pending one to be committed, then
        // send this one at the next nonce, where the rules are checked.
        bool moved = false;
        auto until = clock_type::now() + std::chrono::seconds(10);
        while (!moved && clock_type::now() < until) {
          auto me = account(ctx.self->id());
          if (!me)
            return sent::later; // the ledger does not answer: asked again later
          if (me->first >= nonce) {
            nonce = me->first + 1;
            moved = true;
          } else {
            std::this_thread::sleep_for(std::chrono::milliseconds(250));
          }
        }
        if (!moved)
          return sent::later; // still pending: asked again later
        continue;
      }
      for (auto w : already)
        if (why.find(w) != std::string::npos)
          return sent::there;
      return sent::refused;
    }
    return sent::later;
  }

  /// Carries out a decided rating: its receipts, slashes and mint go to
  /// this host's block generator (what the chain has already counts as
  /// done: nothing moves twice); then the record is marked done with the
  /// result as it came out. A transaction that got no answer (or a full
  /// pool) leaves the record not done and answers "busy": the same
  /// request again sends what is missing.
  caf::expected<envelope> complete(const hash256& job, const envelope& record) {
    opened<schema::RatingRecord> rec{record};
    if (!rec)
      return rec.error();
    opened<schema::RateResult> decided{envelope_from_bytes(
      {rec->getResult().begin(), rec->getResult().size()}, capnp::typeId<schema::RateResult>())};
    if (!decided)
      return decided.error();
    bool pending = false; // something to send again
    std::string pending_why;
    uint32_t submitted = 0;
    for (auto bytes : rec->getReceipts()) {
      auto ack = ask("block_generator",
                     envelope_from_bytes({bytes.begin(), bytes.size()},
                                         capnp::typeId<schema::SignedWorkReceipt>()));
      auto why = ack ? std::string{} : what_of(ack.error());
      if (ack || why.find("receipt: already earned") != std::string::npos
          || why.find("receipt: duplicate") != std::string::npos) {
        ++submitted;
      } else if (transient(ack.error())) {
        pending = true;
        pending_why = why;
      } else {
        log_warning("rater: a receipt of job {} refused: {}", ledger::short_hex(job), why);
      }
    }
    auto me = account(ctx.self->id());
    if (!me)
      return make_error(errc::busy,
                        fmt::format("RateRequest: job {} is rated; its transactions wait for "
                                    "this rater's account on the chain ({}): ask again",
                                    ledger::short_hex(job), what_of(me.error())));
    uint64_t nonce = me->first + 1;
    // True when the chain has it (sent now or before); a refusal is
    // logged, no answer leaves the rating to be completed later.
    auto taken = [&](const char* what, sent out, const std::string& why) {
      if (out == sent::later) {
        pending = true;
        pending_why = why;
      } else if (out == sent::refused) {
        log_warning("rater: {} refused: {}", what, why);
      }
      return out == sent::ok || out == sent::there;
    };
    uint64_t slashed = 0;
    for (auto s : rec->getSlashes()) {
      std::string why;
      auto out = submit_tx(
        nonce,
        [&](schema::Transaction::Body::Builder b) {
          auto x = b.initSlash();
          x.setTarget(s.getTarget());
          x.setJobId(kj::arrayPtr(job.data(), 32));
          x.setReason(s.getReason());
        },
        {"was already slashed for this job"}, why);
      if (taken("slash", out, why))
        slashed += s.getCut();
    }
    bool minted_ok = false;
    uint64_t minted = 0;
    if (rec->getRewards().size() > 0) {
      std::string why;
      auto out = submit_tx(
        nonce,
        [&](schema::Transaction::Body::Builder b) {
          auto m = b.initMintReward();
          m.setJobId(kj::arrayPtr(job.data(), 32));
          auto p = m.initPayouts(rec->getRewards().size());
          for (unsigned i = 0; i < rec->getRewards().size(); ++i) {
            p[i].setTo(rec->getRewards()[i].getWallet());
            p[i].setAmount(rec->getRewards()[i].getAmount());
          }
        },
        {"rule already_rewarded"}, why);
      minted_ok = taken("reward", out, why);
      if (minted_ok)
        for (auto r : rec->getRewards())
          minted += r.getAmount();
    }
    if (pending)
      return make_error(errc::busy,
                        fmt::format("RateRequest: job {} is rated; some of its transactions got "
                                    "no answer ({}): ask again to send them",
                                    ledger::short_hex(job), pending_why));
    // The result as it came out: the decision with what the chain took.
    auto result = make_envelope<schema::RateResult>([&](schema::RateResult::Builder b) {
      b.setVerdicts(decided->getVerdicts());
      b.setSeed(decided->getSeed());
      b.setSamplesPerTrainer(decided->getSamplesPerTrainer());
      b.setVerifyMs(decided->getVerifyMs());
      b.setReceipts(submitted);
      b.setSlashed(slashed);
      b.setMinted(minted);
      if (minted_ok)
        b.setRewards(rec->getRewards());
    });
    // Kept with the rating: the same request again (its job host restarted
    // before it read this) gets this answer, not a second rating.
    if (auto err = store_record(job, record_with(rec.root(), result, true)))
      log_warning("rater: the result of job {} was not kept: {}", ledger::short_hex(job),
                  describe(err));
    log_info("rater: job {}: {} receipts, {} slashed, {} minted", ledger::short_hex(job),
             submitted, slashed, minted);
    return result;
  }

  /// Who may ask, and for what: the payer its escrow names (or the agent
  /// its terms name), signing for this chain, for a job escrowed and not
  /// yet rated; no amount is the requester's. Answers the escrowed amount;
  /// `escrow_payer`: who locked it. The same session asked again (a job
  /// host that restarted before it read the answer): `replay` is the
  /// result given then, and nothing is rated or moved again.
  caf::expected<uint64_t> admit(schema::RateRequest::Reader req, const hash256& job,
                                const hash256& session, node_id& escrow_payer,
                                std::optional<envelope>& replay) {
    if (req.getReward() != 0)
      return refused(fmt::format("reward is {}: the reward is not the requester's to set "
                                 "(the chain mints {}% of the job's escrow)",
                                 req.getReward(), genesis.reward_percent));
    if (req.getSlashPercent() != 0)
      return refused(fmt::format("slashPercent is {}: the slash is not the requester's to set "
                                 "(the chain cuts {}% of a failed trainer's stake)",
                                 req.getSlashPercent(), genesis.slash_percent));
    if (req.getFraction() != 0 || req.getTarget() != 0)
      return refused("fraction and target are not the requester's to set (the rater checks "
                     "enough steps to catch 10% faked steps with probability 0.99)");
    if (req.getPayer().size() != 32)
      return make_error(errc::invalid_argument, "RateRequest: payer must be 32 bytes");
    node_id payer;
    std::memcpy(payer.bytes.data(), req.getPayer().begin(), 32);
    auto sig = req.getSignature();
    if (sig.size() != 64
        || !verify_signature(payer, rate_request_signing_bytes(chain, req), {sig.begin(), sig.size()}))
      return make_error(errc::bad_signature,
                        fmt::format("RateRequest: the signature is not payer {}'s for this chain "
                                    "({})", payer.short_hex(), ledger::short_hex(chain)));
    auto e = ask("ledger", make_envelope<schema::LedgerQuery>([&](schema::LedgerQuery::Builder b) {
                   b.setEscrow(kj::arrayPtr(job.data(), 32));
                 }));
    if (!e) {
      if (code_of(e.error()) == errc::not_found)
        return refused(fmt::format("job {} has no escrow on the chain (never locked, or "
                                   "already settled): only escrowed jobs are rated",
                                   ledger::short_hex(job)));
      return e.error();
    }
    opened<schema::EscrowInfo> ei{*e};
    if (!ei)
      return ei.error();
    if (ei->getPayer().size() != 32)
      return make_error(errc::malformed_message, "EscrowInfo.payer must be 32 bytes");
    bool is_payer = std::memcmp(ei->getPayer().begin(), payer.bytes.data(), 32) == 0;
    bool is_agent = ei->getAgent().size() == 32
                    && std::memcmp(ei->getAgent().begin(), payer.bytes.data(), 32) == 0;
    if (!is_payer && !is_agent)
      return refused(fmt::format("job {} was escrowed by another payer, not {} (nor names it "
                                 "its agent)",
                                 ledger::short_hex(job), payer.short_hex()));
    std::memcpy(escrow_payer.bytes.data(), ei->getPayer().begin(), 32);
    auto before = rated(job);
    if (!before)
      return before.error();
    if (*before && (*before)->session == session && (*before)->done && (*before)->result) {
      replay = std::move((*before)->result);
      return ei->getAmount();
    }
    if (*before && (*before)->session == session && (*before)->record) {
      // Decided and written, its transactions not all answered (this
      // rater stopped in between): the same ones again, then the result.
      log_info("rater: job {} session {}: the rating was decided before this rater stopped; "
               "submitting its transactions again",
               ledger::short_hex(job), ledger::short_hex(session));
      auto done = complete(job, *(*before)->record);
      if (!done)
        return done.error();
      replay = std::move(*done);
      return ei->getAmount();
    }
    if (*before)
      return make_error(errc::already_exists,
                        fmt::format("RateRequest: job {} was already rated ({}{}); a job is "
                                    "rated once",
                                    ledger::short_hex(job), (*before)->describe(),
                                    (*before)->session == session
                                      ? ", its result not kept: the rater stopped before it ended"
                                      : ""));
    return ei->getAmount();
  }

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds{ctx.lim.request_timeout_ms};
  }

  caf::expected<envelope> ask(const std::string& name, envelope req) {
    auto dst = lookup_blocking(*sys, ctx.directory, name, timeout());
    if (!dst)
      return dst.error();
    return request_blocking(*sys, *dst, std::move(req), timeout());
  }

  caf::expected<std::pair<uint64_t, uint64_t>> account(const node_id& who) { // nonce, stake
    auto r = ask("ledger", make_envelope<schema::LedgerQuery>([&](schema::LedgerQuery::Builder b) {
                   b.setAccount(kj::arrayPtr(who.bytes.data(), 32));
                 }));
    if (!r)
      return r.error();
    opened<schema::AccountInfo> a{*r};
    if (!a)
      return a.error();
    return std::make_pair(a->getNonce(), a->getStake());
  }

  hash256 token{}; ///< the session's token from the rate request being served

  static bool link_error(const caf::error& e) {
    auto c = code_of(e);
    return c == errc::peer_down || c == errc::unknown_node;
  }

  /// Hosts this rater's own directory found out of reach (no link) for a
  /// whole retry in the rating being served: asked once from then on, and
  /// what they did not show names no culprit.
  std::set<node_id> out_of_reach;

  /// Asks a trainer's host, again for up to 30 s while it is out of reach
  /// (a restarted host's links come back within seconds). Out of reach is
  /// this rater's own finding, never an error code the host answered (a
  /// host could answer "peer down" to a challenge it cannot meet): after a
  /// link error the directory is asked whether the link is there, and if
  /// it is, the error is the host's answer.
  /// Whether the directory still has a link to `name`'s host once a lost
  /// link would have reached it (the link layer notices first; CAF closes
  /// a silent link after connection_timeout_ms).
  bool linked_after_settling(const std::string& name) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ctx.lim.connection_timeout_ms + 500));
    return static_cast<bool>(lookup_blocking(*sys, ctx.directory, name, timeout()));
  }

  caf::expected<envelope> ask_trainer(const node_id& host, const envelope& req) {
    auto name = "trainer@" + host.hex();
    auto deadline = clock_type::now() + std::chrono::seconds(30);
    for (;;) {
      auto dst = lookup_blocking(*sys, ctx.directory, name, timeout());
      caf::expected<envelope> r = dst ? request_blocking(*sys, *dst, req, timeout())
                                      : caf::expected<envelope>{dst.error()};
      if (r || !link_error(r.error()))
        return r;
      if (dst && linked_after_settling(name)) {
        // Still linked once the directory has had time to hear of a lost
        // link: ask once more, and a link error again is the host's answer.
        auto again = request_blocking(*sys, *dst, req, timeout());
        if (again || !link_error(again.error()) || linked_after_settling(name))
          return again;
        r = std::move(again);
      }
      if (out_of_reach.count(host))
        return r;
      if (clock_type::now() >= deadline) {
        out_of_reach.insert(host);
        return r;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
    }
  }

  envelope trainer_query(const hash256& session, uint32_t rank,
                         const std::function<void(schema::TrainQuery::Builder)>& f) {
    return make_envelope<schema::TrainQuery>([&](schema::TrainQuery::Builder b) {
      b.setSession(kj::arrayPtr(session.data(), 32));
      b.setRank(rank);
      b.setToken(kj::arrayPtr(token.data(), 32));
      f(b);
    });
  }

  struct verdict {
    bool passed = false;
    std::string why;
    uint64_t units = 0;
    uint32_t challenged = 0;
    double tolerance_used = 0; ///< another environment: the largest share of the tolerance
    /// Failed with no culprit named: the ring's vote on weights split, an
    /// earlier ring's evidence was gone (past its keeping: not told from
    /// one thrown away), the request's ring start is not the one the
    /// trainer signed, or its receipt names another rater (the
    /// coordinator's choice). Unpaid, not slashed, no rating drop.
    bool no_culprit = false;
    bool rating_drops = false; ///< no culprit, but the allocator rates its host down
    uint64_t paid_steps = 0; ///< passed: the steps it is paid for
  };

  /// One ring of the job, as the RateRequest names it.
  struct ring_view {
    hash256 session{}, token{};
    std::vector<node_id> hosts;                   ///< every rank's, in rank order
    std::vector<schema::SessionLog::Reader> logs; ///< the ranks that answered
    bool earlier = false;                         ///< a ring the job re-formed away from
    uint64_t kept = UINT64_MAX;                   ///< earlier: the steps the job kept
    uint64_t first = 0;                           ///< the job's step it started at
  };

  /// One rank's check.
  struct rank_check {
    uint32_t rank = 0;
    node_id host;
    hash256 root{};
    bool signed_by_trainer = false;
    verdict v;
    schema::SessionLog::Reader log;
    const ring_view* ring = nullptr;
  };

  /// Verifies one ring's logs: each signed by its rank's host and hashing
  /// to the trainer's digests; k steps of each re-executed (seeded by the
  /// chain's tip, the session, the roots and a nonce); the weights each
  /// challenged step was computed at voted on by the ring.
  std::vector<rank_check> verify_ring(const ring_view& ring, const hash256& job,
                                      const train::model_spec& spec,
                                      schema::TrainConfig::Reader cfg,
                                      const train::split_data& split, uint32_t k,
                                      const std::string& environment, const hash256& tip,
                                      hash256& seed) {
    const auto n = static_cast<uint32_t>(ring.hosts.size());
    const auto& session = ring.session;
    const auto expected_terms = train::terms_digest(train::terms_of(cfg));
    token = ring.token;
    std::vector<rank_check> out(ring.logs.size());
    std::vector<std::vector<train::digest>> digests(out.size());
    std::vector<uint64_t> first(out.size());
    std::vector<std::string> early(out.size()); // a failure found before sampling
    std::vector<bool> tolerant(out.size(), false); // another numeric environment than this rater's
    std::set<uint32_t> seen;
    // Evidence a trainer no longer has (an earlier ring's, past its
    // keeping) names no culprit; a wrong answer does.
    auto gone = [&](size_t i, std::string why) {
      early[i] = std::move(why);
      out[i].v.no_culprit = ring.earlier;
    };
    for (size_t i = 0; i < out.size(); ++i) {
      auto l = ring.logs[i];
      auto& c = out[i];
      c.ring = &ring;
      c.log = l;
      c.rank = l.getRank();
      if (l.getLogRoot().size() == 32)
        std::memcpy(c.root.data(), l.getLogRoot().begin(), 32);
      if (c.rank >= n || !seen.insert(c.rank).second) {
        early[i] = fmt::format("log {} names rank {}: not a rank of the ring, or one named twice",
                               i, c.rank);
        continue;
      }
      c.host = ring.hosts[c.rank];
      auto r = c.rank;
      auto sig = l.getSignature();
      train::digest terms{};
      if (l.getTerms().size() == 32)
        std::memcpy(terms.data(), l.getTerms().begin(), 32);
      if (l.getTrainer().size() != 32
          || std::memcmp(l.getTrainer().begin(), c.host.bytes.data(), 32) != 0)
        early[i] = "the log is not this rank's host's";
      else if (sig.size() != 64
               || !verify_signature(c.host,
                                    train::worklog_signing_bytes(session, r, n, l.getFirstStep(),
                                                                 l.getSteps(), c.root, terms),
                                    {sig.begin(), sig.size()}))
        early[i] = fmt::format("the log's signature is not the trainer's (for a ring of {} "
                               "ranks from step {})",
                               n, l.getFirstStep());
      else if (l.getFirstStep() != ring.first) {
        // The trainer signed another start than the request claims for
        // its ring: the relay's word against the trainer's, no culprit.
        early[i] = fmt::format("its log starts at step {}, the request's ring at {}",
                               l.getFirstStep(), ring.first);
        out[i].v.no_culprit = true;
      } else if (terms != expected_terms) {
        // It ran other terms (model, data, split, seed, batch) than the
        // request gives: its steps cannot be re-executed against these,
        // and the relay's word is against the trainer's signed one.
        early[i] = "its log was signed for other training terms (model, data, split, seed or "
                   "global batch) than the request's config";
        out[i].v.no_culprit = true;
      }
      if (!early[i].empty())
        continue;
      // Steps from another numeric environment: compared within a
      // tolerance, against the gradient the trainer committed to.
      if (auto why = rater::environment_mismatch(l.getEnvironment().cStr(), environment);
          !why.empty()) {
        tolerant[i] = true;
        log_info("rater: rank {}: {}; comparing its steps within the tolerance (rtol {:.0e}, "
                 "atol {:.0e})",
                 r, why, rater::cross_environment_tolerance.rtol,
                 rater::cross_environment_tolerance.atol);
      }
      if (l.hasReceipt()) {
        auto sr = l.getReceipt();
        auto rc = sr.getReceipt();
        auto ts = sr.getTrainerSignature();
        c.signed_by_trainer =
          rc.getJobId().size() == 32 && std::memcmp(rc.getJobId().begin(), job.data(), 32) == 0
          && rc.getSessionId().size() == 32
          && std::memcmp(rc.getSessionId().begin(), session.data(), 32) == 0
          && ts.size() == 64
          && verify_signature(c.host, ledger::receipt_signing_bytes(rc), {ts.begin(), ts.size()});
      }
      if (!c.signed_by_trainer) {
        early[i] = "no work receipt for this job signed by the trainer";
        continue;
      }
      auto d = ask_trainer(c.host, trainer_query(session, r, [](auto b) { b.setDigests(); }));
      if (!d) {
        gone(i, "its digests are unavailable: " + what_of(d.error()));
        // Out of reach before any step was drawn: nothing to hide yet, so
        // no culprit (a trainer that says it has no log is one).
        if (out_of_reach.count(c.host))
          out[i].v.no_culprit = true;
        continue;
      }
      opened<schema::WorkLogDigests> w{*d};
      if (!w) {
        early[i] = "its digests are malformed";
        continue;
      }
      first[i] = w->getFirstStep();
      if (first[i] != l.getFirstStep()) {
        early[i] = fmt::format("its digests start at step {}, its signed log at {}", first[i],
                               l.getFirstStep());
        continue;
      }
      for (auto x : w->getDigests()) {
        train::digest dg{};
        if (x.size() == 32)
          std::memcpy(dg.data(), x.begin(), 32);
        digests[i].push_back(dg);
      }
      if (digests[i].size() != l.getSteps()
          || ledger::merkle_root(digests[i], "aicon-worklog-node-v1") != c.root)
        early[i] = "its step digests do not hash to the signed log root";
    }

    // The challenges: a seed nobody knew while training.
    std::vector<hash256> roots;
    for (auto& c : out)
      roots.push_back(c.root);
    hash256 nonce;
    randombytes_buf(nonce.data(), 32);
    seed = rater::challenge_seed(tip, session, roots, nonce);

    std::vector<std::string> voted_out(out.size()); // why the vote on some step's weights failed a rank
    // A ring of two on a stream binds what each rank sent its partner to
    // the rank's host (train::contribution_signing_bytes; trainer.cpp).
    const bool signed_pair = n == 2 && (cfg.getTransport() == schema::Transport::STREAM
                                        || cfg.getTransport() == schema::Transport::STREAM_PLAIN);
    for (size_t i = 0; i < out.size(); ++i) {
      auto& v = out[i].v;
      auto r = out[i].rank;
      if (!early[i].empty()) {
        v.why = early[i];
        continue;
      }
      rater::step_context sc{spec, cfg.getSeed(), cfg.getGlobalBatch(), r, n};
      for (auto off : rater::choose_steps(seed, r, digests[i].size(), k)) {
        ++v.challenged;
        auto step = first[i] + off;
        bool within = tolerant[i];
        auto e = ask_trainer(out[i].host, trainer_query(session, r, [step, within](auto b) {
                               b.setEvidence(step);
                               b.setWithGradient(within);
                             }));
        if (!e) {
          v.why = fmt::format("step {}: no evidence: {}", step, what_of(e.error()));
          // A host still out of reach after the retries (crashed during
          // the rating) is not told from one gone quiet on purpose: unpaid
          // either way, slashed for neither, and its rating drops (it
          // failed to show what it owed). A trainer that answers it has no
          // evidence is a culprit.
          if (out_of_reach.count(out[i].host)) {
            v.no_culprit = true;
            v.rating_drops = true;
          } else {
            v.no_culprit = ring.earlier;
          }
          break;
        }
        opened<schema::StepEvidence> ev{*e};
        if (!ev) {
          v.why = fmt::format("step {}: malformed evidence", step);
          break;
        }
        rater::step_claim claim;
        claim.step = step;
        claim.epoch = ev->getEpoch();
        claim.cursor = ev->getCursor();
        auto w = ev->getWeights();
        claim.weights.resize(w.size() / 4);
        std::memcpy(claim.weights.data(), w.begin(), claim.weights.size() * 4);
        for (auto x : ev->getIndices())
          claim.indices.push_back(x);
        claim.committed = digests[i][off];
        std::vector<float> gradient; // the one committed to, once checked
        if (within) {
          auto g = ev->getGradient();
          gradient.resize(g.size() / 4);
          std::memcpy(gradient.data(), g.begin(), gradient.size() * 4);
          double used = 0;
          v.why = rater::check_step_within(sc, split, claim, gradient,
                                           rater::cross_environment_tolerance, &used);
          v.tolerance_used = std::max(v.tolerance_used, used);
        } else {
          v.why = rater::check_step(sc, split, claim, &gradient);
        }
        if (!v.why.empty())
          break;
        // A ring of two on a stream: the gradient it sent its partner,
        // as its host signed it there, must be the one it committed to.
        // (Asked of the partner's ring place: an earlier ring's request may
        // carry no log of a rank it lost.) A partner that shows none is
        // only logged: hiding one shields nobody but a partner in league
        // with it, whose records prove nothing anyway.
        if (signed_pair) {
          auto other = 1 - r;
          auto pc = ask_trainer(ring.hosts[other], trainer_query(session, other, [step](auto b) {
                                  b.setPartnerContribution(step);
                                }));
          opened<schema::PartnerContribution> p{pc ? *pc : envelope{}};
          if (pc && p && p->getHash().size() == 32 && p->getSignature().size() == 64) {
            train::digest h;
            std::memcpy(h.data(), p->getHash().begin(), 32);
            bool by_host = false;
            v.why = rater::check_contribution(session, r, step, gradient, h,
                                              {p->getSignature().begin(), 64}, out[i].host,
                                              &by_host);
            if (!by_host)
              log_warning("rater: rank {} shows a contribution of rank {} at step {} that its "
                          "host did not sign",
                          other, r, step);
            if (!v.why.empty())
              break;
          } else {
            log_warning("rater: rank {} shows no signed contribution of rank {} at step {}: {}",
                        other, r, step, pc ? std::string{"malformed"} : what_of(pc.error()));
          }
        }
        // The weights it showed must be the ring's: every other rank's
        // digest of its weights before this step, and a vote. A rank
        // that does not answer abstains (the majority is of the ring).
        if (n > 1) {
          hash256 mine = train::weights_hash(claim.weights);
          std::vector<std::pair<uint32_t, hash256>> votes{{static_cast<uint32_t>(i), mine}};
          for (size_t o = 0; o < out.size(); ++o) {
            if (o == i || !early[o].empty())
              continue;
            auto d = ask_trainer(out[o].host, trainer_query(session, out[o].rank, [step](auto b) {
                                   b.setWeightsDigest(step);
                                 }));
            if (!d)
              continue; // (its evidence of that step dropped, or its host gone)
            opened<schema::WeightsDigest> wd{*d};
            if (!wd || wd->getDigest().size() != 32)
              continue;
            hash256 theirs;
            std::memcpy(theirs.data(), wd->getDigest().begin(), 32);
            votes.emplace_back(static_cast<uint32_t>(o), theirs);
          }
          auto vote = rater::vote_on_weights(votes, n);
          if (vote.disputed)
            for (auto& [o, _] : votes)
              if (voted_out[o].empty())
                voted_out[o] = fmt::format(
                  "step {}: the ring's ranks hold different weights before it and none hold a "
                  "majority (at most {} of {} agree): no rank's work can be trusted",
                  step, vote.majority, vote.voters);
          for (auto o : vote.odd)
            if (voted_out[o].empty())
              voted_out[o] = fmt::format("step {}: the weights it holds before the step are not "
                                         "the ring's ({} of {} ranks hold other weights)",
                                         step, vote.majority, vote.voters);
          if (!voted_out[i].empty()) {
            v.why = voted_out[i];
            v.no_culprit = true;
            break;
          }
        }
      }
      v.passed = v.why.empty();
      if (tolerant[i])
        log_info("rater: rank {} ({}) {} within tolerance: {} steps, at most {:.2e} of the "
                 "tolerance used",
                 r, out[i].host.short_hex(), v.passed ? "passed" : "failed", v.challenged,
                 v.tolerance_used);
    }

    // A rank another rank's check voted out (its own draws may have missed
    // the step) fails too.
    for (size_t i = 0; i < out.size(); ++i)
      if (out[i].v.passed && !voted_out[i].empty()) {
        out[i].v.passed = false;
        out[i].v.why = voted_out[i];
        out[i].v.no_culprit = true;
      }
    return out;
  }

  caf::expected<envelope> rate(schema::RateRequest::Reader req) {
    auto t0 = clock_type::now();
    out_of_reach.clear();
    if (req.getJob().size() != 32 || req.getSession().size() != 32)
      return make_error(errc::invalid_argument, "RateRequest: job and session must be 32 bytes");
    auto n = req.getRanks().size();
    if (n == 0 || req.getLogs().size() != n)
      return make_error(errc::invalid_argument,
                        fmt::format("RateRequest: {} ranks but {} logs", n, req.getLogs().size()));
    hash256 job, session;
    std::memcpy(job.data(), req.getJob().begin(), 32);
    std::memcpy(session.data(), req.getSession().begin(), 32);
    node_id escrow_payer;
    std::optional<envelope> replay;
    auto escrowed = admit(req, job, session, escrow_payer, replay);
    if (!escrowed)
      return escrowed.error();
    if (replay) {
      log_info("rater: job {} session {} asked again by its payer: the verdict given before, "
               "nothing rated or moved again",
               ledger::short_hex(job), ledger::short_hex(session));
      return std::move(*replay);
    }
    if (req.getToken().size() != 32)
      return make_error(errc::invalid_argument,
                        "RateRequest.token must be 32 bytes: the session's token, without "
                        "which its trainers show the rater nothing");
    std::memcpy(token.data(), req.getToken().begin(), 32);
    auto cfg = req.getConfig();
    auto spec = train::parse_spec(cfg.getModel().cStr());
    if (!spec)
      return spec.error();
    bool from_nodes = cfg.getDataset().size() > 0;
    if (from_nodes && (cfg.getDataset().size() != 32 || cfg.getJob().size() != 32))
      return make_error(errc::invalid_argument,
                        "RateRequest: config.dataset and config.job must be 32 bytes");
    if (!from_nodes && cfg.getDataFile().size() == 0)
      return make_error(errc::invalid_argument,
                        "RateRequest: config names neither a dataset nor a data file");
    if (!from_nodes)
      if (auto err = check_data_file(ctx.data_files, cfg.getDataFile().cStr()))
        return err;
    if (spec->kind == "torch") {
      if (spec->is_asset()) {
        // A model asset: the same file the trainers fetched, by its id.
        auto path = data::fetch_model(data::host_requester(*sys, ctx),
                                      data::hosts_with_role(*sys, ctx, "data_node"),
                                      train::model_id(*spec), ctx.data_dir / "models",
                                      ctx.lim.model_bytes_max, ctx.model_owners);
        if (!path)
          return path.error();
        spec->local = path->string();
      } else if (auto err = check_data_file(ctx.data_files, spec->file)) {
        return err;
      }
      if (auto err = train::load_torch(*spec))
        return err;
    }
    // The numeric environment this rater re-executes steps in.
    std::string environment = spec->torch ? spec->torch->environment() : std::string{};
    caf::expected<data::table> t = make_error(errc::internal, "no data");
    if (from_nodes && spec->regression())
      return make_error(errc::invalid_argument,
                        "a regression model (one output column) trains on a data file's float "
                        "targets; datasets on data nodes carry class labels only");
    if (from_nodes) {
      // The job's dataset, pulled as its trainers did: the keys under the
      // grant naming this rater (signed by the payer or its agent).
      std::vector<node_id> nodes;
      for (auto d : cfg.getDataNodes())
        if (auto id = node_id::from_bytes({d.begin(), d.size()}))
          nodes.push_back(*id);
      std::optional<envelope> grant;
      if (cfg.hasDataGrant())
        grant = copy_envelope<schema::DataGrant>(cfg.getDataGrant());
      hash256 for_job;
      std::memcpy(for_job.data(), cfg.getJob().begin(), 32);
      t = data::fetch_for_job(data::host_requester(*sys, ctx), *ctx.self, nodes,
                              to_hex({cfg.getDataset().begin(), 32}), for_job,
                              grant ? &*grant : nullptr);
      if (!t)
        return make_error(code_of(t.error()), "the job's dataset: " + what_of(t.error()));
    } else {
      data::csv_options csv;
      csv.targets = spec->regression(); // as the trainers read it
      t = data::read_any(cfg.getDataFile().cStr(), std::nullopt, csv, std::nullopt);
      if (!t)
        return t.error();
      if (cfg.getStandardize())
        data::fit_and_apply(*t, data::transform::kind::standardize);
    }
    auto split = train::split_rows(*t, cfg.getTestPercent(), cfg.getSplitSeed());
    auto k = rater::sample_size(cheat_fraction, detection_target);

    // The challenges draw on the chain's tip: a seed nobody knew while training.
    hash256 tip{};
    if (auto r = ask("ledger", make_envelope<schema::LedgerQuery>(
                                 [](schema::LedgerQuery::Builder b) { b.setTip(); }))) {
      opened<schema::TipInfo> ti{*r};
      if (ti && ti->getHash().size() == 32)
        std::memcpy(tip.data(), ti->getHash().begin(), 32);
    }
    // Every ring of the job: the earlier ones (re-formed away from after a
    // lost rank), oldest first, then the last. Each rank is verified in
    // its ring and paid for its part.
    if (req.getEarlier().size() > 64) // train::max_earlier_rings
      return make_error(errc::invalid_argument,
                        fmt::format("RateRequest.earlier: {} rings; at most 64",
                                    req.getEarlier().size()));
    std::vector<ring_view> rings;
    std::set<hash256> sessions{session};
    for (unsigned i = 0; i < req.getEarlier().size(); ++i) {
      auto e = req.getEarlier()[i];
      ring_view rv;
      rv.earlier = true;
      rv.kept = e.getKeptSteps();
      rv.first = e.getFirstStep();
      if (e.getSession().size() != 32 || e.getToken().size() != 32)
        return make_error(errc::invalid_argument,
                          fmt::format("RateRequest.earlier[{}]: session and token must be 32 "
                                      "bytes", i));
      std::memcpy(rv.session.data(), e.getSession().begin(), 32);
      std::memcpy(rv.token.data(), e.getToken().begin(), 32);
      if (!sessions.insert(rv.session).second)
        return make_error(errc::invalid_argument,
                          fmt::format("RateRequest.earlier[{}]: session {} is named twice in "
                                      "the request (each ring is rated once)",
                                      i, ledger::short_hex(rv.session)));
      if (e.getRanks().size() == 0 || e.getLogs().size() > e.getRanks().size())
        return make_error(errc::invalid_argument,
                          fmt::format("RateRequest.earlier[{}]: {} ranks and {} logs", i,
                                      e.getRanks().size(), e.getLogs().size()));
      for (auto h : e.getRanks()) {
        auto id = node_id::from_bytes({h.begin(), h.size()});
        if (!id)
          return make_error(errc::invalid_argument,
                            fmt::format("RateRequest.earlier[{}]: {}", i, what_of(id.error())));
        rv.hosts.push_back(*id);
      }
      for (auto l : e.getLogs())
        rv.logs.push_back(l);
      rings.push_back(std::move(rv));
    }
    {
      ring_view last;
      last.session = session;
      last.token = token;
      for (unsigned r = 0; r < n; ++r) {
        auto host = node_id::from_bytes({req.getRanks()[r].begin(), req.getRanks()[r].size()});
        if (!host)
          return make_error(errc::invalid_argument, fmt::format("rank {}: {}", r, what_of(host.error())));
        last.hosts.push_back(*host);
      }
      for (auto l : req.getLogs())
        last.logs.push_back(l);
      last.first = req.getFirstStep(); // the payer's word; each log's signed start must match
      rings.push_back(std::move(last));
    }
    // The rings ran one after another: an earlier ring's kept steps end
    // at or before the next ring's start, so no step is paid twice.
    for (size_t i = 0; i + 1 < rings.size(); ++i) {
      auto& e = rings[i];
      if (e.kept == 0 || e.kept > rings[i + 1].first || e.first > rings[i + 1].first - e.kept)
        return make_error(errc::invalid_argument,
                          fmt::format("RateRequest.earlier[{}]: {} steps kept from step {} do not "
                                      "end by the next ring's start (step {}): each step is "
                                      "paid once",
                                      i, e.kept, e.first, rings[i + 1].first));
    }
    std::vector<rank_check> checks;
    hash256 seed{}; // the last ring's
    for (auto& ring : rings) {
      auto part = verify_ring(ring, job, *spec, cfg, split, k, environment, tip, seed);
      checks.insert(checks.end(), part.begin(), part.end());
    }
    const auto total = static_cast<unsigned>(checks.size());

    // The decision, taken before anything moves: countersigned receipts
    // for passing work, slashes for failures that are the trainer's own
    // doing, the reward's split. It is written (the job is rated once)
    // before its transactions go out, so a rater stopped in between sends
    // the same ones when the same request comes back.
    rater::wallet payer{}; // the escrow's, also when its agent asked
    std::memcpy(payer.data(), escrow_payer.bytes.data(), 32);
    std::map<rater::wallet, uint64_t> verified_units;
    std::set<node_id> slashed_hosts;
    std::vector<envelope> receipts;
    struct slash_plan {
      node_id target;
      std::string reason;
      uint64_t cut = 0;
    };
    std::vector<slash_plan> slashes;
    for (auto& c : checks) {
      auto& v = c.v;
      auto l = c.log;
      auto r = c.rank;
      const auto& ring_session = c.ring->session;
      if (v.passed) {
        if (!l.hasReceipt()) {
          v.passed = false;
          v.why = "no work receipt in the log (finish without a verifier)";
        } else {
          auto rc = l.getReceipt().getReceipt();
          bool fits = rc.getTrainer().size() == 32
                      && std::memcmp(rc.getTrainer().begin(), c.host.bytes.data(), 32) == 0
                      && rc.getSessionId().size() == 32
                      && std::memcmp(rc.getSessionId().begin(), ring_session.data(), 32) == 0
                      && rc.getJobId().size() == 32
                      && std::memcmp(rc.getJobId().begin(), job.data(), 32) == 0
                      && rc.getLogRoot().size() == 32
                      && std::memcmp(rc.getLogRoot().begin(), c.root.data(), 32) == 0;
          bool ours = rc.getVerifier().size() == 32
                      && std::memcmp(rc.getVerifier().begin(), ctx.self->id().bytes.data(), 32)
                           == 0;
          if (!fits) {
            v.passed = false;
            v.why = "its work receipt does not match its log or session";
          } else if (!ours) {
            // The coordinator named the verifier, not the trainer.
            v.passed = false;
            v.no_culprit = true;
            v.why = "its work receipt names another rater";
          } else {
            // Paid for its part of the job: an earlier ring's steps up to
            // the checkpoint the next ring resumed from (the rest were
            // trained again), its units in proportion.
            v.paid_steps = std::min<uint64_t>(l.getSteps(), c.ring->kept);
            v.units = l.getSteps() > 0
                        ? static_cast<uint64_t>(static_cast<unsigned __int128>(rc.getUnits())
                                                * v.paid_steps / l.getSteps())
                        : 0;
            receipts.push_back(make_envelope<schema::SignedWorkReceipt>(
              [&](schema::SignedWorkReceipt::Builder b) {
                b.setReceipt(rc);
                b.setTrainerSignature(l.getReceipt().getTrainerSignature());
                auto vs = ctx.self->sign(ledger::receipt_signing_bytes(rc));
                b.setVerifierSignature(kj::arrayPtr(vs.data(), vs.size()));
              }));
            rater::wallet w;
            std::memcpy(w.data(), c.host.bytes.data(), 32);
            verified_units[w] += v.units;
          }
        }
      }
      if (!v.passed) {
        log_warning("rater: rank {} of session {} on {} FAILED verification: {}", r,
                    ledger::short_hex(ring_session), c.host.short_hex(), v.why);
        auto acct = account(c.host);
        // What the chain will cut when it applies the slash (its rule).
        uint64_t cut = acct ? static_cast<uint64_t>(static_cast<unsigned __int128>(acct->second)
                                                    * genesis.slash_percent / 100)
                            : 0;
        if (!c.signed_by_trainer)
          log_warning("rater: rank {} on {} is not slashed: {}", r, c.host.short_hex(),
                      "it signed nothing for this job");
        else if (v.no_culprit)
          log_warning("rater: rank {} on {} is not slashed: {}", r, c.host.short_hex(),
                      out_of_reach.count(c.host)
                        ? "its host is out of reach (crashed, or gone quiet when checked)"
                      : c.ring->earlier && v.why.find("the ring's") == std::string::npos
                        ? "an earlier ring's evidence may have expired"
                        : "a vote on weights names no culprit");
        else if (cut > 0 && slashed_hosts.insert(c.host).second) // once per host per job
          slashes.push_back({c.host,
                             fmt::format("failed verification of session {}: {}",
                                         ledger::short_hex(ring_session), v.why),
                             cut});
      }
    }

    // PoV reward, split by score (scores.hpp): 80% to trainers by verified
    // units, 10% to the dataset's owner, 10% to the model's owner, each part
    // only when its asset is registered on the chain and the job pays (its
    // escrow is locked); whoever the payer pays itself earns nothing.
    rater::job_record rec;
    rec.job = job;
    rec.payer = payer;
    rec.trainer_units = verified_units;
    rec.paid = *escrowed; // admit() checked the escrow names this payer
    auto reward = static_cast<uint64_t>(static_cast<unsigned __int128>(*escrowed)
                                        * genesis.reward_percent / 100);
    auto owner_of = [&](capnp::Data::Reader id, const char* kind, rater::id32& asset,
                        rater::wallet& owner) {
      if (id.size() != 32)
        return false;
      std::memcpy(asset.data(), id.begin(), 32);
      auto r = ask("ledger", make_envelope<schema::LedgerQuery>([&](schema::LedgerQuery::Builder b) {
                     b.setAsset(id);
                   }));
      if (!r)
        return false;
      opened<schema::AssetInfo> a{*r};
      if (!a || std::string_view{a->getKind().cStr()} != kind || a->getOwner().size() != 32)
        return false;
      // A model put on the data nodes earns its share only for the owner
      // its id is bound to (not whoever registered the id first).
      if (std::string_view{kind} == "model" && spec->is_asset()) {
        auto who = node_id::from_bytes({a->getOwner().begin(), 32});
        hash256 meta{}, id32{};
        if (a->getMetadataHash().size() == 32)
          std::memcpy(meta.data(), a->getMetadataHash().begin(), 32);
        std::memcpy(id32.data(), id.begin(), 32);
        if (!who || !data::model_asset_owned(id32, *who, meta))
          return false;
      }
      std::memcpy(owner.data(), a->getOwner().begin(), 32);
      return true;
    };
    rec.has_dataset = owner_of(req.getDataset(), "dataset", rec.dataset, rec.dataset_owner);
    rec.has_model = rec.paid > 0 && owner_of(req.getModel(), "model", rec.model, rec.model_owner);
    auto scores = rater::score_epoch({rec});
    std::map<rater::wallet, uint64_t> shares;
    if (reward > 0 && !verified_units.empty()) // no verified work, no proof of value
      shares = rater::split_reward(scores, reward);

    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count();
    log_info("rater: session {}: {} of {} trainers verified ({} steps each re-executed{})",
             ledger::short_hex(session),
             std::count_if(checks.begin(), checks.end(), [](auto& c) { return c.v.passed; }),
             total, k,
             rings.size() > 1 ? fmt::format(", {} rings", rings.size()) : std::string{});
    uint64_t cuts = 0, minting = 0;
    for (auto& x : slashes)
      cuts += x.cut;
    for (auto& [w, a] : shares)
      minting += a;
    auto decided = make_envelope<schema::RateResult>([&](schema::RateResult::Builder b) {
      // The last ring's ranks first (in rank order), then the earlier rings'.
      auto out = b.initVerdicts(total);
      unsigned i = 0;
      for (bool earlier : {false, true})
        for (auto& c : checks) {
          if (c.ring->earlier != earlier)
            continue;
          out[i].setRank(c.rank);
          out[i].setTrainer(kj::arrayPtr(c.host.bytes.data(), 32));
          out[i].setPassed(c.v.passed);
          out[i].setWhy(c.v.why);
          out[i].setUnits(c.v.passed ? c.v.units : 0);
          out[i].setChallenged(c.v.challenged);
          out[i].setSession(kj::arrayPtr(c.ring->session.data(), 32));
          out[i].setPaidSteps(c.v.passed ? c.v.paid_steps : 0);
          ++i;
        }
      b.setSeed(kj::arrayPtr(seed.data(), 32));
      b.setSamplesPerTrainer(k);
      b.setReceipts(static_cast<uint32_t>(receipts.size()));
      b.setSlashed(cuts);
      b.setVerifyMs(static_cast<uint64_t>(ms));
      b.setMinted(minting);
      auto rw = b.initRewards(static_cast<unsigned>(shares.size()));
      unsigned j = 0;
      for (auto& [w, a] : shares) {
        rw[j].setWallet(kj::arrayPtr(w.data(), 32));
        rw[j].setAmount(a);
        ++j;
      }
    });
    auto record = make_envelope<schema::RatingRecord>([&](schema::RatingRecord::Builder b) {
      b.setSession(kj::arrayPtr(session.data(), 32));
      b.setRatedMs(now_ms());
      b.setResult(kj::arrayPtr(decided.bytes().data(), decided.bytes().size()));
      b.setDone(false);
      auto rs = b.initReceipts(static_cast<unsigned>(receipts.size()));
      for (unsigned i = 0; i < receipts.size(); ++i)
        rs.set(i, kj::arrayPtr(receipts[i].bytes().data(), receipts[i].bytes().size()));
      auto ss = b.initSlashes(static_cast<unsigned>(slashes.size()));
      for (unsigned i = 0; i < slashes.size(); ++i) {
        ss[i].setTarget(kj::arrayPtr(slashes[i].target.bytes.data(), 32));
        ss[i].setReason(slashes[i].reason);
        ss[i].setCut(slashes[i].cut);
      }
      auto rw = b.initRewards(static_cast<unsigned>(shares.size()));
      unsigned j = 0;
      for (auto& [w, a] : shares) {
        rw[j].setWallet(kj::arrayPtr(w.data(), 32));
        rw[j].setAmount(a);
        ++j;
      }
    });
    // Rated once: written before any value moves, so a second request for
    // this job is refused (another session) or completes this one (the
    // same), even while this one's transactions are pending.
    if (auto err = store_record(job, record))
      return err;

    // Ratings: the allocator on this host (if any) hears every outcome.
    {
      std::vector<std::string> passed_hex, failed_hex;
      for (auto& c : checks)
        if (c.v.passed)
          passed_hex.push_back(c.host.hex());
        else if (c.signed_by_trainer && (!c.v.no_culprit || c.v.rating_drops))
          failed_hex.push_back(c.host.hex()); // nobody's drops for a log it never signed, or
                                              // with no culprit (but one gone quiet when checked)
      if (auto a = lookup_blocking(*sys, ctx.directory, "allocator", timeout()))
        caf::anon_send(*a, rating_atom::value, passed_hex, failed_hex);
    }
    if (ctx.lim.fault_rater_crash_after_deciding) {
      // Test-only fault of this host's own config ([faults]): the process
      // dies with the decision written and none of its transactions sent.
      log_warning("rater: [faults] rater_crash_after_deciding: exiting now");
      std::_Exit(89);
    }
    return complete(job, record);
  }
};

using rater_actor = caf::stateful_actor<rater_state>;

caf::behavior rater_role(rater_actor* self, role_context ctx, ledger::genesis_config genesis,
                         std::shared_ptr<store::environment> env) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.chain = ledger::chain_id(genesis);
  st.genesis = std::move(genesis);
  st.env = std::move(env);
  st.sys = &self->system();
  st.table = std::make_unique<message_table>("rater", rater_access);
  st.table->on<schema::RateRequest>([self](schema::RateRequest::Reader r) -> caf::result<envelope> {
    auto out = self->state.rate(r);
    if (!out)
      return out.error();
    return *out;
  });
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
  };
}

} // namespace

caf::expected<caf::actor> spawn_rater(caf::actor_system& sys, const role_context& ctx) {
  if (ctx.genesis.empty())
    return make_error(errc::config_invalid,
                      "the rater needs [chain] genesis in host.toml: the chain's rules set "
                      "what it mints and slashes, and payers sign for that chain");
  auto g = ledger::load_genesis(ctx.genesis);
  if (!g)
    return g.error();
  if (!g->authorities.count(ctx.self->id()))
    return make_error(errc::config_invalid,
                      fmt::format("the rater's host {} is not an authority of its genesis: its "
                                  "receipts, mints and slashes would all be refused",
                                  ctx.self->id().short_hex()));
  auto hs = open_host_store(ctx);
  if (!hs)
    return hs.error();
  // A rating re-executes a sample of every rank's steps, fetches their
  // evidence and waits on trainers out of reach and on the chain: it may
  // take longer than request_timeout_ms, which the gatekeeper would
  // otherwise give it (the job role asks with 10 minutes).
  register_answer_deadline(capnp::typeId<schema::RateRequest>(), std::chrono::minutes(10));
  // Detached: a rating re-executes steps and waits on trainers and the chain.
  return sys.spawn<caf::detached>(rater_role, ctx, std::move(*g), std::move(hs->env));
}

std::vector<uint8_t> rate_request_signing_bytes(const std::array<uint8_t, 32>& chain,
                                                schema::RateRequest::Reader req) {
  return request_signing_bytes<schema::RateRequest>("aicon-rate-v1", chain, req);
}

envelope sign_rate_request(const identity& payer, const std::array<uint8_t, 32>& chain,
                           schema::RateRequest::Reader req) {
  capnp::MallocMessageBuilder tmp;
  tmp.setRoot(req);
  auto t = tmp.getRoot<schema::RateRequest>();
  t.setPayer(kj::arrayPtr(payer.id().bytes.data(), 32));
  auto sig = payer.sign(rate_request_signing_bytes(chain, t.asReader()));
  t.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  return copy_envelope<schema::RateRequest>(t.asReader());
}

} // namespace aicon
