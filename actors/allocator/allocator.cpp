#include "actors/allocator/allocator.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <sodium.h>

#include "actors/ledger/chain.hpp"
#include "actors/ledger/hashing.hpp"
#include "actors/ledger/ledger.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "runtime/role.hpp"
#include "runtime/store.hpp"
#include "schemas/alloc.capnp.h"

namespace aicon {

namespace {

/// Whether the stored AllocAsk `ask` carried `token` (constant time).
bool same_token(const envelope& ask, capnp::Data::Reader token) {
  opened<schema::AllocAsk> a{ask};
  return a && a->getToken().size() == 32 && token.size() == 32
         && sodium_memcmp(a->getToken().begin(), token.begin(), 32) == 0;
}


using tick_atom = caf::atom_constant<caf::atom("alloctick")>;

/// After a restart, restored offers and leases live at least this long, so
/// trainers and jobs can renew them.
constexpr int64_t restart_grace_ms = 10000;

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

std::vector<uint8_t> offer_signing_bytes(schema::Offer::Reader o) {
  static constexpr std::string_view tag = "aicon-offer-v1";
  kj::Array<capnp::word> keep;
  auto bytes = ledger::canonical_bytes(o, keep);
  std::vector<uint8_t> out(tag.size() + bytes.size());
  std::memcpy(out.data(), tag.data(), tag.size());
  std::memcpy(out.data() + tag.size(), bytes.data(), bytes.size());
  return out;
}

caf::expected<alloc::job_id> job_of(capnp::Data::Reader d, const char* what) {
  if (d.size() != 32)
    return make_error(errc::invalid_argument, fmt::format("{}: job must be 32 bytes", what));
  alloc::job_id j;
  std::memcpy(j.data(), d.begin(), 32);
  return j;
}

void fill_offer(schema::Offer::Builder b, const alloc::offer& o, uint32_t ttl_ms, uint64_t time_ms) {
  b.setTrainer(kj::arrayPtr(o.trainer.bytes.data(), 32));
  b.setDevice(o.device);
  b.setSlots(o.slots);
  b.setMemory(o.memory);
  b.setSamplesPerS(o.samples_per_s);
  b.setPrice(o.price);
  b.setSite(o.site);
  b.setTtlMs(ttl_ms);
  b.setTimeMs(time_ms);
}

void fill_lease(schema::LeaseInfo::Builder b, const alloc::lease& l) {
  b.setTrainer(kj::arrayPtr(l.trainer.bytes.data(), 32));
  b.setCount(l.count);
  b.setPrice(l.price);
  b.setExpiresMs(static_cast<uint64_t>(l.expires_ms));
}

std::vector<uint8_t> lease_signing_bytes(schema::LeaseInfo::Reader l) {
  capnp::MallocMessageBuilder copy;
  copy.setRoot(l);
  auto b = copy.getRoot<schema::LeaseInfo>();
  b.disownSignature();
  return ledger::tagged_canonical("aicon-lease-v1", b.asReader());
}

/// The lease as a trainer host sees it: for `l.job`, granted and signed by
/// this allocator host `self`.
void fill_signed_lease(schema::LeaseInfo::Builder b, const alloc::lease& l, const identity& self) {
  fill_lease(b, l);
  b.setJob(kj::arrayPtr(l.job.data(), 32));
  b.setAllocator(kj::arrayPtr(self.id().bytes.data(), 32));
  auto sig = self.sign(lease_signing_bytes(b.asReader()));
  b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
}

/// `d` as the job sees it. Each granted lease is signed with the job's
/// whole count on that host (a replacement on a host that already runs
/// some of the job's trainers covers them all), so the one lease a
/// TrainerJoin carries entitles every trainer of the job there.
envelope reply(const identity& self, const alloc::pool& pool, const alloc::job_id& job,
               const alloc::decision& d, bool preempted = false, bool signed_leases = true) {
  return make_envelope<schema::AllocReply>([&](schema::AllocReply::Builder b) {
    b.setJob(kj::arrayPtr(job.data(), 32));
    switch (d.what) {
      case alloc::decision::kind::granted: {
        auto held = pool.leases();
        auto l = b.initGranted(static_cast<unsigned>(d.leases.size()));
        for (unsigned i = 0; i < d.leases.size(); ++i) {
          auto whole = d.leases[i];
          uint32_t total = 0;
          for (auto& h : held)
            if (h.job == job && h.trainer == whole.trainer) {
              total += h.count;
              whole.expires_ms = std::min(whole.expires_ms, h.expires_ms);
            }
          whole.count = std::max(total, whole.count);
          if (signed_leases)
            fill_signed_lease(l[i], whole, self);
          else
            fill_lease(l[i], whole);
        }
        break;
      }
      case alloc::decision::kind::waiting: b.setWaiting(d.why); break;
      case alloc::decision::kind::refused: b.setRefused(d.why); break;
    }
    auto p = b.initPreempt(static_cast<unsigned>(d.preempt.size()));
    for (unsigned i = 0; i < d.preempt.size(); ++i)
      p.set(i, kj::arrayPtr(d.preempt[i].data(), 32));
    b.setPreempted(preempted);
  });
}

struct allocator_state {
  role_context ctx;
  std::shared_ptr<store::environment> env;
  std::shared_ptr<ledger::chain> chain;
  alloc::pool pool;
  std::map<alloc::job_id, envelope> asks; ///< AllocAsk words of jobs holding leases
  std::set<alloc::job_id> preempted;      ///< asked to checkpoint and release
  std::set<alloc::job_id> lost_news;      ///< jobs that lost a trainer since their last renew
  std::map<node_id, double> ratings;      ///< from the rater; 0.5 when never rated

  double rating_of(const node_id& t) const {
    auto it = ratings.find(t);
    return it == ratings.end() ? 0.5 : it->second;
  }

  void rate(const std::vector<std::string>& passed, const std::vector<std::string>& failed) {
    auto t = store::txn::begin(*env, true);
    for (auto* list : {&passed, &failed})
      for (auto& hex : *list) {
        auto id = node_id::from_hex(hex);
        if (!id)
          continue;
        double r = rating_of(*id);
        r = list == &passed ? r + 0.1 * (1 - r) : r / 2;
        ratings[*id] = r;
        pool.set_rating(*id, r);
        if (t) {
          uint8_t bytes[8];
          std::memcpy(bytes, &r, 8);
          (void)t->put(store::db::ratings, id->bytes, bytes);
        }
        log_info("allocator: trainer {} {} verification, rating {:.3f}", id->short_hex(),
                 list == &passed ? "passed" : "FAILED", r);
      }
    if (t)
      if (auto err = t->commit())
        log_warning("allocator: ratings not stored: {}", describe(err));
  }
  std::unique_ptr<message_table> table;
  static inline const char* name = "aicon.allocator";

  // ---- persistence: each handler's changes in one write transaction ----

  caf::error persist() {
    auto t = store::txn::begin(*env, true);
    if (!t)
      return t.error();
    for (auto which : {store::db::alloc_offers, store::db::alloc_leases, store::db::alloc_asks}) {
      std::vector<std::vector<uint8_t>> keys;
      if (auto err = t->for_each(which, [&](auto k, auto) {
            keys.emplace_back(k.begin(), k.end());
            return true;
          }))
        return err;
      for (auto& k : keys)
        if (auto err = t->del(which, k))
          return err;
    }
    for (auto& o : pool.offers()) {
      auto env_o = make_envelope<schema::Offer>([&](schema::Offer::Builder b) {
        fill_offer(b, o, 0, static_cast<uint64_t>(o.expires_ms));
      });
      auto bytes = env_o.bytes();
      if (auto err = t->put(store::db::alloc_offers, o.trainer.bytes, bytes))
        return err;
    }
    for (auto& l : pool.leases()) {
      auto e = make_envelope<schema::BookLease>([&](schema::BookLease::Builder b) {
        b.setJob(kj::arrayPtr(l.job.data(), 32));
        fill_lease(b.initLease(), l);
        b.setPriority(l.priority);
      });
      std::vector<uint8_t> key(l.job.begin(), l.job.end());
      key.insert(key.end(), l.trainer.bytes.begin(), l.trainer.bytes.end());
      auto bytes = e.bytes();
      if (auto err = t->put(store::db::alloc_leases, key, bytes))
        return err;
    }
    for (auto& [job, a] : asks) {
      auto bytes = a.bytes();
      if (auto err = t->put(store::db::alloc_asks, job, bytes))
        return err;
    }
    return t->commit();
  }

  caf::error persist_offer(const alloc::offer& o) {
    auto t = store::txn::begin(*env, true);
    if (!t)
      return t.error();
    auto e = make_envelope<schema::Offer>([&](schema::Offer::Builder b) {
      fill_offer(b, o, 0, static_cast<uint64_t>(o.expires_ms));
    });
    auto bytes = e.bytes();
    if (auto err = t->put(store::db::alloc_offers, o.trainer.bytes, bytes))
      return err;
    return t->commit();
  }

  caf::error restore() {
    auto t = store::txn::begin(*env, false);
    if (!t)
      return t.error();
    std::vector<alloc::offer> offers;
    std::vector<alloc::lease> leases;
    std::vector<alloc::ask> held;
    caf::error bad;
    if (auto err = t->for_each(store::db::alloc_offers, [&](auto, auto v) {
          auto e = envelope_from_bytes(v, capnp::typeId<schema::Offer>());
          opened<schema::Offer> o{e};
          if (!o) {
            bad = o.error();
            return false;
          }
          alloc::offer x;
          auto id = node_id::from_bytes({o->getTrainer().begin(), o->getTrainer().size()});
          if (!id) {
            bad = id.error();
            return false;
          }
          x.trainer = *id;
          x.device = o->getDevice();
          x.slots = o->getSlots();
          x.memory = o->getMemory();
          x.samples_per_s = o->getSamplesPerS();
          x.price = o->getPrice();
          x.site = o->getSite();
          // Trainers and jobs could not reach a stopped allocator: what it
          // restores gets a grace period to be renewed in.
          x.expires_ms = std::max(static_cast<int64_t>(o->getTimeMs()), wall_ms() + restart_grace_ms);
          offers.push_back(x);
          return true;
        }))
      return err;
    if (bad)
      return bad;
    if (auto err = t->for_each(store::db::alloc_leases, [&](auto, auto v) {
          auto e = envelope_from_bytes(v, capnp::typeId<schema::BookLease>());
          opened<schema::BookLease> b{e};
          if (!b) {
            bad = b.error();
            return false;
          }
          alloc::lease l;
          std::memcpy(l.job.data(), b->getJob().begin(), 32);
          auto li = b->getLease();
          std::memcpy(l.trainer.bytes.data(), li.getTrainer().begin(), 32);
          l.count = li.getCount();
          l.price = li.getPrice();
          l.expires_ms = std::max(static_cast<int64_t>(li.getExpiresMs()),
                                  wall_ms() + restart_grace_ms);
          l.priority = b->getPriority();
          leases.push_back(l);
          return true;
        }))
      return err;
    if (bad)
      return bad;
    if (auto err = t->for_each(store::db::alloc_asks, [&](auto k, auto v) {
          alloc::job_id job;
          std::memcpy(job.data(), k.data(), 32);
          auto e = envelope_from_bytes(v, capnp::typeId<schema::AllocAsk>());
          opened<schema::AllocAsk> a{e};
          if (!a) {
            bad = a.error();
            return false;
          }
          held.push_back(ask_of(a.root(), job, 0));
          asks.emplace(job, e);
          return true;
        }))
      return err;
    if (bad)
      return bad;
    if (auto err = t->for_each(store::db::ratings, [&](auto k, auto v) {
          auto id = node_id::from_bytes(k);
          if (id && v.size() == 8) {
            double r;
            std::memcpy(&r, v.data(), 8);
            ratings[*id] = std::clamp(r, 0.0, 1.0);
          }
          return true;
        }))
      return err;
    for (auto& o : offers)
      o.rating = rating_of(o.trainer);
    pool.restore(offers, leases, held);
    if (!offers.empty() || !leases.empty())
      log_info("allocator: restored {} offers and {} leases", offers.size(), leases.size());
    return caf::none;
  }

  static alloc::ask ask_of(schema::AllocAsk::Reader r, const alloc::job_id& job, int64_t now) {
    alloc::ask a;
    a.job = job;
    a.k = r.getK();
    a.device = r.getDevice().size() ? r.getDevice().cStr() : "cpu";
    a.memory = r.getMemory();
    a.max_price = r.getMaxPrice() ? r.getMaxPrice() : UINT64_MAX;
    a.data_site = r.getDataSite();
    a.priority = r.getPriority();
    a.deadline_ms = r.getDeadlineMs() ? now + r.getDeadlineMs() : 0;
    a.lease_ms = r.getLeaseMs() ? r.getLeaseMs() : 10000;
    return a;
  }

  // ---- handlers ----

  caf::expected<envelope> on_offer(schema::SignedOffer::Reader so) {
    auto o = so.getOffer();
    auto id = node_id::from_bytes({o.getTrainer().begin(), o.getTrainer().size()});
    if (!id)
      return make_error(errc::invalid_argument, "Offer.trainer: " + what_of(id.error()));
    auto sig = so.getSignature();
    if (sig.size() != 64
        || !verify_signature(*id, offer_signing_bytes(o), {sig.begin(), sig.size()}))
      return make_error(errc::invalid_argument,
                        fmt::format("offer from {}: the signature is not the trainer's",
                                    id->short_hex()));
    auto now = wall_ms();
    auto skew = static_cast<int64_t>(o.getTimeMs()) - now;
    if (std::llabs(skew) > static_cast<int64_t>(ctx.lim.clock_skew_ms_max))
      return make_error(errc::invalid_argument,
                        fmt::format("offer from {}: its clock is {} ms off (at most {}): a "
                                    "replayed or stale offer",
                                    id->short_hex(), skew, ctx.lim.clock_skew_ms_max));
    if (o.getTtlMs() == 0 || o.getTtlMs() > 600000)
      return make_error(errc::invalid_argument, "offer: ttlMs must be in 1..600000");
    alloc::offer x;
    x.trainer = *id;
    x.device = o.getDevice();
    x.slots = o.getSlots();
    x.memory = o.getMemory();
    x.samples_per_s = o.getSamplesPerS();
    x.price = o.getPrice();
    x.site = o.getSite();
    x.rating = rating_of(*id);
    x.expires_ms = now + o.getTtlMs();
    // A heartbeat that only extends a known offer is not written (after a
    // restart the next heartbeat renews it); a new or changed one is.
    auto known = pool.find_offer(*id);
    bool changed = !known || known->device != x.device || known->slots != x.slots
                   || known->memory != x.memory || known->price != x.price
                   || known->site != x.site;
    if (auto why = pool.put_offer(x); !why.empty())
      return make_error(errc::invalid_argument,
                        fmt::format("offer from {}: {}", id->short_hex(), why));
    if (changed)
      if (auto err = persist_offer(x))
        return err;
    return reply(*ctx.self, pool, {}, alloc::decision{alloc::decision::kind::granted, {}, {}, {}});
  }

  caf::expected<envelope> on_ask(const envelope& env, schema::AllocAsk::Reader r) {
    auto job = job_of(r.getJob(), "AllocAsk");
    if (!job)
      return job.error();
    if (r.getK() == 0)
      return make_error(errc::invalid_argument, "AllocAsk: k must be >= 1");
    // The budget: the job's escrow on this host's chain.
    if (!chain)
      return make_error(errc::invalid_argument,
                        "AllocAsk: this allocator's host keeps no chain to check escrows on");
    auto e = chain->escrow_of(*job);
    if (!e)
      return e.error();
    unsigned __int128 need = static_cast<unsigned __int128>(r.getK()) * r.getMaxPrice()
                             * r.getSteps();
    uint64_t have = *e ? (*e)->amount : 0;
    if (!*e || have < need)
      return make_error(errc::forbidden,
                        fmt::format("insufficient budget: job {} escrowed {}, needs {} (k {} x "
                                    "max price {} x {} steps)",
                                    ledger::short_hex(*job), have, static_cast<uint64_t>(need),
                                    r.getK(), r.getMaxPrice(), r.getSteps()));
    // Only the payer its escrow names may ask, for this chain, and the first
    // ask's token binds the job's leases to its coordinator.
    auto sig = r.getSignature();
    auto signed_by = [&](const node_id& who) {
      return sig.size() == 64
             && verify_signature(who,
                                 request_signing_bytes<schema::AllocAsk>("aicon-alloc-v1",
                                                                          chain->chain_id(), r),
                                 {sig.begin(), sig.size()});
    };
    auto& terms = (*e)->terms;
    bool by_agent = terms && !signed_by((*e)->payer) && signed_by(terms->agent);
    if (!by_agent && !signed_by((*e)->payer))
      return make_error(errc::bad_signature,
                        fmt::format("AllocAsk: not signed by job {}'s payer {}{} for this chain",
                                    ledger::short_hex(*job), (*e)->payer.short_hex(),
                                    terms ? " nor its agent " + terms->agent.short_hex()
                                          : std::string{}));
    // The agent asks within the payer's terms.
    if (by_agent
        && (r.getMaxPrice() > terms->max_price
            || static_cast<unsigned __int128>(r.getK()) * r.getSteps() > terms->units))
      return make_error(errc::forbidden,
                        fmt::format("AllocAsk: the agent asks {} x {} steps at {} but the "
                                    "payer's terms allow {} units at {}",
                                    r.getK(), r.getSteps(), r.getMaxPrice(), terms->units,
                                    terms->max_price));
    if (r.getToken().size() != 32)
      return make_error(errc::invalid_argument, "AllocAsk.token must be 32 bytes");
    if (auto held = asks.find(*job); held != asks.end() && !same_token(held->second, r.getToken()))
      return make_error(errc::forbidden,
                        fmt::format("AllocAsk: job {} is already asked for by another "
                                    "coordinator (its token differs)",
                                    ledger::short_hex(*job)));
    auto now = wall_ms();
    auto d = pool.allocate(ask_of(r, *job, now), now);
    if (d.what == alloc::decision::kind::granted || d.what == alloc::decision::kind::waiting)
      asks[*job] = env;
    for (auto& p : d.preempt)
      preempted.insert(p);
    if (auto err = persist())
      return err;
    log_info("allocator: job {} asks {} x {}: {}", ledger::short_hex(*job), r.getK(),
             r.getDevice().size() ? r.getDevice().cStr() : "cpu",
             d.what == alloc::decision::kind::granted ? "granted" : d.why);
    return reply(*ctx.self, pool, *job, d);
  }

  /// The AllocQuery row's guard: renew, release and replace change a job's
  /// leases, so only the holder of the token its ask carried may send them.
  caf::error check_query(schema::AllocQuery::Reader q) const {
    if (q.which() == schema::AllocQuery::BOOK || q.which() == schema::AllocQuery::STATUS)
      return {};
    auto job = job_of(q.getJob(), "AllocQuery");
    if (!job)
      return job.error();
    auto ask = asks.find(*job);
    if (ask == asks.end())
      return make_error(errc::not_found,
                        fmt::format("AllocQuery: no ask of job {} is known",
                                    ledger::short_hex(*job)));
    if (!same_token(ask->second, q.getToken()))
      return make_error(errc::forbidden,
                        fmt::format("not job {}'s token (renew, release and replace change "
                                    "its leases)",
                                    ledger::short_hex(*job)));
    return {};
  }

  caf::expected<envelope> on_query(schema::AllocQuery::Reader q) {
    if (q.which() == schema::AllocQuery::BOOK)
      return make_envelope<schema::AllocBook>([&](schema::AllocBook::Builder b) {
        auto offers = pool.offers();
        auto lo = b.initOffers(static_cast<unsigned>(offers.size()));
        for (unsigned i = 0; i < offers.size(); ++i)
          fill_offer(lo[i], offers[i], 0, static_cast<uint64_t>(offers[i].expires_ms));
        auto leases = pool.leases();
        auto ll = b.initLeases(static_cast<unsigned>(leases.size()));
        for (unsigned i = 0; i < leases.size(); ++i) {
          ll[i].setJob(kj::arrayPtr(leases[i].job.data(), 32));
          fill_lease(ll[i].initLease(), leases[i]);
          ll[i].setPriority(leases[i].priority);
        }
        auto rtts = pool.rtts();
        auto lr = b.initSiteRtts(static_cast<unsigned>(rtts.size()));
        for (unsigned i = 0; i < rtts.size(); ++i) {
          auto& [x, y, ms] = rtts[i];
          lr[i].setA(x);
          lr[i].setB(y);
          lr[i].setMs(ms);
          bool pinned = false;
          for (auto& [p, q, _] : ctx.site_rtts)
            pinned = pinned || (p == x && q == y) || (p == y && q == x);
          lr[i].setMeasured(!pinned);
        }
      });
    auto job = job_of(q.getJob(), "AllocQuery");
    if (!job)
      return job.error();
    auto now = wall_ms();
    auto held = [&]() {
      alloc::decision d;
      for (auto& l : pool.leases())
        if (l.job == *job)
          d.leases.push_back(l);
      d.what = d.leases.empty() ? alloc::decision::kind::refused : alloc::decision::kind::granted;
      return d;
    };
    switch (q.which()) {
      case schema::AllocQuery::STATUS: {
        auto d = held();
        if (d.what != alloc::decision::kind::granted) {
          d.what = asks.count(*job) ? alloc::decision::kind::waiting
                                    : alloc::decision::kind::refused;
          d.why = asks.count(*job) ? "waiting for trainers" : "no ask of this job is known";
        }
        // A signed lease entitles its bearer to the trainers: only to the
        // job's coordinator (its token); anyone else sees the leases bare.
        auto ask = asks.find(*job);
        bool coordinator = ask != asks.end() && same_token(ask->second, q.getToken());
        return reply(*ctx.self, pool, *job, d, preempted.count(*job) > 0, coordinator);
      }
      case schema::AllocQuery::RENEW: {
        auto n = pool.renew(*job, now, q.getRenew() ? q.getRenew() : 10000);
        auto d = held();
        if (n == 0)
          d.why = "this job holds no leases (expired or released)";
        bool lost = lost_news.erase(*job) > 0;
        if (lost && d.why.empty())
          d.why = "lost a trainer";
        if (auto err = persist())
          return err;
        return reply(*ctx.self, pool, *job, d, preempted.count(*job) > 0);
      }
      case schema::AllocQuery::RELEASE: {
        auto ev = pool.release(*job, now);
        for (auto& [granted, d] : ev.granted)
          log_info("allocator: job {} granted {} trainer hosts", ledger::short_hex(granted),
                   d.leases.size());
        asks.erase(*job);
        preempted.erase(*job);
        if (auto err = persist())
          return err;
        return reply(*ctx.self, pool, *job, alloc::decision{alloc::decision::kind::refused, {}, {}, "released"});
      }
      case schema::AllocQuery::REPLACE: {
        auto lost = node_id::from_bytes({q.getReplace().begin(), q.getReplace().size()});
        if (!lost)
          return make_error(errc::invalid_argument, "AllocQuery.replace: " + what_of(lost.error()));
        auto d = pool.replace(*job, *lost, now);
        if (auto err = persist())
          return err;
        return reply(*ctx.self, pool, *job, d);
      }
      case schema::AllocQuery::BOOK: break;
    }
    return make_error(errc::invalid_argument, "AllocQuery: unknown case");
  }

  void tick() {
    auto now = wall_ms();
    auto ev = pool.tick(now);
    for (auto& [job, trainer] : ev.lost) {
      log_warning("allocator: job {} lost its trainer {} (no heartbeat)", ledger::short_hex(job),
                  trainer.short_hex());
      lost_news.insert(job);
    }
    for (auto& job : ev.expired) {
      log_info("allocator: job {}'s leases expired (not renewed)", ledger::short_hex(job));
      asks.erase(job);
    }
    for (auto& [job, why] : ev.refused) {
      log_info("allocator: job {}: {}", ledger::short_hex(job), why);
      asks.erase(job);
    }
    for (auto& [job, d] : ev.granted)
      log_info("allocator: job {} granted {} trainer hosts", ledger::short_hex(job),
               d.leases.size());
    if (!ev.lost.empty() || !ev.expired.empty() || !ev.refused.empty() || !ev.granted.empty())
      if (auto err = persist())
        log_warning("allocator: persisting the book failed: {}", describe(err));
  }
};

using allocator_actor = caf::stateful_actor<allocator_state>;

caf::behavior allocator_role(allocator_actor* self, role_context ctx,
                             std::shared_ptr<store::environment> env,
                             std::shared_ptr<ledger::chain> chain) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.env = std::move(env);
  st.chain = std::move(chain);
  for (auto& [a, b, ms] : st.ctx.site_rtts)
    st.pool.set_rtt(a, b, ms);
  if (auto err = st.restore())
    log_error("allocator: the stored book is unreadable, starting empty: {}", describe(err));
  st.table = std::make_unique<message_table>("allocator", allocator_access);
  st.table->on<schema::SignedOffer>([self](schema::SignedOffer::Reader r) -> caf::result<envelope> {
    auto out = self->state.on_offer(r);
    if (!out)
      return out.error();
    return *out;
  });
  st.table->on<schema::AllocAsk>([self](const envelope& env, schema::AllocAsk::Reader r)
                                   -> caf::result<envelope> {
    auto out = self->state.on_ask(env, r);
    if (!out)
      return out.error();
    return *out;
  });
  st.table->on<schema::AllocQuery>(
    [self](schema::AllocQuery::Reader r) { return self->state.check_query(r); },
    [self](schema::AllocQuery::Reader r) -> caf::result<envelope> {
    auto out = self->state.on_query(r);
    if (!out)
      return out.error();
    return *out;
  });
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
    [self](rating_atom, const std::vector<std::string>& passed,
           const std::vector<std::string>& failed) { self->state.rate(passed, failed); },
    [self](tick_atom) {
      self->state.tick();
      // Measured round trips between sites (the directory's pings, spread
      // by gossip) for every pair host.toml does not pin with [[site_rtt]].
      self->request(self->state.ctx.directory, std::chrono::seconds(1), rtt_atom::value)
        .then(
          [self](const std::vector<std::string>& a, const std::vector<std::string>& b,
                 const std::vector<double>& ms) {
            auto& st = self->state;
            for (size_t i = 0; i < a.size() && i < b.size() && i < ms.size(); ++i) {
              bool pinned = false;
              for (auto& [x, y, _] : st.ctx.site_rtts)
                pinned = pinned || (x == a[i] && y == b[i]) || (x == b[i] && y == a[i]);
              if (!pinned)
                st.pool.set_rtt(a[i], b[i], ms[i]);
            }
          },
          [](caf::error&) {});
      self->delayed_send(self, std::chrono::seconds(1), tick_atom::value);
    },
  };
}

} // namespace

caf::expected<caf::actor> spawn_allocator(caf::actor_system& sys, const role_context& ctx) {
  auto hs = open_host_store(ctx);
  if (!hs)
    return hs.error();
  // Detached: every change is an LMDB write with fsync.
  return sys.spawn<caf::detached>(allocator_role, ctx, std::move(hs->env), std::move(hs->chain));
}

envelope sign_alloc_ask(const identity& payer, const std::array<uint8_t, 32>& chain,
                        schema::AllocAsk::Reader ask) {
  capnp::MallocMessageBuilder tmp;
  tmp.setRoot(ask);
  auto b = tmp.getRoot<schema::AllocAsk>();
  auto sig = payer.sign(request_signing_bytes<schema::AllocAsk>("aicon-alloc-v1", chain, b.asReader()));
  b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  return copy_envelope<schema::AllocAsk>(b.asReader());
}

envelope make_signed_offer(const identity& self, const alloc::offer& o, uint32_t ttl_ms,
                           uint64_t time_ms) {
  return make_envelope<schema::SignedOffer>([&](schema::SignedOffer::Builder b) {
    fill_offer(b.initOffer(), o, ttl_ms, time_ms);
    auto sig = self.sign(offer_signing_bytes(b.getOffer().asReader()));
    b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  });
}

caf::expected<signed_lease> verified_lease(schema::LeaseInfo::Reader l) {
  if (l.getJob().size() != 32 || l.getTrainer().size() != 32)
    return make_error(errc::invalid_argument, "lease: job and trainer must be 32 bytes");
  auto allocator = node_id::from_bytes({l.getAllocator().begin(), l.getAllocator().size()});
  if (!allocator)
    return make_error(errc::invalid_argument, "lease.allocator: " + what_of(allocator.error()));
  auto sig = l.getSignature();
  if (!verify_signature(*allocator, lease_signing_bytes(l), {sig.begin(), sig.size()}))
    return make_error(errc::bad_signature,
                      fmt::format("lease: not signed by the allocator it names ({})",
                                  allocator->short_hex()));
  signed_lease out;
  out.allocator = *allocator;
  std::memcpy(out.lease.job.data(), l.getJob().begin(), 32);
  std::memcpy(out.lease.trainer.bytes.data(), l.getTrainer().begin(), 32);
  out.lease.count = l.getCount();
  out.lease.price = l.getPrice();
  out.lease.expires_ms = static_cast<int64_t>(l.getExpiresMs());
  return out;
}

std::map<node_id, envelope> signed_leases_of(const envelope& r) {
  std::map<node_id, envelope> out;
  opened<schema::AllocReply> a{r};
  if (!a || a->which() != schema::AllocReply::GRANTED)
    return out;
  for (auto li : a->getGranted())
    if (auto id = node_id::from_bytes({li.getTrainer().begin(), li.getTrainer().size()}))
      out.insert_or_assign(*id, copy_envelope<schema::LeaseInfo>(li));
  return out;
}

std::vector<alloc::lease> leases_of(const envelope& r) {
  std::vector<alloc::lease> out;
  opened<schema::AllocReply> a{r};
  if (!a || a->which() != schema::AllocReply::GRANTED)
    return out;
  for (auto li : a->getGranted()) {
    alloc::lease l;
    std::memcpy(l.job.data(), a->getJob().begin(), std::min<size_t>(32, a->getJob().size()));
    std::memcpy(l.trainer.bytes.data(), li.getTrainer().begin(),
                std::min<size_t>(32, li.getTrainer().size()));
    l.count = li.getCount();
    l.price = li.getPrice();
    l.expires_ms = static_cast<int64_t>(li.getExpiresMs());
    out.push_back(l);
  }
  return out;
}

} // namespace aicon
