#include "actors/job/job_role.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include <caf/all.hpp>
#include <sodium.h>
#include <fmt/format.h>

#include "actors/data_node/ingest.hpp"
#include "actors/data_node/model_store.hpp"
#include "actors/data_node/remote.hpp"
#include "actors/job/economy.hpp"
#include "actors/job/job.hpp"
#include "actors/ledger/hashing.hpp"
#include "actors/ledger/ledger.hpp"
#include "actors/trainer/model.hpp"
#include "actors/trainer/torch_model.hpp"
#include "actors/trainer/work.hpp"
#include "runtime/atoms.hpp"
#include "runtime/directory.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "runtime/role.hpp"
#include "schemas/chain.capnp.h"
#include "schemas/data.capnp.h"
#include "schemas/rater.capnp.h"
#include "schemas/trainer.capnp.h"

namespace aicon {

namespace {

using hash256 = std::array<uint8_t, 32>;
using namespace std::chrono_literals;

uint64_t wall_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
}

std::vector<uint8_t> submit_signing_bytes(schema::JobSubmit::Reader s) {
  capnp::MallocMessageBuilder copy;
  copy.setRoot(s);
  auto b = copy.getRoot<schema::JobSubmit>();
  b.disownSignature();
  return ledger::tagged_canonical("aicon-job-v1", b.asReader());
}

std::vector<uint8_t> query_signing_bytes(schema::JobQuery::Reader q) {
  capnp::MallocMessageBuilder copy;
  copy.setRoot(q);
  auto b = copy.getRoot<schema::JobQuery>();
  b.disownSignature();
  return ledger::tagged_canonical("aicon-jobq-v1", b.asReader());
}

caf::error bad_field(const char* field, const std::string& why) {
  return make_error(errc::invalid_argument, fmt::format("spec.{}: {}", field, why));
}

bool final_phase(const std::string& phase) {
  return phase == "done" || phase == "failed" || phase == "cancelled";
}

/// One job of this host: its signed submission and what it has come to.
/// Guarded by registry::mtx.
struct job_entry {
  envelope submit; ///< JobSubmit
  hash256 id{};
  node_id payer;
  std::string phase = "queued", error, verified;
  uint64_t step = 0, steps = 0, budget = 0, paid_trainers = 0, refunded = 0;
  uint64_t created_ms = 0, finished_ms = 0;
  double loss = 0, samples_per_s = 0, accuracy = 0, test_loss = 0, r2 = 0;
  bool regression = false;
  uint32_t trainers = 0;
  hash256 session{};
  hash256 model_asset{}; ///< zero until registered
  std::vector<float> losses; ///< per step of this run (the loss curve; at most 1M kept)
  std::vector<std::string> events;
  std::vector<uint8_t> checkpoint;  ///< the last one taken
  std::vector<uint8_t> torchscript; ///< a job on a model asset: the trained model, once written
  std::optional<train::settle_plan> plan; ///< decided and written before it is submitted
  std::string plan_ended;               ///< the phase once it is settled
  /// The rating asked for, written before it is asked (JobRecord.verification).
  struct verification {
    envelope request; ///< RateRequest
    node_id rater;
    uint64_t steps = 0;
    std::map<node_id, uint64_t> lease_prices;
    std::string ended;
  };
  std::optional<verification> pending_rating;
  hash256 alloc_token{};            ///< kept across restarts
  hash256 ring_session{}, ring_token{}; ///< the last ring formed
  std::vector<node_id> ring_hosts;      ///< its ranks' hosts (empty: none yet)
  uint64_t ring_from = 0;               ///< the step it started at
  std::optional<node_id> verifier;      ///< the rater its rings finish for
  std::vector<train::earlier_ring> earlier; ///< rings left, to be rated with the job
  std::shared_ptr<std::atomic<bool>> cancel = std::make_shared<std::atomic<bool>>(false);
  bool payer_cancelled = false; ///< the payer asked (kept in LMDB; a stopping host's cancel is not)
  std::thread runner;
};

/// Shared by the role and its jobs' threads.
struct registry {
  std::mutex mtx;
  std::map<hash256, std::shared_ptr<job_entry>> jobs;
  std::shared_ptr<store::environment> env;
  std::shared_ptr<ledger::chain> chain; ///< null when the host keeps no chain
};

void fill_info(schema::JobInfo::Builder b, const job_entry& j, uint32_t since, bool with_events,
               uint32_t losses_since = UINT32_MAX) {
  b.setJobId(kj::arrayPtr(j.id.data(), 32));
  b.setPayer(kj::arrayPtr(j.payer.bytes.data(), 32));
  b.setPhase(j.phase);
  b.setError(j.error);
  b.setStep(j.step);
  b.setSteps(j.steps);
  b.setLoss(j.loss);
  b.setSamplesPerS(j.samples_per_s);
  b.setTrainers(j.trainers);
  b.setAccuracy(j.accuracy);
  b.setTestLoss(j.test_loss);
  b.setRegression(j.regression);
  b.setR2(j.r2);
  opened<schema::JobSubmit> s{j.submit};
  b.setModel(s->getSpec().getModel());
  b.setBudget(j.budget);
  b.setPaidTrainers(j.paid_trainers);
  b.setRefunded(j.refunded);
  b.setSession(kj::arrayPtr(j.session.data(), 32));
  b.setEventCount(static_cast<uint32_t>(j.events.size()));
  b.setCreatedMs(j.created_ms);
  b.setFinishedMs(j.finished_ms);
  b.setVerified(j.verified);
  if (j.model_asset != hash256{})
    b.setModelAsset(kj::arrayPtr(j.model_asset.data(), 32));
  if (losses_since < j.losses.size()) {
    auto n = std::min<size_t>(j.losses.size() - losses_since, 100000); // bounded per answer
    auto l = b.initLosses(static_cast<unsigned>(n));
    for (size_t i = 0; i < n; ++i)
      l.set(static_cast<unsigned>(i), j.losses[losses_since + i]);
    b.setLossesFrom(losses_since);
  }
  if (with_events && since < j.events.size()) {
    auto ev = b.initEvents(static_cast<unsigned>(j.events.size() - since));
    for (size_t i = since; i < j.events.size(); ++i)
      ev.set(static_cast<unsigned>(i - since), j.events[i]);
  }
}

envelope info_of(const job_entry& j, uint32_t since = 0, bool with_events = false,
                 uint32_t losses_since = UINT32_MAX) {
  return make_envelope<schema::JobInfo>(
    [&](schema::JobInfo::Builder b) { fill_info(b, j, since, with_events, losses_since); });
}

/// Writes `j` (under reg.mtx) to the host's LMDB: the submission, its info
/// with every event, the last checkpoint and the allocation token.
caf::error persist(registry& reg, const job_entry& j) {
  auto rec = make_envelope<schema::JobRecord>([&](schema::JobRecord::Builder b) {
    b.setSubmit(opened<schema::JobSubmit>{j.submit}.root());
    fill_info(b.initInfo(), j, 0, true);
    b.setCheckpoint(kj::arrayPtr(j.checkpoint.data(), j.checkpoint.size()));
    b.setAllocToken(kj::arrayPtr(j.alloc_token.data(), 32));
    b.setCancelled(j.payer_cancelled);
    if (!j.torchscript.empty())
      b.setTorchscript(kj::arrayPtr(j.torchscript.data(), j.torchscript.size()));
    if (j.plan) {
      auto p = b.initSettle();
      auto out = p.initPayouts(static_cast<unsigned>(j.plan->payouts.size()));
      for (unsigned i = 0; i < j.plan->payouts.size(); ++i) {
        out[i].setTo(kj::arrayPtr(j.plan->payouts[i].first.bytes.data(), 32));
        out[i].setAmount(j.plan->payouts[i].second);
      }
      p.setTrainers(j.plan->trainers);
      p.setDataset(j.plan->dataset);
      p.setModel(j.plan->model);
      p.setRefund(j.plan->refund);
      p.setEnded(j.plan_ended);
    }
    if (j.pending_rating) {
      auto& v = *j.pending_rating;
      auto p = b.initVerification();
      p.setRequest(kj::arrayPtr(v.request.bytes().data(), v.request.bytes().size()));
      p.setRater(kj::arrayPtr(v.rater.bytes.data(), 32));
      p.setSteps(v.steps);
      auto lp = p.initLeasePrices(static_cast<unsigned>(v.lease_prices.size()));
      unsigned i = 0;
      for (auto& [host, price] : v.lease_prices) {
        lp[i].setHost(kj::arrayPtr(host.bytes.data(), 32));
        lp[i].setPrice(price);
        ++i;
      }
      p.setEnded(v.ended);
    }
    if (!j.ring_hosts.empty()) {
      b.setRingSession(kj::arrayPtr(j.ring_session.data(), 32));
      b.setRingToken(kj::arrayPtr(j.ring_token.data(), 32));
      auto hs = b.initRingHosts(static_cast<unsigned>(j.ring_hosts.size()));
      for (unsigned i = 0; i < j.ring_hosts.size(); ++i)
        hs.set(i, kj::arrayPtr(j.ring_hosts[i].bytes.data(), 32));
      b.setRingFrom(j.ring_from);
    }
    if (j.verifier)
      b.setVerifier(kj::arrayPtr(j.verifier->bytes.data(), 32));
    auto earlier = b.initEarlier(static_cast<unsigned>(j.earlier.size()));
    for (unsigned i = 0; i < j.earlier.size(); ++i)
      earlier.setWithCaveats(
        i, opened<schema::EarlierRing>{train::earlier_ring_envelope(j.earlier[i])}.root());
  });
  auto t = store::txn::begin(*reg.env, true);
  if (!t)
    return t.error();
  if (auto err = t->put(store::db::jobs, {j.id.data(), 32}, rec.bytes()))
    return err;
  return t->commit();
}

struct job_role_state {
  role_context ctx;
  std::shared_ptr<registry> reg = std::make_shared<registry>();
  std::unique_ptr<message_table> table;
  caf::actor_system* sys = nullptr;
  static inline const char* name = "aicon.job";

  ~job_role_state() {
    stopping = true;
    // Stop every job after its current step; what it reached stays in LMDB
    // (a job stopped with its host resumes when the host comes back).
    std::vector<std::shared_ptr<job_entry>> all;
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      for (auto& [_, j] : reg->jobs)
        all.push_back(j);
    }
    for (auto& j : all)
      j->cancel->store(true);
    for (auto& j : all)
      if (j->runner.joinable())
        j->runner.join();
  }

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds{ctx.lim.request_timeout_ms};
  }

  data::requester requester() const {
    auto* s = sys;
    auto dir = ctx.directory;
    auto t = timeout();
    return data::requester{
      [s, dir, t](const std::string& n) { return lookup_blocking(*s, dir, n, t); },
      [s](const caf::actor& dst, envelope req, std::chrono::milliseconds to) {
        return request_blocking(*s, dst, std::move(req), to);
      },
      t};
  }

  /// Hosts (this one first, then its up peers) that run `role`.
  std::vector<node_id> hosts_with(const std::string& role) const {
    return data::hosts_with_role(*sys, ctx, role);
  }

  /// The up hosts with `role`, once there is one that `wanted` takes
  /// (default: any), for up to 30 s (a host that just started, resuming its
  /// jobs, links to its peers first).
  std::vector<node_id> wait_hosts_with(
    const std::string& role, const std::function<bool(const node_id&)>& wanted = {}) const {
    for (int i = 0; i < 60; ++i) {
      auto out = hosts_with(role);
      if (stopping || std::any_of(out.begin(), out.end(), [&](const node_id& h) {
            return !wanted || wanted(h);
          }))
        return out;
      std::this_thread::sleep_for(500ms);
    }
    return {};
  }

  caf::expected<caf::actor> role_at(const std::string& role, const node_id& host) const {
    if (host == ctx.self->id())
      return lookup_blocking(*sys, ctx.directory, role, timeout());
    return lookup_blocking(*sys, ctx.directory, role + "@" + host.hex(), timeout());
  }

  // ---- the lifecycle, on the job's own thread ------------------------------

  void event(job_entry& j, std::string what) {
    log_info("job {}: {}", ledger::short_hex(j.id), what);
    std::lock_guard<std::mutex> lk{reg->mtx};
    j.events.push_back(std::move(what));
  }

  void set_phase(job_entry& j, const std::string& phase, const std::string& error = {}) {
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.phase = phase;
      if (!error.empty())
        j.error = error;
      if (final_phase(phase))
        j.finished_ms = wall_ms();
      if (auto err = persist(*reg, j))
        log_warning("job {}: not written to the store: {}", ledger::short_hex(j.id), describe(err));
    }
    log_info("job {}: {}{}", ledger::short_hex(j.id), phase, error.empty() ? "" : ": " + error);
  }

  /// Signs `make(nonce)` as this host (the escrow's agent), submits it to a
  /// block generator and waits until the chain has it (its nonce applied).
  caf::error agent_tx(const std::function<envelope(uint64_t)>& make) {
    auto acct = reg->chain->account_of(ctx.self->id());
    if (!acct)
      return acct.error();
    auto nonce = acct->nonce + 1;
    auto tx = make(nonce);
    caf::error last = make_error(errc::not_found, "no block generator answers");
    for (auto& h : hosts_with("block_generator")) {
      auto bg = role_at("block_generator", h);
      if (!bg)
        continue;
      auto ack = request_blocking(*sys, *bg, tx, timeout());
      if (ack) {
        last = caf::none;
        break;
      }
      last = ack.error();
    }
    if (last)
      return last;
    for (int i = 0; i < 600; ++i) {
      auto a = reg->chain->account_of(ctx.self->id());
      if (a && a->nonce >= nonce)
        return caf::none;
      std::this_thread::sleep_for(100ms);
    }
    return make_error(errc::timeout, fmt::format("transaction {} of this job host was not final "
                                                 "within 60 s",
                                                 nonce));
  }

  /// The escrow of job `id` with its terms, as this host's chain has it.
  caf::expected<ledger::escrow_entry> escrow(const hash256& id) const {
    if (!reg->chain)
      return make_error(errc::forbidden, "a job with a budget needs a job host that keeps the "
                                         "chain ([chain] genesis, the ledger role)");
    auto e = reg->chain->escrow_of(id);
    if (!e)
      return e.error();
    if (!*e)
      return make_error(errc::forbidden,
                        fmt::format("job {} has no escrow on this host's chain (lock the budget "
                                    "first, naming this host its agent)",
                                    ledger::short_hex(id)));
    if ((*e)->settled)
      return make_error(errc::forbidden,
                        fmt::format("job {}'s escrow is settled already: lock a new budget for "
                                    "a new job",
                                    ledger::short_hex(id)));
    return **e;
  }

  /// Whether job `id`'s escrow is settled (or gone) on this host's chain:
  /// nothing is left to settle or refund.
  bool escrow_settled(const hash256& id) const {
    auto e = reg->chain->escrow_of(id);
    return e && (!*e || (*e)->settled);
  }

  /// Refunds a budgeted job's whole escrow (nothing earned, or cancelled).
  void refund(job_entry& j) {
    if (j.budget == 0 || !reg->chain)
      return;
    auto chain_id = reg->chain->chain_id();
    train::settle_plan none;
    // Retried: right after a restart this host's view of the chain may lag
    // (a stale nonce) or its block generator may not be linked yet; an
    // escrow already settled (a settlement that went final before a crash)
    // needs no refund.
    caf::error err = make_error(errc::internal, "not attempted");
    // (At least one attempt, also on a stopping host.)
    for (int attempt = 0; attempt < 5 && (attempt == 0 || !stopping); ++attempt) {
      if (attempt > 0)
        std::this_thread::sleep_for(2s);
      if (escrow_settled(j.id)) {
        event(j, "the escrow is settled already: nothing to refund");
        return;
      }
      err = agent_tx([&](uint64_t n) {
        return train::make_settle(*ctx.self, chain_id, n, j.id, none);
      });
      if (!err)
        break;
      event(j, fmt::format("refund attempt {} failed: {}", attempt + 1, describe(err)));
    }
    if (err)
      event(j, "refund failed: " + describe(err));
    else {
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.refunded = j.budget;
      j.events.push_back(fmt::format("escrow of {} refunded to the payer", j.budget));
    }
  }

  /// A budgeted job that cannot go on: its escrow back to the payer, then
  /// the final phase (so whoever waits sees the refund with it).
  void fail_and_refund(job_entry& j, const std::string& why) {
    refund(j);
    set_phase(j, "failed", why);
  }

  void run(std::shared_ptr<job_entry> jp) {
    auto& j = *jp;
    if (j.plan) {
      // Trained, verified and its settlement decided before this host
      // restarted: that settlement, not another run.
      event(j, "job host restarted during settlement: submitting the written plan");
      return settle_and_register(j);
    }
    if (j.payer_cancelled) {
      // Cancelled by its payer before this host restarted: it ends here,
      // with whatever the escrow still holds back to the payer (a settle
      // that was already final stands; the chain refuses a second).
      refund(j);
      return set_phase(j, "cancelled", "cancelled by its payer before the job host restarted");
    }
    opened<schema::JobSubmit> sub{j.submit};
    auto spec = sub->getSpec();
    train::job_options o;
    o.model = spec.getModel();
    o.global_batch = spec.getBatch();
    o.lr = spec.getLr();
    o.momentum = spec.getMomentum();
    o.optimizer = spec.getOptimizer() == schema::Optimizer::ADAMW ? "adamw" : "sgd";
    o.test_percent = spec.getHoldoutPercent();
    o.seed = spec.getSeed();
    o.transport = spec.getTransport();
    o.weight_decay = spec.getWeightDecay();
    o.checkpoint_every = spec.getCheckpointEvery();
    o.chunk_bytes = spec.getChunkBytes();
    o.ring_timeout_ms = spec.getRingTimeoutMs();
    o.job = j.id;
    o.cancel = j.cancel;
    // The payer's cancel after some steps: those steps are verified and
    // paid, the rest refunded; a stopping host's is no cancel (resumed).
    o.finish_on_cancel = [this] { return !stopping.load(); };
    o.payer = ctx.self.get(); // the agent signs asks and grants for the payer
    if (spec.getStoredLeases())
      o.payer = nullptr; // the trainers fetch under the operator's leases: no grants
    auto k = spec.getTrainers();
    uint64_t rows = 0;
    if (spec.getDataset().size() == 32) {
      o.dataset = to_hex({spec.getDataset().begin(), 32});
      o.data_nodes = wait_hosts_with("data_node");
      auto found = data::find_replicas(requester(), o.data_nodes, o.dataset);
      if (!found)
        return fail_and_refund(j, "the dataset: " + describe(found.error()));
      rows = opened<schema::DatasetManifest>{found->second}->getRows();
    } else {
      o.data_file = spec.getDataFile();
      // A registered data file is an asset too: its owner is paid its price.
      if (std::filesystem::is_regular_file(o.data_file))
        if (auto id = train::file_asset_id(o.data_file))
          o.dataset_asset = *id;
      if (spec.getEpochs() > 0) {
        data::csv_options csv;
        auto t = data::read_any(o.data_file, std::nullopt, csv, std::nullopt);
        if (!t)
          return fail_and_refund(j, "epochs: the data file's rows: " + describe(t.error()));
        rows = t->rows;
      }
    }
    o.steps = spec.getSteps();
    if (spec.getEpochs() > 0) {
      auto train_rows = rows - rows * o.test_percent / 100;
      o.steps = std::max<uint64_t>(
        1, static_cast<uint64_t>(spec.getEpochs() * static_cast<double>(train_rows) / o.global_batch));
    }
    std::optional<ledger::escrow_entry> esc;
    if (j.budget > 0) {
      auto e = escrow(j.id);
      if (!e)
        return fail_and_refund(j, describe(e.error()));
      esc = *e;
      auto allocators = wait_hosts_with("allocator");
      if (allocators.empty()) {
        return fail_and_refund(j, "no allocator answers");
      }
      o.allocator = allocators[0];
      o.trainers = k;
      o.max_price = esc->terms->max_price;
      o.priority = spec.getPriority();
      o.chain = reg->chain->chain_id();
      o.alloc_token = j.alloc_token;
      if (spec.getVerify()) {
        std::optional<node_id> before;
        {
          std::lock_guard<std::mutex> lk{reg->mtx};
          before = j.verifier;
        }
        // The rater chosen before a restart is waited for (its link comes
        // back in its turn); any rater does for a new job.
        auto raters = before ? wait_hosts_with("rater", [&](const node_id& h) { return h == *before; })
                             : wait_hosts_with("rater");
        if (before && raters.empty())
          raters = wait_hosts_with("rater");
        if (raters.empty()) {
          return fail_and_refund(j, "verification asked for, but no rater answers");
        }
        // The rater chosen before a restart, while it answers: the rings
        // already finished name it in their receipts.
        std::lock_guard<std::mutex> lk{reg->mtx};
        if (!j.verifier || std::find(raters.begin(), raters.end(), *j.verifier) == raters.end())
          j.verifier = raters[0];
        o.verifier = *j.verifier;
        // A ring the job leaves is rated at its end, which comes before
        // the escrow's deadline (after it, only a refund): its trainers
        // keep the evidence that long.
        if (esc->terms && esc->terms->deadline_ms > wall_ms())
          o.earlier_keep_ms = esc->terms->deadline_ms - wall_ms();
      }
      if (j.pending_rating) {
        // Trained, and its rating asked for, before this host restarted:
        // the same request to the same rater, not another run.
        event(j, "job host restarted during verification: asking rater " +
                   j.pending_rating->rater.short_hex() + " the same again");
        return verify_and_settle(j, o, *esc, *j.pending_rating);
      }
    } else {
      // An unpaid job on the payer's dataset: only the trainer hosts it
      // granted the keys to (waited for: after a restart the links come
      // back one by one).
      for (auto g : sub->getGrants()) {
        auto env = envelope_from_bytes({g.begin(), g.size()}, capnp::typeId<schema::DataGrant>());
        opened<schema::DataGrant> dg{env};
        if (!dg)
          continue; // (checked at submission)
        if (auto who = node_id::from_bytes({dg->getTrainer().begin(), dg->getTrainer().size()}))
          o.signed_grants.insert_or_assign(*who, env);
      }
      // The payer may name the trainer hosts (and stand-bys) itself.
      std::set<node_id> named, spares;
      for (auto h : spec.getHosts())
        if (auto id = node_id::from_bytes({h.begin(), h.size()}))
          named.insert(*id);
      for (auto h : spec.getSpares())
        if (auto id = node_id::from_bytes({h.begin(), h.size()}))
          spares.insert(*id);
      auto wanted = [&](const node_id& h) {
        return (o.signed_grants.empty() || o.signed_grants.count(h) > 0)
               && (named.empty() || named.count(h) > 0);
      };
      auto trainers = wait_hosts_with("trainer", wanted);
      std::erase_if(trainers, [&](const node_id& h) { return !wanted(h); });
      // Named hosts come back one by one after a restart: wait a while for
      // all of them before going on with those that answer.
      for (int i = 0; i < 20 && !named.empty() && trainers.size() < named.size() && !stopping; ++i) {
        std::this_thread::sleep_for(500ms);
        trainers = hosts_with("trainer");
        std::erase_if(trainers, [&](const node_id& h) { return !wanted(h); });
      }
      if (trainers.empty())
        return fail_and_refund(j, !named.empty() ? "none of the trainer hosts the job names answers"
                                  : o.signed_grants.empty()
                                    ? "no host with the trainer role answers"
                                    : "none of the trainer hosts the grants name answers");
      o.spare_hosts.assign(spares.begin(), spares.end());
      o.hosts = trainers;
      for (uint32_t i = 0; i < k; ++i)
        o.per_host[trainers[i % trainers.size()]] += 1;
      if (k < trainers.size())
        o.hosts.resize(k);
    }
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.steps = o.steps;
      o.resume = j.checkpoint;
    }
    // A ring of this job from before a restart still holds its trainers'
    // slots (its token proves the job host is its coordinator). With a
    // verifier and steps of it kept (up to the checkpoint resumed from), its
    // ranks finish: they sign their logs and receipts and the kept steps
    // are rated and paid with the job's. Otherwise they are dropped.
    std::vector<node_id> stale;
    hash256 stale_session{}, stale_token{};
    uint64_t stale_from = 0, kept_to = 0;
    size_t kept_rings = 0;
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      stale = j.ring_hosts;
      stale_session = j.ring_session;
      stale_token = j.ring_token;
      stale_from = j.ring_from;
      kept_rings = j.earlier.size();
      if (!j.checkpoint.empty())
        if (auto cp = train::parse_checkpoint(j.checkpoint, "the job's checkpoint"))
          kept_to = cp->step;
      if (std::any_of(j.earlier.begin(), j.earlier.end(),
                      [&](auto& e) { return e.session == stale_session; }))
        stale.clear(); // finished and kept already: nothing to drop or finish
    }
    bool finish = o.verifier && kept_to > stale_from && kept_rings < train::max_earlier_rings;
    train::earlier_ring left;
    for (uint32_t rank = 0; rank < stale.size(); ++rank) {
      auto t = role_at("trainer", stale[rank]);
      if (!t)
        continue;
      auto ended = request_blocking(*sys, *t, make_envelope<schema::TrainQuery>([&](auto q) {
                                      q.setSession(kj::arrayPtr(stale_session.data(), 32));
                                      q.setRank(rank);
                                      q.setToken(kj::arrayPtr(stale_token.data(), 32));
                                      if (finish) {
                                        q.setFinish();
                                        q.setVerifier(kj::arrayPtr(o.verifier->bytes.data(), 32));
                                        q.setKeepMs(o.earlier_keep_ms);
                                      } else {
                                        q.setDrop();
                                      }
                                    }),
                                    timeout());
      bool logged = finish && ended && opened<schema::SessionLog>{*ended};
      if (logged)
        left.logs.push_back(*ended);
      event(j, fmt::format("the ring from before the restart: rank {} on {} {}", rank,
                           stale[rank].short_hex(),
                           logged  ? "finished, its log kept for the rater"
                           : ended ? "dropped"
                                   : "not reached: " + what_of(ended.error())));
    }
    if (!left.logs.empty()) {
      left.session = stale_session;
      left.token = stale_token;
      left.rank_hosts = stale;
      left.first_step = stale_from;
      left.kept_steps = kept_to - stale_from;
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.earlier.push_back(std::move(left));
      j.ring_hosts.clear(); // finished: not to be finished again
      if (auto err = persist(*reg, j))
        log_warning("job {}: not written: {}", ledger::short_hex(j.id), describe(err));
    }
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      o.earlier = j.earlier;
    }
    o.on_ring = [this, jp](const hash256& session, const hash256& token,
                           const std::vector<node_id>& hosts, uint64_t from) {
      std::lock_guard<std::mutex> lk{reg->mtx};
      jp->ring_session = session;
      jp->ring_token = token;
      jp->ring_hosts = hosts;
      jp->ring_from = from;
      if (auto err = persist(*reg, *jp))
        log_warning("job {}: ring not written: {}", ledger::short_hex(jp->id), describe(err));
    };
    o.on_earlier = [this, jp](const train::earlier_ring& e) {
      std::lock_guard<std::mutex> lk{reg->mtx};
      jp->earlier.push_back(e);
      // Finished: a restart before the next ring forms must not take it
      // for a ring to finish again (one write with the ring kept).
      if (jp->ring_session == e.session)
        jp->ring_hosts.clear();
      if (auto err = persist(*reg, *jp))
        log_warning("job {}: an earlier ring not written: {}", ledger::short_hex(jp->id),
                    describe(err));
    };
    o.on_checkpoint = [this, jp](const std::vector<uint8_t>& cp) {
      std::lock_guard<std::mutex> lk{reg->mtx};
      jp->checkpoint = cp;
      if (auto err = persist(*reg, *jp))
        log_warning("job {}: checkpoint not written: {}", ledger::short_hex(jp->id), describe(err));
    };
    set_phase(j, "training");
    auto r = train::run_job(train::job_link{requester(), *ctx.self}, o,
                            [this, jp](const train::step_report& rep) {
                              std::lock_guard<std::mutex> lk{reg->mtx};
                              jp->step = rep.step + 1;
                              jp->loss = rep.loss;
                              jp->samples_per_s = rep.samples_per_s;
                              jp->trainers = rep.trainers;
                              if (rep.step == jp->losses.size() && jp->losses.size() < 1'000'000)
                                jp->losses.push_back(static_cast<float>(rep.loss));
                            });
    if (!r) {
      bool cancelled = code_of(r.error()) == errc::cancelled;
      if (cancelled && stopping)
        return; // the host is stopping: resumed from the checkpoint when it is back
      refund(j);
      return set_phase(j, cancelled ? "cancelled" : "failed", what_of(r.error()));
    }
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.accuracy = r->accuracy;
      j.test_loss = r->test_loss;
      j.regression = r->regression;
      j.r2 = r->r2;
      j.session = r->session;
      j.step = r->steps;
      for (auto& e : r->events)
        j.events.push_back(e);
      for (auto& e : train::describe_logs(r->logs))
        j.events.push_back(e);
      j.events.push_back("trained: " + train::describe_metrics(*r));
    }
    if (auto ts = torchscript_of(j, o.model, r->checkpoint); !ts)
      event(j, "the trained model was not written as TorchScript: " + describe(ts.error()));
    else if (!ts->empty()) {
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.torchscript = std::move(*ts);
      j.events.push_back(fmt::format("trained model written as TorchScript ({} bytes)",
                                     j.torchscript.size()));
      if (auto err = persist(*reg, j))
        log_warning("job {}: not written: {}", ledger::short_hex(j.id), describe(err));
    }
    const char* ended = r->cancelled ? "cancelled" : "done";
    if (!esc)
      return set_phase(j, ended);
    if (o.verifier) {
      // Written before it is asked: a host that dies from here on asks the
      // same rater the same again when it is back (the rater answers a
      // repeated session with the verdict it gave, and moves nothing twice).
      job_entry::verification v;
      v.request = train::make_rate_request(o, *r, *ctx.self, reg->chain->chain_id());
      v.rater = *o.verifier;
      v.steps = r->steps;
      v.lease_prices = r->lease_prices;
      v.ended = ended;
      {
        std::lock_guard<std::mutex> lk{reg->mtx};
        j.pending_rating = v;
        if (auto err = persist(*reg, j))
          return fail_and_refund(j, "verification: the request was not written: " + describe(err));
      }
      return verify_and_settle(j, o, *esc, v);
    }
    train::rating rating;
    for (uint32_t rank = 0; rank < r->rank_hosts.size(); ++rank)
      rating.verdicts.push_back({rank, r->rank_hosts[rank], true, {}, 0, r->steps});
    settle_rated(j, o, *esc, rating, r->steps, r->lease_prices, ended);
  }

  /// Asks the job's rater to verify it (the written request), then settles
  /// within the payer's terms.
  void verify_and_settle(job_entry& j, const train::job_options& o,
                         const ledger::escrow_entry& esc, const job_entry::verification& v) {
    set_phase(j, "verifying");
    // A rater that does not answer (busy re-executing, its link down) is
    // asked the same again: it answers a repeated session with the verdict
    // it gave, so nothing is rated twice. Only a refusal refunds: a rater
    // that does not answer, or answers busy (its decision written, some of
    // its transactions not yet taken), is asked again until the escrow's
    // deadline, after which the chain only refunds.
    caf::expected<envelope> rated = make_error(errc::internal, "not asked");
    for (int attempt = 0;; ++attempt) {
      if (attempt > 0) {
        bool past = esc.terms ? wall_ms() >= esc.terms->deadline_ms : attempt >= 5;
        if (past)
          break;
        event(j, fmt::format("the rater did not answer ({}); asking it the same again",
                             describe(rated.error())));
        for (int i = 0; i < 10 * std::min(5 * attempt, 60) && !stopping; ++i)
          std::this_thread::sleep_for(100ms);
        if (stopping)
          return; // the written request is asked again when this host is back
      }
      auto rater = role_at("rater", v.rater);
      rated = rater ? request_blocking(*sys, *rater, v.request, std::chrono::minutes(10))
                    : caf::expected<envelope>{rater.error()};
      if (rated)
        break;
      auto code = code_of(rated.error());
      if (code != errc::timeout && code != errc::peer_down && code != errc::unknown_node
          && code != errc::busy)
        break;
      if (stopping)
        return; // the written request is asked again when this host is back
    }
    auto parsed = rated ? train::parse_rating(*rated) : caf::expected<train::rating>{rated.error()};
    if (!parsed)
      return fail_and_refund(j, "verification: " + describe(parsed.error()));
    auto rating = std::move(*parsed);
    size_t passed = 0;
    for (auto& verdict : rating.verdicts)
      passed += verdict.passed ? 1 : 0;
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.verified = fmt::format("{}/{} trainers passed", passed, rating.verdicts.size());
      j.events.push_back("verified: " + j.verified);
    }
    if (ctx.lim.fault_job_crash_after_rating) {
      // Test-only fault of this host's own config ([faults]): the process
      // dies with the rater's answer read, before the settlement is written.
      log_warning("job {}: [faults] job_crash_after_rating: exiting now",
                  ledger::short_hex(j.id));
      std::_Exit(88);
    }
    settle_rated(j, o, esc, rating, v.steps, v.lease_prices, v.ended);
  }

  /// The settlement of a rated job within the payer's terms: decided,
  /// written, then submitted (settle_and_register).
  void settle_rated(job_entry& j, const train::job_options& o, const ledger::escrow_entry& esc,
                    const train::rating& rating, uint64_t steps,
                    const std::map<node_id, uint64_t>& lease_prices, const std::string& ended) {
    set_phase(j, "settling");
    auto ledger_ask = [this](envelope q) -> caf::expected<envelope> {
      auto l = lookup_blocking(*sys, ctx.directory, "ledger", timeout());
      if (!l)
        return l.error();
      return request_blocking(*sys, *l, std::move(q), timeout());
    };
    std::optional<train::asset_terms> dataset_terms, model_terms;
    if (auto id = train::dataset_asset_of(o))
      if (auto t = train::terms_of(ledger_ask, *id))
        dataset_terms = *t;
    if (auto t = train::terms_of(ledger_ask, train::model_asset_of(o)); t && *t) {
      if (train::model_terms_hold(o, **t))
        model_terms = *t;
      else
        event(j, fmt::format("model asset {} is registered to {} as '{}', not to the owner its "
                             "id is bound to: its price is not paid",
                             ledger::short_hex(train::model_asset_of(o)), (*t)->owner.short_hex(),
                             (*t)->kind));
    }
    auto plan = train::plan_settlement(esc.locked, rating, steps, o.max_price, esc.payer,
                                       dataset_terms, model_terms, lease_prices);
    if (!plan.why.empty()) {
      return fail_and_refund(j, "settlement: " + plan.why);
    }
    // Written before it is submitted: a host that dies from here on
    // submits the same plan again when it is back (never a second one).
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.plan = plan;
      j.plan_ended = ended;
      if (auto err = persist(*reg, j))
        return fail_and_refund(j, "settlement: the plan was not written: " + describe(err));
    }
    if (ctx.lim.fault_job_crash_before_settle) {
      // Test-only fault of this host's own config ([faults]): the process
      // dies between writing the plan and submitting it.
      log_warning("job {}: [faults] job_crash_before_settle: exiting now",
                  ledger::short_hex(j.id));
      std::_Exit(86);
    }
    settle_and_register(j);
  }

  /// The job's written settlement plan, submitted (retried while this
  /// host's chain view may lag; nothing to do once the escrow is settled),
  /// then the trained weights registered as the payer's asset (once: an
  /// asset already on the chain is taken as it is), then the plan's phase.
  void settle_and_register(job_entry& j) {
    auto plan = *j.plan;
    auto chain_id = reg->chain->chain_id();
    caf::error err = make_error(errc::internal, "not attempted");
    bool already = false;
    // (At least one attempt, also on a stopping host: see below.)
    for (int attempt = 0; attempt < 5 && (attempt == 0 || !stopping); ++attempt) {
      if (attempt > 0)
        std::this_thread::sleep_for(2s);
      if (escrow_settled(j.id)) {
        already = true; // submitted before a restart, and final
        break;
      }
      err = agent_tx([&](uint64_t n) { return train::make_settle(*ctx.self, chain_id, n, j.id, plan); });
      if (!err)
        break;
      event(j, fmt::format("settlement attempt {} failed: {}", attempt + 1, describe(err)));
    }
    if (err && !already) {
      if (stopping)
        return; // the written plan is submitted again when this host is back
      return fail_and_refund(j, "settlement: " + describe(err));
    }
    if (ctx.lim.fault_job_crash_after_settle && !already) {
      // Test-only fault of this host's own config ([faults]): the process
      // dies with the settlement final and the job not yet ended.
      log_warning("job {}: [faults] job_crash_after_settle: exiting now", ledger::short_hex(j.id));
      std::_Exit(87);
    }
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.paid_trainers = plan.trainers;
      j.refunded = plan.refund;
      j.events.push_back(fmt::format("settled{}: trainers {}, dataset owner {}, model owner {}, "
                                     "{} refunded to the payer",
                                     already ? " (before this host restarted)" : "",
                                     plan.trainers, plan.dataset, plan.model, plan.refund));
    }
    // The trained weights: an asset of the payer, registered by its agent
    // (the checkpoint, or the TorchScript file, hashes to its id).
    hash256 asset{};
    auto tx = train::make_model_asset(*ctx.self, chain_id, 0, j.checkpoint, &asset, &j.id,
                                      j.torchscript.empty() ? nullptr : &j.torchscript);
    auto ledger_ask = [this](envelope q) -> caf::expected<envelope> {
      auto l = lookup_blocking(*sys, ctx.directory, "ledger", timeout());
      if (!l)
        return l.error();
      return request_blocking(*sys, *l, std::move(q), timeout());
    };
    auto known = train::terms_of(ledger_ask, asset);
    caf::error reg_err;
    if (!(known && *known))
      reg_err = agent_tx([&](uint64_t n) {
        return train::make_model_asset(*ctx.self, chain_id, n, j.checkpoint, nullptr, &j.id,
                                       j.torchscript.empty() ? nullptr : &j.torchscript);
      });
    if (reg_err)
      event(j, "the trained model was not registered: " + describe(reg_err));
    else {
      std::lock_guard<std::mutex> lk{reg->mtx};
      j.model_asset = asset;
      j.events.push_back(fmt::format("trained model registered as asset {} (trained-model), "
                                     "owned by the payer",
                                     ledger::short_hex(asset)));
    }
    set_phase(j, j.plan_ended);
  }

  /// A job on a model asset (torch:<id>): its trained weights as a
  /// TorchScript file, written here from the model the data nodes hold
  /// (fetched and checked against its id, as a trainer does); empty for
  /// any other model (a torch:FILE's file is on the trainer hosts and the
  /// payer: `aicon model export` writes it there).
  caf::expected<std::vector<uint8_t>> torchscript_of(const job_entry& j, const std::string& model,
                                                     const std::vector<uint8_t>& checkpoint) {
    auto spec = train::parse_spec(model);
    if (!spec || spec->kind != "torch" || !spec->is_asset())
      return std::vector<uint8_t>{};
    auto path = data::fetch_model(data::host_requester(*sys, ctx), hosts_with("data_node"),
                                  train::model_id(*spec), ctx.data_dir / "models",
                                  ctx.lim.model_bytes_max, ctx.model_owners);
    if (!path)
      return path.error();
    spec->local = path->string();
    if (auto err = train::load_torch(*spec))
      return err;
    auto cp = train::parse_checkpoint(checkpoint, "the job's checkpoint");
    if (!cp)
      return cp.error();
    auto out = ctx.data_dir / "models" / fmt::format("trained-{}.pt", to_hex({j.id.data(), 32}));
    if (auto err = spec->torch->save(cp->params, out))
      return err;
    auto bytes = data::read_model_file(out, ctx.lim.model_bytes_max);
    std::error_code ec;
    std::filesystem::remove(out, ec);
    return bytes;
  }

  std::atomic<bool> stopping{false};

  void start(const std::shared_ptr<job_entry>& j) {
    j->runner = std::thread([this, j] { run(j); });
  }

  // ---- requests --------------------------------------------------------------

  caf::expected<envelope> on_submit(schema::JobSubmit::Reader s) {
    auto payer = node_id::from_bytes({s.getPayer().begin(), s.getPayer().size()});
    if (!payer)
      return make_error(errc::invalid_argument, "JobSubmit.payer: " + what_of(payer.error()));
    auto sig = s.getSignature();
    if (!verify_signature(*payer, submit_signing_bytes(s), {sig.begin(), sig.size()}))
      return make_error(errc::bad_signature,
                        fmt::format("JobSubmit: not signed by the payer it names ({})",
                                    payer->short_hex()));
    auto now = static_cast<int64_t>(wall_ms());
    auto t = static_cast<int64_t>(s.getTimeMs());
    auto skew = static_cast<int64_t>(ctx.lim.clock_skew_ms_max);
    if (t > now + skew || t + skew < now)
      return make_error(errc::forbidden,
                        fmt::format("JobSubmit: dated {} ms from this host's clock (at most {}): "
                                    "stale or replayed",
                                    t - now, skew));
    if (s.getJobId().size() != 32)
      return make_error(errc::invalid_argument, "JobSubmit.jobId must be 32 bytes");
    hash256 id;
    std::memcpy(id.data(), s.getJobId().begin(), 32);
    if (auto err = check_job_spec(s.getSpec()))
      return err;
    auto spec = s.getSpec();
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      if (auto it = reg->jobs.find(id); it != reg->jobs.end()) {
        opened<schema::JobSubmit> known{it->second->submit};
        if (known->getSignature() == s.getSignature())
          return info_of(*it->second); // the same submission again: its state
        return make_error(errc::already_exists,
                          fmt::format("JobSubmit: job {} is already here", ledger::short_hex(id)));
      }
    }
    // An unpaid job spends the trainers of hosts that trust this job host
    // ([host] trainer_clients there): only this host's operator's clients
    // may ask for one.
    if (spec.getBudget() == 0
        && std::find(ctx.trainer_clients.begin(), ctx.trainer_clients.end(), *payer)
             == ctx.trainer_clients.end())
      return make_error(errc::forbidden,
                        fmt::format("JobSubmit: an unpaid job is only for this host's operator's "
                                    "clients ([host] trainer_clients); {} is not one: give a budget",
                                    payer->short_hex()));
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      size_t running = 0;
      for (auto& [_, j] : reg->jobs)
        running += final_phase(j->phase) ? 0 : 1;
      if (running >= ctx.lim.jobs_running_max)
        return make_error(errc::busy,
                          fmt::format("JobSubmit: this job host runs {} jobs already "
                                      "(jobs_running_max); retry when one ends",
                                      running));
    }
    // An unpaid job on a dataset: the owner (its payer) grants the keys to
    // the trainer hosts itself; every grant is checked here by name.
    bool unpaid_dataset = spec.getBudget() == 0 && spec.getDataset().size() == 32;
    if (!unpaid_dataset && s.getGrants().size() > 0)
      return make_error(errc::invalid_argument,
                        "JobSubmit.grants: only an unpaid job on a dataset carries grants (a "
                        "budget's job host grants for the payer itself)");
    if (unpaid_dataset && spec.getStoredLeases() && s.getGrants().size() > 0)
      return make_error(errc::invalid_argument,
                        "JobSubmit.grants: a job on stored leases carries no grants");
    if (unpaid_dataset && !spec.getStoredLeases() && s.getGrants().size() == 0)
      return make_error(errc::invalid_argument,
                        "spec.dataset: an unpaid job on a dataset needs its owner's DataGrants "
                        "(JobSubmit.grants, one per trainer host), leases an operator stored "
                        "for it (spec.storedLeases), or a budget");
    for (unsigned i = 0; i < s.getGrants().size() && unpaid_dataset; ++i) {
      auto env = envelope_from_bytes({s.getGrants()[i].begin(), s.getGrants()[i].size()},
                                     capnp::typeId<schema::DataGrant>());
      opened<schema::DataGrant> g{env};
      auto bad = [&](const std::string& why) {
        return make_error(errc::invalid_argument, fmt::format("JobSubmit.grants[{}]: {}", i, why));
      };
      if (!g)
        return bad(describe(g.error()));
      if (g->getJobId() != s.getJobId())
        return bad("names another job");
      if (g->getDatasetId() != spec.getDataset())
        return bad("names another dataset");
      if (g->getTrainer().size() != 32)
        return bad("trainer must be a 32-byte NodeId");
      if (!data::grant_signed_by(g.root(), *payer))
        return make_error(errc::bad_signature,
                          fmt::format("JobSubmit.grants[{}]: not signed by the payer {}", i,
                                      payer->short_hex()));
    }
    if (spec.getBudget() == 0 && spec.getVerify())
      return bad_field("verify", "verification is paid from the budget; give one");
    if (spec.getBudget() > 0) {
      auto e = escrow(id);
      if (!e)
        return e.error();
      if (!(e->payer == *payer))
        return make_error(errc::forbidden,
                          fmt::format("JobSubmit: job {} was escrowed by {}, not {}",
                                      ledger::short_hex(id), e->payer.short_hex(),
                                      payer->short_hex()));
      if (e->settled)
        return make_error(errc::forbidden, "JobSubmit: the job's escrow is already settled");
      if (!e->terms || !(e->terms->agent == ctx.self->id()))
        return make_error(errc::forbidden,
                          fmt::format("JobSubmit: the escrow of job {} does not name this host "
                                      "({}) its agent",
                                      ledger::short_hex(id), ctx.self->id().short_hex()));
      if (e->locked != spec.getBudget())
        return bad_field("budget", fmt::format("{}, but the escrow locked {}", spec.getBudget(),
                                               e->locked));
      if (spec.getSteps() > 0
          && static_cast<unsigned __int128>(spec.getTrainers()) * spec.getSteps() > e->terms->units)
        return bad_field("trainers", fmt::format("{} x {} steps is more than the {} units the "
                                                 "escrow's terms allow",
                                                 spec.getTrainers(), spec.getSteps(),
                                                 e->terms->units));
      if (e->terms->deadline_ms <= wall_ms())
        return make_error(errc::forbidden, "JobSubmit: the escrow's deadline has passed");
    }
    auto j = std::make_shared<job_entry>();
    j->submit = copy_envelope<schema::JobSubmit>(s);
    j->id = id;
    j->payer = *payer;
    j->budget = spec.getBudget();
    j->created_ms = wall_ms();
    randombytes_buf(j->alloc_token.data(), 32);
    j->events.push_back(fmt::format("submitted by {}: {} x {} on {}", payer->short_hex(),
                                    spec.getTrainers(), spec.getModel().cStr(),
                                    spec.getDataset().size() == 32
                                      ? "dataset " + to_hex({spec.getDataset().begin(), 8})
                                      : std::string{spec.getDataFile().cStr()}));
    {
      std::lock_guard<std::mutex> lk{reg->mtx};
      if (auto err = persist(*reg, *j))
        return err;
      reg->jobs.emplace(id, j);
    }
    start(j);
    std::lock_guard<std::mutex> lk{reg->mtx};
    return info_of(*j);
  }

  caf::expected<envelope> on_query(schema::JobQuery::Reader q) {
    auto find = [&](capnp::Data::Reader d) -> caf::expected<std::shared_ptr<job_entry>> {
      if (d.size() < 4 || d.size() > 32)
        return make_error(errc::invalid_argument, "JobQuery: give a job id (or a prefix of 4+ bytes)");
      std::shared_ptr<job_entry> hit;
      for (auto& [id, j] : reg->jobs)
        if (std::memcmp(id.data(), d.begin(), d.size()) == 0) {
          if (hit)
            return make_error(errc::invalid_argument, "JobQuery: the prefix names several jobs");
          hit = j;
        }
      if (!hit)
        return make_error(errc::not_found,
                          fmt::format("no job {} on this host", to_hex({d.begin(), d.size()})));
      return hit;
    };
    std::lock_guard<std::mutex> lk{reg->mtx};
    switch (q.which()) {
      case schema::JobQuery::LIST:
        return make_envelope<schema::JobList>([&](schema::JobList::Builder b) {
          auto l = b.initJobs(static_cast<unsigned>(reg->jobs.size()));
          unsigned i = 0;
          for (auto& [_, j] : reg->jobs)
            fill_info(l[i++], *j, 0, false);
        });
      case schema::JobQuery::STATUS: {
        auto j = find(q.getStatus());
        if (!j)
          return j.error();
        return info_of(**j);
      }
      case schema::JobQuery::LOGS: {
        auto j = find(q.getLogs());
        if (!j)
          return j.error();
        return info_of(**j, q.getSince(), true,
                       q.getWithLosses() ? q.getLossesSince() : UINT32_MAX);
      }
      case schema::JobQuery::CANCEL: {
        auto j = find(q.getCancel());
        if (!j)
          return j.error();
        if (auto err = check_payer(q, **j, "cancelled", "cancel"))
          return err;
        if (!final_phase((*j)->phase)) {
          (*j)->cancel->store(true);
          (*j)->payer_cancelled = true;
          (*j)->events.push_back("cancel asked by the payer");
          // Kept: a job host restarted before the job ends still ends it.
          if (auto err = persist(*reg, **j))
            log_warning("job {}: the cancel was not written: {}", ledger::short_hex((*j)->id),
                        describe(err));
        }
        return info_of(**j);
      }
      case schema::JobQuery::WEIGHTS: {
        auto j = find(q.getWeights());
        if (!j)
          return j.error();
        if (auto err = check_payer(q, **j, "read", "weights query"))
          return err;
        auto& e = **j;
        if (e.phase != "done" && e.phase != "cancelled")
          return make_error(errc::busy,
                            fmt::format("job {} is {}: its weights are there once it is done",
                                        ledger::short_hex(e.id), e.phase));
        if (e.checkpoint.empty())
          return make_error(errc::not_found,
                            fmt::format("job {} kept no checkpoint", ledger::short_hex(e.id)));
        return make_envelope<schema::JobWeights>([&](schema::JobWeights::Builder b) {
          b.setJobId(kj::arrayPtr(e.id.data(), 32));
          b.setStep(e.step);
          b.setCheckpoint(kj::arrayPtr(e.checkpoint.data(), e.checkpoint.size()));
          if (e.model_asset != hash256{})
            b.setModelAsset(kj::arrayPtr(e.model_asset.data(), 32));
          if (!e.torchscript.empty())
            b.setTorchscript(kj::arrayPtr(e.torchscript.data(), e.torchscript.size()));
          opened<schema::JobSubmit> sub{e.submit};
          b.setModel(sub->getSpec().getModel());
        });
      }
    }
    return make_error(errc::invalid_argument, "JobQuery has an unknown case");
  }

  /// A query only the job's payer may make (cancel, weights): signed by the
  /// payer it names, fresh.
  caf::error check_payer(schema::JobQuery::Reader q, const job_entry& j, const char* verb,
                         const char* what) {
    auto signer = node_id::from_bytes({q.getSigner().begin(), q.getSigner().size()});
    if (!signer || !(j.payer == *signer))
      return make_error(errc::forbidden,
                        fmt::format("JobQuery: job {} may be {} only by its payer {}",
                                    ledger::short_hex(j.id), verb, j.payer.short_hex()));
    auto sig = q.getSignature();
    if (!verify_signature(*signer, query_signing_bytes(q), {sig.begin(), sig.size()}))
      return make_error(errc::bad_signature,
                        fmt::format("JobQuery: the {} is not signed by the payer", what));
    auto now = static_cast<int64_t>(wall_ms());
    auto t = static_cast<int64_t>(q.getTimeMs());
    auto skew = static_cast<int64_t>(ctx.lim.clock_skew_ms_max);
    if (t > now + skew || t + skew < now)
      return make_error(errc::forbidden, fmt::format("JobQuery: the {} is stale or replayed", what));
    return caf::none;
  }

  /// Jobs in the store: finished ones are listed, unfinished ones resumed
  /// from their last checkpoint with their allocation token.
  caf::error load() {
    std::vector<std::shared_ptr<job_entry>> resume;
    {
      auto t = store::txn::begin(*reg->env, false);
      if (!t)
        return t.error();
      caf::error bad;
      auto err = t->for_each(store::db::jobs, [&](std::span<const uint8_t> key,
                                                  std::span<const uint8_t> value) {
        auto env = envelope_from_bytes(value, capnp::typeId<schema::JobRecord>());
        opened<schema::JobRecord> rec{env};
        if (!rec || key.size() != 32) {
          // Named and left in the store (an operator can look at it); the
          // other jobs still load and resume.
          log_warning("job role: the stored record of job {} cannot be read ({}); skipped",
                      to_hex({key.data(), std::min<size_t>(key.size(), 8)}),
                      rec ? "key not 32 bytes" : describe(rec.error()));
          return true;
        }
        auto j = std::make_shared<job_entry>();
        j->submit = copy_envelope<schema::JobSubmit>(rec->getSubmit());
        std::memcpy(j->id.data(), key.data(), 32);
        auto info = rec->getInfo();
        if (auto p = node_id::from_bytes({info.getPayer().begin(), info.getPayer().size()}))
          j->payer = *p;
        j->phase = info.getPhase();
        j->error = info.getError();
        j->verified = info.getVerified();
        j->step = info.getStep();
        j->steps = info.getSteps();
        j->budget = info.getBudget();
        j->paid_trainers = info.getPaidTrainers();
        j->refunded = info.getRefunded();
        j->created_ms = info.getCreatedMs();
        j->finished_ms = info.getFinishedMs();
        j->loss = info.getLoss();
        j->accuracy = info.getAccuracy();
        j->test_loss = info.getTestLoss();
        j->regression = info.getRegression();
        j->r2 = info.getR2();
        j->trainers = info.getTrainers();
        if (info.getSession().size() == 32)
          std::memcpy(j->session.data(), info.getSession().begin(), 32);
        if (info.getModelAsset().size() == 32)
          std::memcpy(j->model_asset.data(), info.getModelAsset().begin(), 32);
        for (auto e : info.getEvents())
          j->events.emplace_back(e.cStr());
        j->checkpoint.assign(rec->getCheckpoint().begin(), rec->getCheckpoint().end());
        j->torchscript.assign(rec->getTorchscript().begin(), rec->getTorchscript().end());
        if (rec->hasSettle()) {
          auto p = rec->getSettle();
          train::settle_plan plan;
          for (auto po : p.getPayouts())
            if (auto to = node_id::from_bytes({po.getTo().begin(), po.getTo().size()}))
              plan.payouts.emplace_back(*to, po.getAmount());
          plan.trainers = p.getTrainers();
          plan.dataset = p.getDataset();
          plan.model = p.getModel();
          plan.refund = p.getRefund();
          j->plan = std::move(plan);
          j->plan_ended = p.getEnded().cStr();
        }
        if (rec->hasVerification()) {
          auto p = rec->getVerification();
          job_entry::verification v;
          v.request = envelope_from_bytes({p.getRequest().begin(), p.getRequest().size()},
                                          capnp::typeId<schema::RateRequest>());
          if (auto r = node_id::from_bytes({p.getRater().begin(), p.getRater().size()}))
            v.rater = *r;
          v.steps = p.getSteps();
          for (auto lp : p.getLeasePrices())
            if (auto h = node_id::from_bytes({lp.getHost().begin(), lp.getHost().size()}))
              v.lease_prices[*h] = lp.getPrice();
          v.ended = p.getEnded().cStr();
          j->pending_rating = std::move(v);
        }
        if (rec->getAllocToken().size() == 32)
          std::memcpy(j->alloc_token.data(), rec->getAllocToken().begin(), 32);
        if (rec->getRingSession().size() == 32 && rec->getRingToken().size() == 32) {
          std::memcpy(j->ring_session.data(), rec->getRingSession().begin(), 32);
          std::memcpy(j->ring_token.data(), rec->getRingToken().begin(), 32);
          for (auto h : rec->getRingHosts())
            if (auto id = node_id::from_bytes({h.begin(), h.size()}))
              j->ring_hosts.push_back(*id);
          j->ring_from = rec->getRingFrom();
        }
        if (rec->getVerifier().size() == 32)
          if (auto v = node_id::from_bytes({rec->getVerifier().begin(), 32}))
            j->verifier = *v;
        for (auto e : rec->getEarlier()) {
          auto ring = train::parse_earlier_ring(copy_envelope<schema::EarlierRing>(e));
          if (!ring) {
            log_warning("job {}: a kept earlier ring cannot be read ({}); its steps are not "
                        "rated",
                        ledger::short_hex(j->id), describe(ring.error()));
            continue;
          }
          j->earlier.push_back(std::move(*ring));
        }
        if (rec->getCancelled()) {
          j->payer_cancelled = true;
          j->cancel->store(true);
        }
        reg->jobs.emplace(j->id, j);
        if (!final_phase(j->phase))
          resume.push_back(j);
        return true;
      });
      if (err)
        return err;
      if (bad)
        return bad;
    }
    for (auto& j : resume) {
      j->events.push_back(fmt::format("job host restarted: resuming from {}",
                                      j->checkpoint.empty() ? std::string{"the start"}
                                                            : fmt::format("the checkpoint of step {}", j->step)));
      log_info("job {}: resumed after a restart ({} steps done)", ledger::short_hex(j->id), j->step);
      start(j);
    }
    return caf::none;
  }
};

using job_actor = caf::stateful_actor<job_role_state>;

caf::behavior job_role(job_actor* self, role_context ctx, host_store hs) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.sys = &self->system();
  st.reg->env = std::move(hs.env);
  st.reg->chain = std::move(hs.chain);
  st.table = std::make_unique<message_table>("job", job_access);
  st.table->on<schema::JobSubmit>(
    [self](schema::JobSubmit::Reader s) -> caf::result<envelope> {
      auto r = self->state.on_submit(s);
      if (!r)
        return r.error();
      return *r;
    });
  st.table->on<schema::JobQuery>([self](schema::JobQuery::Reader q) -> caf::result<envelope> {
    auto r = self->state.on_query(q);
    if (!r)
      return r.error();
    return *r;
  });
  if (auto err = st.load())
    log_warning("job: the stored jobs could not be read: {}", describe(err));
  self->attach_functor([self] { self->state.stopping = true; });
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

caf::error check_job_weights(const envelope& weights, const envelope& asset, const node_id& payer) {
  opened<schema::JobWeights> w{weights};
  if (!w)
    return w.error();
  opened<schema::AssetInfo> a{asset};
  if (!a)
    return a.error();
  auto short_of = [](capnp::Data::Reader d) {
    return to_hex({d.begin(), std::min<size_t>(d.size(), 8)});
  };
  if (w->getModelAsset().size() != 32)
    return make_error(errc::invalid_argument, "JobWeights.modelAsset must be 32 bytes");
  if (std::string_view{a->getKind().cStr()} != "trained-model"
      || a->getOwner() != capnp::Data::Reader{payer.bytes.data(), 32})
    return make_error(errc::forbidden,
                      fmt::format("asset {} on the chain is a '{}' owned by {}, not this payer's "
                                  "trained model",
                                  short_of(w->getModelAsset()), a->getKind().cStr(),
                                  short_of(a->getOwner())));
  auto hash = [](capnp::Data::Reader d) {
    std::array<uint8_t, 32> h{};
    crypto_generichash(h.data(), h.size(), d.begin(), d.size(), nullptr, 0);
    return h;
  };
  auto matches = [](const std::array<uint8_t, 32>& h, capnp::Data::Reader want) {
    return want.size() == 32 && std::memcmp(h.data(), want.begin(), 32) == 0;
  };
  bool has_torchscript = w->getTorchscript().size() > 0;
  auto cp = hash(w->getCheckpoint());
  if (has_torchscript && !matches(hash(w->getTorchscript()), w->getModelAsset()))
    return make_error(errc::bad_signature,
                      fmt::format("the TorchScript file does not hash to the trained-model asset "
                                  "{} registered for this job",
                                  short_of(w->getModelAsset())));
  auto want = has_torchscript ? a->getMetadataHash() : w->getModelAsset();
  if (!matches(cp, want))
    return make_error(errc::bad_signature,
                      fmt::format("the weights hash to {}, not to the {} of the trained-model "
                                  "asset {} registered for this job",
                                  to_hex({cp.data(), 8}), has_torchscript ? "metadataHash" : "id",
                                  short_of(w->getModelAsset())));
  return caf::none;
}

void fill_job_spec(schema::JobSpec::Builder b, const train::job_options& o, uint32_t trainers) {
  b.setModel(o.model);
  if (auto dataset = train::dataset_asset_of(o); dataset && !o.dataset.empty())
    b.setDataset(kj::arrayPtr(dataset->data(), 32));
  else
    b.setDataFile(o.data_file);
  b.setTrainers(trainers);
  b.setSteps(o.steps);
  b.setBatch(o.global_batch);
  b.setLr(o.lr);
  b.setMomentum(o.momentum);
  b.setOptimizer(o.optimizer == "adamw" ? schema::Optimizer::ADAMW : schema::Optimizer::SGD);
  b.setWeightDecay(o.weight_decay);
  b.setHoldoutPercent(o.test_percent);
  b.setSeed(o.seed);
  b.setTransport(o.transport);
  b.setCheckpointEvery(o.checkpoint_every);
  b.setChunkBytes(o.chunk_bytes);
  b.setRingTimeoutMs(o.ring_timeout_ms);
}

caf::error check_job_spec(schema::JobSpec::Reader s) {
  auto spec = train::parse_spec(s.getModel().cStr());
  if (!spec)
    return bad_field("model", what_of(spec.error()));
  bool has_dataset = s.getDataset().size() > 0;
  bool has_file = s.getDataFile().size() > 0;
  if (has_dataset == has_file)
    return bad_field("dataset", "give either a dataset (32 bytes) or a dataFile");
  if (has_dataset && s.getDataset().size() != 32)
    return bad_field("dataset", fmt::format("must be 32 bytes (got {})", s.getDataset().size()));
  if (has_file && s.getDataFile().cStr()[0] != '/')
    return bad_field("dataFile", "must be an absolute path (on the trainer hosts)");
  if (s.getTrainers() == 0 || s.getTrainers() > 1024)
    return bad_field("trainers", fmt::format("must be in 1..1024 (got {})", s.getTrainers()));
  bool has_epochs = s.getEpochs() != 0;
  if (has_epochs && !(std::isfinite(s.getEpochs()) && s.getEpochs() > 0 && s.getEpochs() <= 10000))
    return bad_field("epochs", fmt::format("must be in (0, 10000] (got {})", s.getEpochs()));
  if ((s.getSteps() > 0) == has_epochs)
    return bad_field("steps", "give steps or epochs (one of them, > 0)");
  if (s.getSteps() > 100'000'000)
    return bad_field("steps", fmt::format("at most 10^8 (got {})", s.getSteps()));
  if (s.getBatch() == 0 || s.getBatch() > 65536)
    return bad_field("batch", fmt::format("must be in 1..65536 (got {})", s.getBatch()));
  if (!(std::isfinite(s.getLr()) && s.getLr() > 0 && s.getLr() <= 10))
    return bad_field("lr", fmt::format("must be in (0, 10] (got {})", s.getLr()));
  if (!(std::isfinite(s.getMomentum()) && s.getMomentum() >= 0 && s.getMomentum() < 1))
    return bad_field("momentum", fmt::format("must be in [0, 1) (got {})", s.getMomentum()));
  if (s.getHoldoutPercent() >= 100)
    return bad_field("holdoutPercent", fmt::format("must be in 0..99 (got {})", s.getHoldoutPercent()));
  auto transport = static_cast<uint16_t>(s.getTransport());
  if (transport > static_cast<uint16_t>(schema::Transport::NCCL))
    return bad_field("transport", fmt::format("must be {} (got enumerant {})",
                                              train::transport_names, transport));
  auto opt = static_cast<uint16_t>(s.getOptimizer());
  if (opt > static_cast<uint16_t>(schema::Optimizer::ADAMW))
    return bad_field("optimizer", fmt::format("must be sgd or adamw (got enumerant {})", opt));
  if (s.getPriority() > 1000)
    return bad_field("priority", fmt::format("must be in 0..1000 (got {})", s.getPriority()));
  if (s.getPriority() > 0 && s.getBudget() == 0)
    return bad_field("priority", "needs a budget (priorities are between paying jobs)");
  if (!(std::isfinite(s.getWeightDecay()) && s.getWeightDecay() >= 0 && s.getWeightDecay() < 1))
    return bad_field("weightDecay", fmt::format("must be in [0, 1) (got {})", s.getWeightDecay()));
  if (s.getCheckpointEvery() == 0 || s.getCheckpointEvery() > 1'000'000)
    return bad_field("checkpointEvery",
                     fmt::format("must be in 1..1000000 (got {})", s.getCheckpointEvery()));
  if (s.getChunkBytes() < 1024 || s.getChunkBytes() > (16u << 20))
    return bad_field("chunkBytes",
                     fmt::format("must be in 1024..16777216 (got {})", s.getChunkBytes()));
  if (s.getRingTimeoutMs() < 100 || s.getRingTimeoutMs() > 600'000)
    return bad_field("ringTimeoutMs",
                     fmt::format("must be in 100..600000 (got {})", s.getRingTimeoutMs()));
  if (s.getStoredLeases() && (s.getBudget() > 0 || s.getDataset().size() == 0))
    return bad_field("storedLeases", "only for an unpaid job on a dataset (a budget's trainers "
                                     "get the payer's grants)");
  for (auto [name, list] : {std::pair{"hosts", s.getHosts()}, std::pair{"spares", s.getSpares()}}) {
    if (list.size() > 0 && s.getBudget() > 0)
      return bad_field(name, "the allocator places a budgeted job's trainers: leave it empty");
    if (list.size() > 1024)
      return bad_field(name, fmt::format("at most 1024 hosts (got {})", list.size()));
    for (unsigned i = 0; i < list.size(); ++i)
      if (list[i].size() != 32)
        return bad_field(name, fmt::format("[{}] must be a 32-byte NodeId (got {} bytes)", i,
                                           list[i].size()));
  }
  return caf::none;
}

caf::expected<caf::actor> spawn_job_role(caf::actor_system& sys, const role_context& ctx) {
  auto hs = open_host_store(ctx);
  if (!hs)
    return hs.error();
  // Detached: submissions check the chain, and jobs' threads are joined
  // when the role stops.
  return sys.spawn<caf::detached>(job_role, ctx, std::move(*hs));
}

envelope sign_job_submit(const identity& payer, schema::JobSpec::Reader spec,
                         const std::array<uint8_t, 32>& job, uint64_t now_ms,
                         const std::vector<envelope>& grants) {
  capnp::MallocMessageBuilder tmp;
  auto b = tmp.initRoot<schema::JobSubmit>();
  b.setSpec(spec);
  if (!grants.empty()) {
    auto l = b.initGrants(static_cast<unsigned>(grants.size()));
    for (unsigned i = 0; i < grants.size(); ++i)
      l.set(i, kj::arrayPtr(grants[i].bytes().data(), grants[i].bytes().size()));
  }
  b.setJobId(kj::arrayPtr(job.data(), 32));
  b.setPayer(kj::arrayPtr(payer.id().bytes.data(), 32));
  b.setTimeMs(now_ms);
  auto sig = payer.sign(submit_signing_bytes(b.asReader()));
  b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  return copy_envelope<schema::JobSubmit>(b.asReader());
}

namespace {

/// A JobQuery only a payer may make, filled by `fill`, signed and dated.
envelope sign_payer_query(const identity& payer, uint64_t now_ms,
                          const std::function<void(schema::JobQuery::Builder)>& fill) {
  capnp::MallocMessageBuilder tmp;
  auto b = tmp.initRoot<schema::JobQuery>();
  fill(b);
  b.setSigner(kj::arrayPtr(payer.id().bytes.data(), 32));
  b.setTimeMs(now_ms);
  auto sig = payer.sign(query_signing_bytes(b.asReader()));
  b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  return copy_envelope<schema::JobQuery>(b.asReader());
}

} // namespace

envelope sign_job_weights(const identity& payer, const std::array<uint8_t, 32>& job,
                          uint64_t now_ms) {
  return sign_payer_query(payer, now_ms, [&](schema::JobQuery::Builder b) {
    b.setWeights(kj::arrayPtr(job.data(), 32));
  });
}

envelope sign_job_cancel(const identity& payer, const std::array<uint8_t, 32>& job,
                         uint64_t now_ms) {
  return sign_payer_query(payer, now_ms, [&](schema::JobQuery::Builder b) {
    b.setCancel(kj::arrayPtr(job.data(), 32));
  });
}

} // namespace aicon
