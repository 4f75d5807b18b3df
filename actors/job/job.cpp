#include "actors/job/job.hpp"

#include <algorithm>
#include <chrono>
#include <future>
#include <thread>

#include <fmt/format.h>
#include <sodium.h>

#include "actors/allocator/allocator.hpp"
#include "actors/data_node/custody.hpp"
#include "actors/job/economy.hpp"
#include "actors/trainer/model.hpp"
#include "actors/trainer/trainer.hpp"
#include "schemas/alloc.capnp.h"
#include "runtime/error.hpp"
#include "schemas/trainer.capnp.h"

namespace aicon::train {

namespace {

using clock_type = std::chrono::steady_clock;

struct rank_place {
  node_id host;
  caf::actor role;
};

struct ring_state {
  std::array<uint8_t, 32> session{};
  std::array<uint8_t, 32> link_key{};
  std::array<uint8_t, 32> token{}; ///< the session's capability (TrainerJoin.token)
  std::vector<rank_place> ranks;
  uint64_t train_rows = 0;
};

void fill_config(schema::TrainConfig::Builder b, const job_options& o,
                 const std::array<uint8_t, 32>& link_key) {
  b.setTransport(o.transport);
  if (o.transport != transport::ACTOR)
    b.setLinkKey(kj::arrayPtr(link_key.data(), 32));
  b.setModel(o.model);
  b.setSeed(o.seed);
  b.setGlobalBatch(o.global_batch);
  b.setLr(o.lr);
  b.setMomentum(o.momentum);
  b.setOptimizer(o.optimizer == "adamw" ? schema::Optimizer::ADAMW : schema::Optimizer::SGD);
  b.setWeightDecay(o.weight_decay);
  b.setDataFile(o.data_file);
  b.setTestPercent(o.test_percent);
  b.setSplitSeed(o.split_seed);
  b.setStandardize(o.standardize);
  b.setChunkBytes(o.chunk_bytes);
  b.setCredits(o.credits);
  b.setRingTimeoutMs(o.ring_timeout_ms);
  b.setJob(kj::arrayPtr(o.job.data(), 32));
  if (!o.dataset.empty()) {
    std::vector<uint8_t> id;
    for (size_t i = 0; i + 1 < o.dataset.size() && id.size() < 32; i += 2)
      id.push_back(static_cast<uint8_t>(std::stoi(o.dataset.substr(i, 2), nullptr, 16)));
    b.setDataset(kj::arrayPtr(id.data(), id.size()));
    auto nodes = b.initDataNodes(static_cast<unsigned>(o.data_nodes.size()));
    for (unsigned i = 0; i < o.data_nodes.size(); ++i)
      nodes.set(i, kj::arrayPtr(o.data_nodes[i].bytes.data(), 32));
  }
}

/// Sends every request at once (one thread each) and waits for all.
std::vector<caf::expected<envelope>> ask_all(const job_link& c, const std::vector<caf::actor>& dst,
                                             const std::vector<envelope>& reqs,
                                             std::chrono::milliseconds timeout) {
  std::vector<std::future<caf::expected<envelope>>> futures;
  for (size_t i = 0; i < dst.size(); ++i)
    futures.push_back(std::async(std::launch::async, [&c, d = dst[i], r = reqs[i], timeout]() {
      return c.request(d, r, timeout);
    }));
  std::vector<caf::expected<envelope>> out;
  for (auto& f : futures)
    out.push_back(f.get());
  return out;
}

/// A TrainQuery for `rank` of `ring` (its session and token), `what` set.
envelope query(const ring_state& ring, uint32_t rank,
               const std::function<void(schema::TrainQuery::Builder)>& what) {
  return make_envelope<schema::TrainQuery>([&](schema::TrainQuery::Builder b) {
    b.setSession(kj::arrayPtr(ring.session.data(), 32));
    b.setRank(rank);
    b.setToken(kj::arrayPtr(ring.token.data(), 32));
    what(b);
  });
}

/// The same TrainQuery to ranks `first`.. of `ring` at once.
std::vector<caf::expected<envelope>> ask_ranks(const job_link& c, const ring_state& ring,
                                               uint32_t first,
                                               const std::function<void(schema::TrainQuery::Builder)>& what,
                                               std::chrono::milliseconds timeout) {
  std::vector<caf::actor> dst;
  std::vector<envelope> reqs;
  for (auto r = first; r < ring.ranks.size(); ++r) {
    dst.push_back(ring.ranks[r].role);
    reqs.push_back(query(ring, r, what));
  }
  return ask_all(c, dst, reqs, timeout);
}

/// Hosts that still answer, nearest first (round trip of a trainer-role
/// query that names no session).
std::vector<std::pair<node_id, caf::actor>> live_hosts(const job_link& c, const std::vector<node_id>& hosts) {
  std::vector<std::tuple<double, node_id, caf::actor>> found;
  for (auto& h : hosts) {
    auto role = c.lookup("trainer@" + h.hex());
    if (!role)
      continue;
    ring_state probe;
    auto t0 = clock_type::now();
    auto r = c.request(*role, query(probe, 0, [](auto b) { b.setEvaluate(); }),
                       std::chrono::milliseconds(2000));
    double rtt = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
    // "no trainer of rank 0 for session ..." is the expected answer; a
    // timeout or a dead link is not.
    if (!r && (code_of(r.error()) == errc::timeout || code_of(r.error()) == errc::peer_down
               || code_of(r.error()) == errc::unknown_node || code_of(r.error()) == errc::internal))
      continue;
    found.emplace_back(rtt, h, *role);
  }
  std::stable_sort(found.begin(), found.end(),
                   [](auto& a, auto& b) { return std::get<0>(a) < std::get<0>(b); });
  std::vector<std::pair<node_id, caf::actor>> out;
  for (auto& [rtt, h, role] : found)
    out.emplace_back(h, role);
  return out;
}

using host_counts = std::map<node_id, uint32_t>;

caf::expected<ring_state> form_ring(const job_link& c, const job_options& o,
                                    const std::vector<std::pair<node_id, caf::actor>>& hosts,
                                    const std::vector<uint8_t>& checkpoint,
                                    const host_counts& counts,
                                    const std::map<node_id, envelope>& leases) {
  // With a dataset and an escrow: each trainer host gets the payer's grant
  // for its keys (the data nodes check it against the escrow).
  std::map<node_id, envelope> grants;
  if (!o.signed_grants.empty()) {
    for (auto& [h, role] : hosts)
      if (auto g = o.signed_grants.find(h); g != o.signed_grants.end())
        grants.emplace(h, g->second);
  } else if (!o.dataset.empty() && o.payer && o.chain) {
    std::array<uint8_t, 32> dataset{}, chain{};
    for (size_t i = 0; i < 32; ++i)
      dataset[i] = static_cast<uint8_t>(std::stoi(o.dataset.substr(2 * i, 2), nullptr, 16));
    std::memcpy(chain.data(), o.chain->data(), 32);
    auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                       std::chrono::system_clock::now().time_since_epoch())
                                       .count());
    for (auto& [h, role] : hosts)
      grants.emplace(h, data::make_data_grant(*o.payer, chain, o.job, h, dataset,
                                              now + o.grant_ms));
  }
  ring_state ring;
  randombytes_buf(ring.session.data(), 32);
  randombytes_buf(ring.link_key.data(), 32);
  randombytes_buf(ring.token.data(), 32);
  for (auto& [h, role] : hosts) {
    auto it = counts.find(h);
    auto per_host = it == counts.end() ? o.trainers_per_host : it->second;
    for (uint32_t t = 0; t < per_host; ++t)
      ring.ranks.push_back({h, role});
  }
  auto n = static_cast<uint32_t>(ring.ranks.size());
  std::vector<caf::actor> dst;
  std::vector<envelope> reqs;
  auto now_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
  for (uint32_t r = 0; r < n; ++r) {
    auto& right = ring.ranks[(r + 1) % n].host;
    dst.push_back(ring.ranks[r].role);
    // A join spends one of the host's trainer slots: it carries the
    // allocator's lease of that host, or else this client's own signature
    // (taken by hosts whose operator lists this client).
    auto lease = leases.find(ring.ranks[r].host);
    auto join = make_envelope<schema::TrainerJoin>([&](schema::TrainerJoin::Builder b) {
      b.setSession(kj::arrayPtr(ring.session.data(), 32));
      b.setRank(r);
      b.setSize(n);
      b.setRight(kj::arrayPtr(right.bytes.data(), 32));
      b.setToken(kj::arrayPtr(ring.token.data(), 32));
      fill_config(b.initConfig(), o, ring.link_key);
      if (auto g = grants.find(ring.ranks[r].host); g != grants.end())
        b.getConfig().setDataGrant(opened<schema::DataGrant>{g->second}.root());
      if (!checkpoint.empty())
        b.setCheckpoint(kj::arrayPtr(checkpoint.data(), checkpoint.size()));
      if (lease != leases.end())
        b.setLease(opened<schema::LeaseInfo>{lease->second}.root());
    });
    reqs.push_back(lease != leases.end()
                     ? join
                     : sign_trainer_join(c.self(), opened<schema::TrainerJoin>{join}.root(),
                                         now_ms));
  }
  // Hosts that have just started may not be linked to each other yet: a
  // join that cannot find its right neighbour is retried for a while.
  std::vector<caf::expected<envelope>> acks;
  for (int attempt = 0;; ++attempt) {
    acks = ask_all(c, dst, reqs, std::chrono::minutes(5));
    bool unlinked = false;
    for (auto& a : acks)
      unlinked |= !a && code_of(a.error()) == errc::unknown_node;
    if (!unlinked || attempt >= 120) // 30 s: peers dial each other with back-off
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  if (o.on_ring) {
    std::vector<node_id> rank_hosts;
    for (auto& r : ring.ranks)
      rank_hosts.push_back(r.host);
    uint64_t from = 0;
    if (!checkpoint.empty())
      if (auto cp = parse_checkpoint(checkpoint, "checkpoint"))
        from = cp->step;
    o.on_ring(ring.session, ring.token, rank_hosts, from);
  }
  for (uint32_t r = 0; r < n; ++r) {
    if (!acks[r])
      return make_error(code_of(acks[r].error()),
                        fmt::format("trainer {} on {} did not join: {}", r,
                                    ring.ranks[r].host.short_hex(), what_of(acks[r].error())));
    opened<schema::JoinAck> a{*acks[r]};
    if (!a)
      return a.error();
    ring.train_rows = a->getTrainRows();
  }
  if (o.transport != transport::ACTOR && (n > 1 || o.transport == transport::NCCL)) {
    std::vector<envelope> ok;
    for (auto& a : acks)
      ok.push_back(*a);
    if (auto err = link_streams(c, ring.session, ring.token, dst, ok))
      return err;
  }
  return ring;
}

void finish_ring(const job_link& c, const ring_state& ring, std::vector<envelope>* logs,
                 const std::optional<node_id>& verifier = std::nullopt, uint64_t keep_ms = 0) {
  auto out = ask_ranks(
    c, ring, 0,
    [&](schema::TrainQuery::Builder b) {
      b.setFinish();
      if (verifier)
        b.setVerifier(kj::arrayPtr(verifier->bytes.data(), 32));
      b.setKeepMs(keep_ms);
    },
    std::chrono::seconds(10));
  if (logs)
    for (auto& r : out)
      if (r)
        logs->push_back(*r);
}

/// The job's side of the allocator: ask, wait, renew, replace, release.
struct allocation {
  caf::actor allocator;
  envelope ask;
  std::array<uint8_t, 32> job{};
  std::array<uint8_t, 32> token{}; ///< the ask's capability, for renew/release/replace
  host_counts counts;
  std::map<node_id, envelope> leases; ///< the allocator's signed lease per host
  std::map<node_id, uint64_t> prices; ///< each host's lease price per trainer-step
  clock_type::time_point renewed = clock_type::now();

  caf::expected<envelope> query(const job_link& c, const std::function<void(schema::AllocQuery::Builder)>& f) {
    auto q = make_envelope<schema::AllocQuery>([&](schema::AllocQuery::Builder b) {
      b.setJob(kj::arrayPtr(job.data(), 32));
      b.setToken(kj::arrayPtr(token.data(), 32));
      f(b);
    });
    return c.request(allocator, q, std::chrono::seconds(10));
  }

  /// Asks and waits until granted; fills `counts`.
  caf::error acquire(const job_link& c, const job_options& o, job_result& result) {
    // A job resumed with its token may still hold its leases: take them.
    caf::expected<envelope> r = make_error(errc::not_found, "not asked yet");
    if (o.alloc_token) {
      auto held = query(c, [](schema::AllocQuery::Builder b) { b.setStatus(); });
      if (held && opened<schema::AllocReply>{*held}.ok()
          && opened<schema::AllocReply>{*held}->which() == schema::AllocReply::GRANTED)
        r = std::move(held);
    }
    if (!r)
      r = c.request(allocator, ask, std::chrono::seconds(10));
    auto deadline = clock_type::now() + std::chrono::milliseconds(o.alloc_deadline_ms);
    std::string last_why;
    for (;;) {
      if (!r)
        return make_error(code_of(r.error()), "allocator: " + what_of(r.error()));
      opened<schema::AllocReply> a{*r};
      if (!a)
        return a.error();
      if (a->which() == schema::AllocReply::GRANTED) {
        counts.clear();
        for (auto& l : leases_of(*r)) {
          counts[l.trainer] = l.count; // the job's whole count on that host
          prices[l.trainer] = l.price;
        }
        leases = signed_leases_of(*r);
        result.events.push_back(fmt::format("allocator granted {} trainers on {} hosts",
                                            o.trainers, counts.size()));
        renewed = clock_type::now();
        return caf::none;
      }
      if (a->which() == schema::AllocReply::REFUSED)
        return make_error(errc::invalid_argument,
                          fmt::format("allocator: {}", a->getRefused().cStr()));
      std::string why = a->getWaiting();
      if (why != last_why) {
        result.events.push_back("allocator: " + why);
        last_why = why;
      }
      if (o.cancel && o.cancel->load())
        return make_error(errc::cancelled, "job cancelled while waiting for trainers");
      if (o.alloc_deadline_ms && clock_type::now() > deadline)
        return make_error(errc::timeout,
                          fmt::format("allocator: no {} trainers within {} ms ({})", o.trainers,
                                      o.alloc_deadline_ms, why));
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      r = query(c, [](schema::AllocQuery::Builder b) { b.setStatus(); });
    }
  }

  /// Renews the leases; true when the allocator asks this job to yield.
  caf::expected<bool> renew(const job_link& c, const job_options& o) {
    renewed = clock_type::now();
    auto r = query(c, [&](schema::AllocQuery::Builder b) { b.setRenew(o.lease_ms); });
    if (!r)
      return r.error();
    opened<schema::AllocReply> a{*r};
    if (!a)
      return a.error();
    for (auto& [host, lease] : signed_leases_of(*r)) // later expiries
      leases.insert_or_assign(host, lease);
    // Preempted, or the leases lapsed (a renewal came too late): either way
    // the trainers are no longer this job's; it yields and asks again.
    return a->getPreempted() || a->which() != schema::AllocReply::GRANTED;
  }

  /// Replacement trainers for a lost host (as many as it had).
  std::vector<node_id> replace(const job_link& c, const node_id& lost) {
    std::vector<node_id> got;
    auto n = counts.count(lost) ? counts[lost] : 1;
    counts.erase(lost);
    leases.erase(lost);
    for (uint32_t i = 0; i < n; ++i) {
      auto r = query(c, [&](schema::AllocQuery::Builder b) {
        b.setReplace(kj::arrayPtr(lost.bytes.data(), 32));
      });
      if (!r)
        break;
      auto granted = leases_of(*r);
      if (granted.empty())
        break;
      for (auto& l : granted) {
        counts[l.trainer] = l.count; // the job's whole count on that host
        prices[l.trainer] = l.price;
        got.push_back(l.trainer);
      }
      for (auto& [host, lease] : signed_leases_of(*r))
        leases.insert_or_assign(host, lease);
    }
    return got;
  }

  void release(const job_link& c) {
    (void)query(c, [](schema::AllocQuery::Builder b) { b.setRelease(); });
  }
};

std::vector<node_id> hosts_of(const host_counts& counts) {
  std::vector<node_id> out;
  for (auto& [h, n] : counts)
    out.push_back(h);
  return out;
}

} // namespace

caf::error link_streams(const job_link& c, const std::array<uint8_t, 32>& session,
                        const std::array<uint8_t, 32>& token,
                        const std::vector<caf::actor>& roles, const std::vector<envelope>& acks) {
  auto n = static_cast<uint32_t>(roles.size());
  std::vector<envelope> reqs;
  opened<schema::JoinAck> first{acks[0]};
  if (!first)
    return first.error();
  bool nccl = first->getNcclId().size() > 0;
  if (!nccl && n < 2)
    return caf::none;
  if (nccl) {
    // nccl: rank 0's unique id to every rank, all at once.
    for (uint32_t r = 0; r < n; ++r)
      reqs.push_back(make_envelope<schema::RingLink>([&](schema::RingLink::Builder b) {
        b.setSession(kj::arrayPtr(session.data(), 32));
        b.setRank(r);
        b.setToken(kj::arrayPtr(token.data(), 32));
        b.setNcclId(first->getNcclId());
      }));
  }
  for (uint32_t r = 0; r < n && !nccl; ++r) {
    opened<schema::JoinAck> right{acks[(r + 1) % n]};
    if (!right)
      return right.error();
    if (right->getLinkPort() == 0)
      return make_error(errc::invalid_argument,
                        fmt::format("trainer {} offers no ring stream (an older host?)",
                                    (r + 1) % n));
    reqs.push_back(make_envelope<schema::RingLink>([&](schema::RingLink::Builder b) {
      b.setSession(kj::arrayPtr(session.data(), 32));
      b.setRank(r);
      b.setToken(kj::arrayPtr(token.data(), 32));
      b.setHost(right->getLinkHost());
      b.setPort(right->getLinkPort());
    }));
  }
  auto out = ask_all(c, roles, reqs, std::chrono::seconds(60));
  for (uint32_t r = 0; r < n; ++r)
    if (!out[r])
      return make_error(code_of(out[r].error()),
                        fmt::format("trainer {} could not link its ring: {}", r,
                                    what_of(out[r].error())));
  return caf::none;
}

caf::expected<job_result> run_job(const job_link& c, const job_options& o_in, const progress_fn& progress) {
  auto o = o_in;
  if (!o.allocator && (o.hosts.empty() || o.trainers_per_host == 0))
    return make_error(errc::invalid_argument, "a job needs at least one host and one trainer");
  if (o.allocator && o.trainers == 0)
    return make_error(errc::invalid_argument, "a job through the allocator needs trainers >= 1");
  if (o.checkpoint_every == 0)
    return make_error(errc::invalid_argument, "checkpoint_every must be > 0");
  if (!o.dataset.empty()
      && (o.dataset.size() != 64
          || o.dataset.find_first_not_of("0123456789abcdef") != std::string::npos))
    return make_error(errc::invalid_argument, "dataset: give its full id (64 hex digits)");
  if (!o.dataset.empty() && o.data_nodes.empty())
    return make_error(errc::invalid_argument, "a dataset needs the data nodes that hold it");
  job_result result;
  auto t_start = clock_type::now();
  std::optional<allocation> alloc_state;
  if (o.allocator) {
    auto a = c.lookup("allocator@" + o.allocator->hex());
    if (!a)
      return make_error(code_of(a.error()), "allocator: " + what_of(a.error()));
    if (!o.payer)
      return make_error(errc::invalid_argument,
                        "a job with an allocator needs its payer's key (job_options.payer): "
                        "the allocator takes only asks the escrow's payer signed");
    auto ledger = c.lookup("ledger@" + o.allocator->hex());
    if (!ledger)
      return make_error(code_of(ledger.error()), "the allocator's ledger: " + what_of(ledger.error()));
    auto chain = chain_id_of([&](envelope q) {
      return c.request(*ledger, std::move(q), std::chrono::seconds(10));
    });
    if (!chain)
      return chain.error();
    o.chain.emplace();
    std::memcpy(o.chain->data(), chain->data(), 32);
    alloc_state.emplace();
    alloc_state->allocator = *a;
    alloc_state->job = o.job;
    if (o.alloc_token)
      alloc_state->token = *o.alloc_token;
    else
      randombytes_buf(alloc_state->token.data(), 32);
    auto unsigned_ask = make_envelope<schema::AllocAsk>([&](schema::AllocAsk::Builder b) {
      b.setToken(kj::arrayPtr(alloc_state->token.data(), 32));
      b.setJob(kj::arrayPtr(o.job.data(), 32));
      b.setK(o.trainers);
      b.setDevice(o.device);
      b.setMaxPrice(o.max_price);
      b.setSteps(o.steps);
      b.setDataSite(o.data_site);
      b.setPriority(o.priority);
      b.setDeadlineMs(o.alloc_deadline_ms);
      b.setLeaseMs(o.lease_ms);
    });
    alloc_state->ask = sign_alloc_ask(*o.payer, *chain,
                                      opened<schema::AllocAsk>{unsigned_ask}.root());
    if (auto err = alloc_state->acquire(c, o, result))
      return err;
    o.hosts = hosts_of(alloc_state->counts);
  }
  // Whatever happens from here, an allocation is given back.
  struct releaser {
    const job_link& c;
    std::optional<allocation>& a;
    ~releaser() {
      if (a)
        a->release(c);
    }
  } release_at_end{c, alloc_state};
  // A dataset without an allocator: the payer's grants (the dataset's
  // owner's, for its own data) name the data nodes' chain.
  if (!o.chain && !o.dataset.empty() && o.payer) {
    caf::expected<std::array<uint8_t, 32>> chain =
      make_error(errc::not_found, "no data node of the job keeps a chain (ledger role)");
    for (auto& dn : o.data_nodes) {
      auto ledger = c.lookup("ledger@" + dn.hex());
      if (!ledger)
        continue;
      chain = chain_id_of([&](envelope q) {
        return c.request(*ledger, std::move(q), std::chrono::seconds(10));
      });
      if (chain)
        break;
    }
    if (!chain)
      return make_error(code_of(chain.error()),
                        "the dataset's grants need the data nodes' chain id: " + what_of(chain.error()));
    o.chain = *chain;
  }
  auto counts = [&]() { return alloc_state ? alloc_state->counts : host_counts{o.per_host}; };
  auto leases = [&]() {
    return alloc_state ? alloc_state->leases : std::map<node_id, envelope>{};
  };
  auto hosts = live_hosts(c, o.hosts);
  if (hosts.empty())
    return make_error(errc::peer_down, "no host with the trainer role answers");
  std::vector<uint8_t> checkpoint = o.resume; // the last one taken (empty: start fresh)
  if (!checkpoint.empty())
    if (auto cp = parse_checkpoint(checkpoint, "the checkpoint to resume from"); !cp)
      return cp.error();
  auto ring = form_ring(c, o, hosts, checkpoint, counts(), leases());
  if (!ring)
    return ring.error();
  result.events.push_back(fmt::format("ring of {} trainers on {} hosts", ring->ranks.size(),
                                      hosts.size()));
  uint64_t step = 0, epoch = 0, cursor = 0;
  uint64_t have_checkpoint = UINT64_MAX; // the step of `checkpoint` (none yet)
  auto keep_checkpoint = [&](std::vector<uint8_t> bytes, uint64_t at) -> caf::error {
    checkpoint = std::move(bytes);
    have_checkpoint = at;
    if (!o.checkpoint_file.empty()) {
      auto parsed = parse_checkpoint(checkpoint, "checkpoint");
      if (!parsed)
        return parsed.error();
      if (auto err = save_checkpoint(o.checkpoint_file, *parsed))
        return err;
    }
    if (o.on_checkpoint)
      o.on_checkpoint(checkpoint);
    return caf::none;
  };
  // The live weights of rank 0, between two runs.
  auto take_checkpoint = [&]() -> caf::error {
    auto r = c.request(ring->ranks[0].role, query(*ring, 0, [](auto b) { b.setCheckpoint(); }),
                       std::chrono::seconds(30));
    if (!r)
      return r.error();
    opened<schema::CheckpointData> cd{*r};
    if (!cd)
      return cd.error();
    return keep_checkpoint({cd->getBytes().begin(), cd->getBytes().end()}, step);
  };
  auto resume_from_checkpoint = [&]() {
    if (checkpoint.empty()) {
      step = epoch = cursor = 0;
    } else {
      auto cp = parse_checkpoint(checkpoint, "checkpoint");
      step = cp->step;
      epoch = cp->epoch;
      cursor = cp->cursor;
    }
  };
  resume_from_checkpoint();
  uint64_t ring_from = step; // the step the current ring started at
  result.earlier = o.earlier;
  // A ring the job leaves (a lost rank, a preemption) finishes: with a
  // verifier its ranks sign their logs and receipts, so the steps it ran
  // up to the last checkpoint are verified and paid with the job's (the
  // steps after it are trained again by the next ring).
  auto retire_ring = [&]() {
    std::vector<envelope> ring_logs;
    finish_ring(c, *ring, o.verifier ? &ring_logs : nullptr, o.verifier, o.earlier_keep_ms);
    if (!o.verifier || have_checkpoint == UINT64_MAX || have_checkpoint <= ring_from
        || ring_logs.empty())
      return;
    if (result.earlier.size() >= max_earlier_rings) {
      result.events.push_back(fmt::format("the ring's steps {} to {} are not rated: {} rings are "
                                          "kept already (a rating takes at most {})",
                                          ring_from, have_checkpoint - 1, result.earlier.size(),
                                          max_earlier_rings));
      return;
    }
    earlier_ring e;
    e.session = ring->session;
    e.token = ring->token;
    for (auto& p : ring->ranks)
      e.rank_hosts.push_back(p.host);
    e.logs = std::move(ring_logs);
    e.first_step = ring_from;
    e.kept_steps = have_checkpoint - ring_from;
    result.events.push_back(fmt::format("the ring's steps {} to {} are kept: {} of its {} ranks' "
                                        "logs go to the rater with the job's",
                                        ring_from, have_checkpoint - 1, e.logs.size(),
                                        e.rank_hosts.size()));
    if (o.on_earlier)
      o.on_earlier(e);
    result.earlier.push_back(std::move(e));
  };
  if (!checkpoint.empty()) {
    have_checkpoint = step;
    result.events.push_back(fmt::format("resumed from the checkpoint of step {}", step));
  }
  bool yield_now = false; // the allocator asked this job to yield (seen in a poll)
  while (step < o.steps) {
    if (o.cancel && o.cancel->load()) {
      // Only work logs are verified and paid: a job cancelled right after
      // its first ring formed (a resumed job) is refunded whole; one with
      // rings kept from before pays for those.
      if ((step > ring_from || !result.earlier.empty()) && o.finish_on_cancel
          && o.finish_on_cancel()) {
        // The steps run so far are the job: their weights, evaluation and
        // work logs, to be verified and paid for.
        result.cancelled = true;
        result.events.push_back(fmt::format("cancelled at step {} of {}", step, o.steps));
        if (have_checkpoint != step)
          if (auto err = take_checkpoint())
            result.events.push_back(fmt::format("checkpoint at step {} failed: {}", step,
                                                describe(err)));
        break;
      }
      finish_ring(c, *ring, nullptr);
      return make_error(errc::cancelled, fmt::format("job cancelled at step {}", step));
    }
    // Leases: renewed a few times per lease period (also beside the steps,
    // below); a preempted job yields.
    if (alloc_state
        && (yield_now
            || clock_type::now() - alloc_state->renewed > std::chrono::milliseconds(o.lease_ms / 4))) {
      bool yield = yield_now;
      yield_now = false;
      if (!yield) {
        auto y = alloc_state->renew(c, o);
        yield = y && *y;
      }
      if (yield) {
        if (have_checkpoint != step)
          if (auto err = take_checkpoint())
            return err;
        retire_ring();
        alloc_state->release(c);
        ++result.preemptions;
        result.events.push_back(fmt::format("preempted (or leases lapsed) at step {}: "
                                            "checkpointed and released",
                                            step));
        if (auto err = alloc_state->acquire(c, o, result))
          return err;
        o.hosts = hosts_of(alloc_state->counts);
        hosts = live_hosts(c, o.hosts);
        auto again = form_ring(c, o, hosts, checkpoint, counts(), leases());
        if (!again)
          return again.error();
        ring = std::move(again);
        resume_from_checkpoint();
        ring_from = step;
        result.events.push_back(fmt::format("resumed from step {} on {} trainers", step,
                                            ring->ranks.size()));
        continue;
      }
    }
    if (cursor + o.global_batch > ring->train_rows) {
      ++epoch;
      cursor = 0;
    }
    auto n = static_cast<uint32_t>(ring->ranks.size());
    // The trainers run the rest of the job on their own: one request per
    // rank, the ring's allreduce their barrier. Beside the steps this
    // coordinator polls rank 0 for progress and checkpoints in batches,
    // renews the leases and, to cancel or yield, asks the ring to stop
    // (every rank stops after the same step).
    auto count = static_cast<uint32_t>(
      std::min<uint64_t>(o.steps - step, std::max<uint32_t>(o.steps_per_request, 1)));
    // A bound on the whole run, clamped to 30 days (CAF adds it to a
    // nanosecond clock); the polls tell sooner when a rank is gone.
    auto run_timeout = std::chrono::milliseconds(std::min<int64_t>(
      (static_cast<int64_t>(o.ring_timeout_ms) * 4 + 60'000) * static_cast<int64_t>(count),
      int64_t{30} * 24 * 3600 * 1000));
    std::vector<std::future<caf::expected<envelope>>> runs;
    for (uint32_t r = 0; r < n; ++r) {
      auto req = make_envelope<schema::TrainStep>([&](schema::TrainStep::Builder b) {
        b.setSession(kj::arrayPtr(ring->session.data(), 32));
        b.setRank(r);
        b.setToken(kj::arrayPtr(ring->token.data(), 32));
        b.setStep(step);
        b.setEpoch(epoch);
        b.setCursor(cursor);
        b.setCount(count);
        b.setCheckpointEvery(o.checkpoint_every);
        b.setUnverified(!o.verifier && !o.keep_evidence); // no rater will ask for the evidence
      });
      runs.push_back(std::async(std::launch::async, [&c, d = ring->ranks[r].role, req, run_timeout]() {
        return c.request(d, req, run_timeout);
      }));
      ++result.step_requests;
    }
    auto running = [&]() {
      for (auto& f : runs)
        if (f.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
          return true;
      return false;
    };
    // Waits up to a poll interval for a run that has not answered yet (not
    // on one that has: that would spin while the others time out).
    auto wait_runs = [&]() {
      for (auto& f : runs)
        if (f.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
          f.wait_for(std::chrono::milliseconds(o.poll_ms));
          return;
        }
    };
    // Ranks other than 0 hear nothing else while they run: a cheap poll
    // (no wait) now and then keeps their slots from being dropped as idle
    // ([limits] trainer_idle_ms on their hosts).
    auto kept_alive = clock_type::now();
    auto keep_alive = [&]() {
      if (n < 2 || clock_type::now() - kept_alive < std::chrono::seconds(1))
        return;
      kept_alive = clock_type::now();
      (void)ask_ranks(c, *ring, 1, [](auto b) { b.initProgress().setWaitMs(0); },
                      std::chrono::seconds(10));
    };
    uint64_t reported = step; // the next step to report
    auto report = [&](uint64_t first, const std::vector<step_report>& batch) {
      for (size_t i = 0; i < batch.size(); ++i) {
        if (first + i < reported)
          continue;
        reported = first + i + 1;
        if (progress)
          progress(batch[i]);
      }
    };
    bool stop_sent = false;
    auto stop_ring = [&](const char* why) {
      (void)ask_ranks(c, *ring, 0, [](auto b) { b.setStop(); }, std::chrono::seconds(10));
      if (!stop_sent)
        result.events.push_back(fmt::format("asked the ring to stop ({}) near step {}", why,
                                            reported));
      stop_sent = true;
    };
    while (running()) {
      ++result.polls;
      auto p = c.request(ring->ranks[0].role, query(*ring, 0, [&](schema::TrainQuery::Builder b) {
                           auto g = b.initProgress();
                           g.setFrom(reported);
                           g.setHaveCheckpoint(have_checkpoint == UINT64_MAX ? 0 : have_checkpoint);
                           g.setWaitMs(o.poll_ms);
                         }),
                         std::chrono::milliseconds(o.ring_timeout_ms * 4 + 60'000));
      std::optional<opened<schema::TrainProgress>> progress_of;
      if (p)
        progress_of.emplace(*p);
      if (progress_of && *progress_of) {
        auto& tp = *progress_of;
        auto losses = tp->getLossSums();
        auto reduce = tp->getAllreduceUs();
        auto took = tp->getStepUs();
        std::vector<step_report> batch;
        for (unsigned i = 0; i < losses.size() && i < reduce.size() && i < took.size(); ++i) {
          step_report r;
          r.step = tp->getFirst() + i;
          r.loss = losses[i] / o.global_batch;
          r.allreduce_ms = reduce[i] / 1000.0;
          r.samples_per_s = took[i] > 0 ? o.global_batch * 1e6 / static_cast<double>(took[i]) : 0;
          r.trainers = n;
          batch.push_back(r);
        }
        report(tp->getFirst(), batch);
        if (!tp->getRunning()) // not started yet, or over: the runs' answers are near
          wait_runs();
        if (tp->getCheckpoint().size() > 0 && tp->getCheckpointStep() != have_checkpoint) {
          std::vector<uint8_t> bytes{tp->getCheckpoint().begin(), tp->getCheckpoint().end()};
          if (auto err = keep_checkpoint(std::move(bytes), tp->getCheckpointStep()))
            result.events.push_back(fmt::format("checkpoint at step {} failed: {}",
                                                tp->getCheckpointStep(), describe(err)));
        }
      } else {
        // Rank 0 does not answer: the runs tell why (a failed allreduce
        // within the ring timeout); wait for them a little.
        wait_runs();
      }
      keep_alive();
      // A stop is sent again each round until the runs end: one that
      // reached a rank before its run began is not kept there.
      if (o.cancel && o.cancel->load())
        stop_ring("cancelled");
      else if (yield_now)
        stop_ring("preempted");
      else if (alloc_state
               && clock_type::now() - alloc_state->renewed > std::chrono::milliseconds(o.lease_ms / 4)) {
        auto y = alloc_state->renew(c, o);
        if (y && *y) {
          yield_now = true;
          stop_ring("preempted");
        }
      }
    }
    std::vector<caf::expected<envelope>> done;
    for (auto& f : runs)
      done.push_back(f.get());
    std::string failed;
    uint64_t ran = 0;
    std::vector<double> ring_losses;
    std::vector<uint64_t> reduce_us, step_us;
    for (uint32_t r = 0; r < n; ++r) {
      if (!done[r]) {
        failed += fmt::format("{}rank {} on {}: {}", failed.empty() ? "" : "; ", r,
                              ring->ranks[r].host.short_hex(), what_of(done[r].error()));
        continue;
      }
      opened<schema::StepDone> d{*done[r]};
      if (!d) {
        failed += fmt::format("{}rank {}: {}", failed.empty() ? "" : "; ", r, what_of(d.error()));
        continue;
      }
      auto last = d->getStep();
      if (last < step || last - step >= count) {
        failed += fmt::format("{}rank {}: ended at step {}, outside its run of {} from {}",
                              failed.empty() ? "" : "; ", r, last, count, step);
        continue;
      }
      if (r == 0) {
        ran = last - step + 1;
        // Each list read once: every get counts against the reader's
        // traversal limit.
        auto losses = d->getLossSums();
        auto reduce = d->getAllreduceUsEach();
        auto took = d->getStepUsEach();
        for (auto v : losses)
          ring_losses.push_back(v);
        for (auto v : reduce)
          reduce_us.push_back(v);
        for (auto v : took)
          step_us.push_back(v);
        if (ring_losses.size() > ran || reduce_us.size() != ring_losses.size()
            || step_us.size() != ring_losses.size())
          failed += fmt::format("{}rank 0: {} step results for {} steps",
                                failed.empty() ? "" : "; ", ring_losses.size(), ran);
      } else if (last - step + 1 != ran) {
        failed += fmt::format("{}rank {}: stopped after step {}, rank 0 after {}",
                              failed.empty() ? "" : "; ", r, last, step + ran - 1);
      }
    }
    if (!failed.empty()) {
      // Elastic: drop the hosts that no longer answer, re-form from the last
      // checkpoint with the survivors.
      result.events.push_back(fmt::format("step {} failed: {}", reported, failed));
      if (result.reforms >= o.max_reforms)
        return make_error(errc::peer_down,
                          fmt::format("step {} failed after {} re-formed rings: {}", reported,
                                      result.reforms, failed));
      retire_ring(); // the survivors finish
      auto wanted = hosts.size();
      hosts = live_hosts(c, o.hosts);
      if (alloc_state) {
        // Replacements from the allocator for the hosts that are gone.
        for (auto& h : o.hosts)
          if (std::none_of(hosts.begin(), hosts.end(), [&](auto& x) { return x.first == h; }))
            for (auto& fresh : alloc_state->replace(c, h))
              result.events.push_back(fmt::format("allocator replaced {} by {}", h.short_hex(),
                                                  fresh.short_hex()));
        o.hosts = hosts_of(alloc_state->counts);
        hosts = live_hosts(c, o.hosts);
        wanted = hosts.size();
      }
      // Replacements for the lost hosts, from the spares still answering.
      std::vector<node_id> unused;
      for (auto& s : o.spare_hosts)
        if (std::none_of(ring->ranks.begin(), ring->ranks.end(),
                         [&](const rank_place& p) { return p.host == s; }))
          unused.push_back(s);
      for (auto& spare : live_hosts(c, unused)) {
        if (hosts.size() >= wanted)
          break;
        if (std::none_of(hosts.begin(), hosts.end(), [&](auto& h) { return h.first == spare.first; })) {
          hosts.push_back(spare);
          result.events.push_back(fmt::format("spare host {} replaces a lost one",
                                              spare.first.short_hex()));
        }
      }
      if (hosts.empty())
        return make_error(errc::peer_down, "every trainer host is gone: " + failed);
      auto again = form_ring(c, o, hosts, checkpoint, counts(), leases());
      if (!again)
        return again.error();
      ring = std::move(again);
      ++result.reforms;
      resume_from_checkpoint();
      ring_from = step;
      result.events.push_back(fmt::format("ring re-formed: {} trainers on {} hosts, from step {}",
                                          ring->ranks.size(), hosts.size(), step));
      continue;
    }
    // The steps the polls did not bring: rank 0's answer ends with them.
    std::vector<step_report> rest;
    uint64_t tail = step + ran - ring_losses.size();
    for (size_t i = 0; i < ring_losses.size(); ++i) {
      step_report r;
      r.step = tail + i;
      r.loss = ring_losses[i] / o.global_batch;
      r.allreduce_ms = reduce_us[i] / 1000.0;
      r.samples_per_s = step_us[i] > 0 ? o.global_batch * 1e6 / static_cast<double>(step_us[i]) : 0;
      r.trainers = n;
      rest.push_back(r);
    }
    report(tail, rest);
    for (uint64_t i = 0; i + 1 < ran; ++i) { // the schedule the trainers followed on their own
      cursor += o.global_batch;
      if (cursor + o.global_batch > ring->train_rows) {
        ++epoch;
        cursor = 0;
      }
    }
    step += ran;
    cursor += o.global_batch;
    if (step == o.steps && have_checkpoint != step)
      if (auto err = take_checkpoint())
        result.events.push_back(fmt::format("checkpoint at step {} failed: {}", step,
                                            describe(err)));
  }
  auto eval = c.request(ring->ranks[0].role, query(*ring, 0, [](auto b) { b.setEvaluate(); }),
                        std::chrono::seconds(60));
  if (!eval)
    return eval.error();
  opened<schema::EvalResult> ev{*eval};
  if (!ev)
    return ev.error();
  result.accuracy = ev->getAccuracy();
  result.test_loss = ev->getLoss();
  result.regression = ev->getRegression();
  result.r2 = ev->getR2();
  result.checkpoint = checkpoint;
  result.steps = step;
  finish_ring(c, *ring, &result.logs, o.verifier);
  result.session = ring->session;
  result.token = ring->token;
  result.ring_from = ring_from;
  for (auto& r : ring->ranks)
    result.rank_hosts.push_back(r.host);
  if (alloc_state)
    result.lease_prices = alloc_state->prices;
  result.train_rows = ring->train_rows;
  result.seconds = std::chrono::duration<double>(clock_type::now() - t_start).count();
  return result;
}

std::string describe_metrics(const job_result& r) {
  if (r.regression)
    return fmt::format("held-out R^2 {:.4f}, mean squared error {:.4f}", r.r2, r.test_loss);
  return fmt::format("held-out accuracy {:.4f}, test loss {:.4f}", r.accuracy, r.test_loss);
}

std::vector<std::string> describe_logs(const std::vector<envelope>& logs) {
  std::vector<std::string> out;
  for (auto& env : logs) {
    opened<schema::SessionLog> l{env};
    if (!l)
      continue;
    out.push_back(fmt::format("work log rank {}: {} steps, root {}, signed by {}", l->getRank(),
                              l->getSteps(),
                              to_hex({l->getLogRoot().begin(), l->getLogRoot().size()}).substr(0, 16),
                              to_hex({l->getTrainer().begin(), l->getTrainer().size()}).substr(0, 8)));
  }
  return out;
}

} // namespace aicon::train
