// The economic loop across real host processes on 127.0.0.1: chain hosts
// c0 (ledger, block generator, allocator, rater) and c1 (ledger, block
// generator), trainer hosts t0 and t1 (2 trainer slots each, price 1 per
// step) heart-beating signed offers to the allocator.
//  - allocation: a job without escrow is refused "insufficient budget"; with
//    escrow it gets all 4 trainers (gang); a second job waits and gets none;
//    the allocator host restarted keeps the leases (LMDB).
//  - end to end: a job escrows its budget, gets its trainers from the
//    allocator, trains on digits, the rater re-executes a sample of every
//    trainer's steps and countersigns their receipts, PoV blocks carrying
//    the session id are committed, the payer settles, the trained weights
//    become the payer's asset and are transferred; every balance equals what
//    the prices and the reward say, and supply = genesis + minted - slashed.
#include <algorithm>
#include <atomic>
#include <csignal>
#include <cstring>
#include <limits>
#include <set>
#include <thread>

#include <sodium.h>

#include "actors/allocator/allocator.hpp"
#include "actors/job/economy.hpp"
#include "actors/job/job.hpp"
#include "actors/job/job_role.hpp"
#include "actors/ledger/chain.hpp"
#include "actors/ledger/state.hpp"
#include "actors/ledger/work.hpp"
#include "actors/rater/rater.hpp"
#include "actors/trainer/model.hpp"
#include "actors/trainer/torch_model.hpp"
#include "fixtures.hpp"
#include "site_proxy.hpp"
#include "schemas/alloc.capnp.h"
#include "schemas/chain.capnp.h"
#include "schemas/job.capnp.h"
#include "schemas/rater.capnp.h"
#include "schemas/trainer.capnp.h"

using namespace aicon;
using namespace aicon::test;

namespace {

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
}

/// A copy of a RateRequest with `f` applied to it (its signature is kept).
template <class F>
envelope tampered(const envelope& env, F f) {
  opened<schema::RateRequest> o{env};
  BOOST_REQUIRE(o.ok());
  capnp::MallocMessageBuilder m;
  m.setRoot(o.root());
  auto b = m.getRoot<schema::RateRequest>();
  f(b);
  return copy_envelope<schema::RateRequest>(b.asReader());
}

std::array<uint8_t, 32> random_job() {
  std::array<uint8_t, 32> j;
  randombytes_buf(j.data(), 32);
  return j;
}

struct economy_cluster {
  test::temp_dir root;
  std::vector<node_dir> nodes; // c0, c1, t0, t1
  std::vector<std::string> names{"c0", "c1", "t0", "t1"};
  std::vector<uint16_t> ports;
  std::vector<running_host> hosts;
  node_dir cli;
  aicon::identity payer = aicon::identity::generate();

  aicon::identity worker = aicon::identity::generate();
  std::filesystem::path genesis;
  std::array<uint8_t, 32> chain{}; ///< the chain's id, what every transaction names
  std::unique_ptr<client> c;
  uint64_t payer_nonce = 0;
  static constexpr uint64_t payer_funds = 1'000'000, trainer_stake = 1'000;
  /// wan: links between the sites run through a proxy adding 15 ms each way,
  /// and no [[site_rtt]] is configured (the allocator must measure).
  bool wan = false;
  std::vector<std::unique_ptr<site_proxy>> proxies;

  /// cheat_node: the node whose own host.toml turns on fault injection
  /// ([faults] trainer_cheat_percent = 20): its trainers cheat.
  static constexpr size_t no_cheater = ~size_t{0};
  size_t cheater_node = no_cheater;
  bool cheater_weights = false;

  /// `rater_env`: VAR=value settings for c0's process (the rater's).
  /// `cheat_weights`: the cheater computes at all-zero weights and shows
  /// them ([faults] trainer_cheat_weights) instead of sending noise.
  explicit economy_cluster(bool third_trainer = false, bool wan_links = false,
                           size_t cheat_node = no_cheater,
                           std::vector<std::string> rater_env = {}, bool cheat_weights = false)
    : wan(wan_links), cheater_node(cheat_node), cheater_weights(cheat_weights) {
    if (third_trainer)
      names.push_back("t2");
    cli = make_node(root, "client");
    for (auto& n : names) {
      nodes.push_back(make_node(root, n));
      ports.push_back(free_port());
    }
    for (auto& n : nodes) {
      trust(n, cli);
      trust(cli, n);
      for (auto& m : nodes)
        if (&n != &m)
          trust(n, m);
    }
    ledger::genesis_config g;
    g.time_ms = now_ms() - 10'000;
    g.candidates = {{nodes[0].id, 1}, {nodes[1].id, 1}};
    g.committee_size = 2;
    g.initial_difficulty = 100;
    g.difficulty.target_interval_ms = 500;
    g.difficulty.window_blocks = 5;
    g.authorities = {nodes[0].id}; // c0 runs the rater
    g.allocations = {{payer.id(), payer_funds, 0},
                     {nodes[2].id, 0, trainer_stake},
                     {nodes[3].id, 0, trainer_stake}};
    if (third_trainer)
      g.allocations.push_back({nodes[4].id, 0, trainer_stake});
    chain = ledger::chain_id(g);
    genesis = write_file(root.path(), "genesis.toml", ledger::to_toml(g));
    if (wan)
      for (size_t i = 0; i < nodes.size(); ++i)
        proxies.push_back(std::make_unique<site_proxy>(ports[i], 15ms));
    for (size_t i = 0; i < nodes.size(); ++i)
      hosts.push_back(start_host(config(i), root / (names[i] + ".log"), {"-v"},
                                 i == 0 ? rater_env : std::vector<std::string>{}));
    for (size_t i = 0; i < nodes.size(); ++i)
      wait_linked(i);
    client::options opts;
    opts.data_dir = cli.dir;
    opts.threads = 2;
    auto cl = client::start(opts);
    BOOST_REQUIRE_MESSAGE(cl, why(cl));
    c = std::move(*cl);
    for (size_t i = 0; i < nodes.size(); ++i) {
      auto id = c->connect(fmt::format("127.0.0.1:{}", ports[i]), nodes[i].id);
      BOOST_REQUIRE_MESSAGE(id, why(id));
    }
  }

  ~economy_cluster() {
    c.reset();
  }

  /// Host i SIGKILLed and started again with `[faults] FAULT = true`
  /// added to its own config (killed, not stopped: a graceful stop of c1
  /// once took over 30 s under a full ctest -j2, see the note).
  void restart_with_fault(size_t i, const std::string& fault) {
    restart_edited(i, "fault", {}, {}, "\n[faults]\n" + fault + " = true\n");
  }

  /// t0 and t1 restarted with one trainer slot each (t1 with `t1_extra`
  /// added to its config): a ring of two spans both hosts.
  void one_slot_each(const std::string& t1_extra) {
    restart_edited(2, "one-slot", "trainer_slots = 2", "trainer_slots = 1", "");
    restart_edited(3, "one-slot", "trainer_slots = 2", "trainer_slots = 1", t1_extra);
    auto slots_offered = [&] {
      auto b = ask(0, "allocator", make_envelope<schema::AllocQuery>([](auto q) { q.setBook(); }));
      uint32_t n = 0;
      if (opened<schema::AllocBook> book{b ? *b : envelope{}}; book)
        for (auto o : book->getOffers())
          n += o.getSlots();
      return n;
    };
    // The restarted hosts' offers replace the old ones within a heartbeat
    // (offer_heartbeat_ms = 300): polled until then, at most 10 s.
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (slots_offered() != 2 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(50ms);
    BOOST_REQUIRE_EQUAL(slots_offered(), 2u);
    for (size_t t : {size_t{2}, size_t{3}}) { // this client links to the new processes
      auto id = c->connect(fmt::format("127.0.0.1:{}", ports[t]), nodes[t].id);
      BOOST_REQUIRE_MESSAGE(id, why(id));
    }
  }

  /// Host i SIGKILLed and started again from its own config with `from`
  /// replaced by `to` and `append` added, as `<name>-<tag>`.
  void restart_edited(size_t i, const std::string& tag, const std::string& from,
                      const std::string& to, const std::string& append) {
    auto config = root / (names[i] + ".toml");
    std::string text;
    {
      std::ifstream in{config};
      text.assign(std::istreambuf_iterator<char>{in}, std::istreambuf_iterator<char>{});
    }
    if (!from.empty()) {
      auto at = text.find(from);
      BOOST_REQUIRE_MESSAGE(at != std::string::npos, from << " is not in " << config.string());
      text.replace(at, from.size(), to);
    }
    auto edited = write_file(root.path(), names[i] + "-" + tag + ".toml", text + append);
    BOOST_TEST(hosts[i].proc->stop(SIGKILL, 10s) == 128 + SIGKILL);
    hosts[i] = start_host(edited, root / (names[i] + "-" + tag + ".log"), {"-v"});
    wait_linked(i);
  }

  /// Host `i` killed and started again after job `r` ended (restart_killed),
  /// it takes up its owed evidence, and the rating passes every rank: paid,
  /// nobody slashed.
  train::rating rated_after_restart(size_t i, const train::job_options& o,
                                    const train::job_result& r) {
    restart_killed(i);
    BOOST_TEST(hosts[i].proc->log_text().find(
                 "took up the evidence of 2 finished session(s) owed to their raters")
                 != std::string::npos,
               hosts[i].proc->log_text());
    auto rating = rated(o, r);
    for (auto& v : rating.verdicts)
      BOOST_TEST(v.passed, "rank " << v.rank << ": " << v.why);
    BOOST_TEST(rating.slashed == 0u);
    BOOST_TEST(rating.receipts == o.trainers);
    return rating;
  }

  /// Kills host `i` (SIGKILL) and starts it again from its own config.
  void restart_killed(size_t i) {
    BOOST_TEST(hosts[i].proc->stop(SIGKILL, 10s) == 128 + SIGKILL);
    hosts[i] = start_host(root / (names[i] + ".toml"), root / (names[i] + "-back.log"), {"-v"});
    wait_linked(i);
  }

  /// A job of `steps` on 4 trainers, escrowed by the payer and trained to
  /// its end, not yet rated.
  std::pair<train::job_options, train::job_result> trained_job(uint64_t steps,
                                                               const std::string& model = {},
                                                               uint32_t trainers = 4) {
    auto job = random_job();
    const uint64_t escrow = trainers * steps + 500;
    payer_tx([&](uint64_t n) { return train::make_escrow_lock(payer, chain, n, job, escrow); });
    auto o = allocated_job(job, steps);
    o.trainers = trainers;
    if (!model.empty())
      o.model = model;
    auto r = train::run_job(*c, o);
    BOOST_REQUIRE_MESSAGE(r, why(r));
    return {o, std::move(*r)};
  }

  /// c0's rater's rating of that job, with every rank's verdict.
  train::rating rated(const train::job_options& o, const train::job_result& r) {
    auto reply = ask(0, "rater", rate_request(o, r), 120s);
    BOOST_REQUIRE_MESSAGE(reply, why(reply) << "\n--- c0:\n" << hosts[0].proc->log_text());
    auto rating = train::parse_rating(*reply);
    BOOST_REQUIRE_MESSAGE(rating, why(rating));
    BOOST_REQUIRE(rating->verdicts.size() == o.trainers);
    for (auto& v : rating->verdicts)
      BOOST_TEST_MESSAGE("rank " << v.rank << ": " << (v.passed ? "passed" : "FAILED: " + v.why));
    return *rating;
  }

  void wait_linked(size_t i) {
    for (size_t k = 0; k < nodes.size(); ++k)
      if (k != i)
        BOOST_REQUIRE_MESSAGE(hosts[i].proc->wait_for_log("peer up " + nodes[k].id.short_hex(),
                                                          30s),
                              names[i] << " never linked to " << names[k] << ":\n"
                                       << hosts[i].proc->log_text());
  }

  std::filesystem::path config(size_t i) {
    std::string connect, allow = fmt::format("\"{}\"", cli.id.hex());
    auto site = [](size_t x) { return x == 3 ? "east" : "west"; };
    for (size_t k = 0; k < nodes.size(); ++k)
      if (k != i) {
        auto port = wan && std::string{site(i)} != site(k) ? proxies[k]->port() : ports[k];
        connect += fmt::format("  {{ address = \"127.0.0.1:{}\", node = \"{}\" }},\n", port,
                               nodes[k].id.hex());
        allow += fmt::format(", \"{}\"", nodes[k].id.hex());
      }
    const char* roles[] = {R"("directory", "ledger", "block_generator", "allocator", "rater")",
                           R"("directory", "ledger", "block_generator", "job")",
                           R"("directory", "ledger", "trainer")",
                           R"("directory", "ledger", "trainer")",
                           R"("directory", "ledger", "trainer")"};
    return write_file(
      root.path(), names[i] + ".toml",
      fmt::format("[host]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\nroles = [{}]\n"
                  "site = \"{}\"\ndata_files = [\"{}/tests/data\", \"{}\"]\n[peers]\nallow = [{}]\nconnect = [\n{}]\n[chain]\ngenesis = "
                  "\"{}\"\n[limits]\nblock_takeover_ms = 1000\nvote_wait_ms = 500\n"
                  "ledger_sync_ms = 300\noffer_heartbeat_ms = 300\ntrainer_slots = 2\n"
                  "trainer_price = 1\n{}{}",
                  names[i], ports[i], roles[i], site(i), AICON_SOURCE_DIR,
                  (root / "models").string(), allow, connect,
                  genesis.string(),
                  wan ? "ping_ms = 300\ngossip_ms = 200\n"
                      : "\n[[site_rtt]]\na = \"west\"\nb = \"east\"\nms = 40\n",
                  i == cheater_node ? (cheater_weights ? "\n[faults]\ntrainer_cheat_percent = 20\n"
                                                       "trainer_cheat_weights = true\n"
                                                     : "\n[faults]\ntrainer_cheat_percent = 20\n")
                                    : ""));
  }

  caf::expected<envelope> ask(size_t i, const std::string& role, envelope req,
                              std::chrono::milliseconds timeout = 20s) {
    auto dst = c->lookup(role + "@" + nodes[i].id.hex());
    if (!dst)
      return dst.error();
    return c->request(*dst, std::move(req), timeout);
  }

  /// The chain's id, as host i's ledger reports it.
  std::array<uint8_t, 32> chain_id(size_t i = 0) {
    auto id = train::chain_id_of([&](envelope q) { return ask(i, "ledger", std::move(q)); });
    BOOST_REQUIRE_MESSAGE(id, why(id));
    return *id;
  }

  /// The payer's signed RateRequest for job `o`'s result.
  envelope rate_request(const train::job_options& o, const train::job_result& r) {
    return train::make_rate_request(o, r, payer, chain_id());
  }

  schema::AccountInfo::Reader account_reader(opened<schema::AccountInfo>& a) {
    return a.root();
  }

  /// (balance, nonce, stake) of `who` on host i's chain.
  std::tuple<uint64_t, uint64_t, uint64_t> account(size_t i, const node_id& who) {
    auto reply = ask(i, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                       q.setAccount(kj::arrayPtr(who.bytes.data(), 32));
                     }));
    if (!reply)
      return {0, 0, 0};
    opened<schema::AccountInfo> a{*reply};
    if (!a)
      return {0, 0, 0};
    return {a->getBalance(), a->getNonce(), a->getStake()};
  }

  uint64_t height(size_t i) {
    auto r = ask(i, "ledger", make_envelope<schema::LedgerQuery>([](auto q) { q.setTip(); }));
    if (!r)
      return 0;
    opened<schema::TipInfo> t{*r};
    return t ? t->getHeight() : 0;
  }

  /// Submits the payer's next transaction and waits until both chain hosts
  /// applied it. No work receipt is fed: with no training running, an idle
  /// block commits it (at most one per target interval).
  void payer_tx(const std::function<envelope(uint64_t)>& make) {
    auto nonce = ++payer_nonce;
    auto ack = ask(0, "block_generator", make(nonce));
    BOOST_REQUIRE_MESSAGE(ack, why(ack));
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (std::get<1>(account(0, payer.id())) >= nonce
          && std::get<1>(account(1, payer.id())) >= nonce)
        return;
      std::this_thread::sleep_for(100ms);
    }
    BOOST_FAIL("the payer's transaction " << nonce << " never became final on both chain hosts"
               << "\n--- c0:\n" << hosts[0].proc->log_text() << "\n--- c1:\n"
               << hosts[1].proc->log_text());
  }

  /// The client's own key pays in the job tests: moves `amount` from the
  /// genesis payer to the client's wallet (final on both chain hosts).
  void fund_client(uint64_t amount) {
    payer_tx([&](uint64_t n) {
      return ledger::make_signed_transaction(payer, chain, n, [&](schema::Transaction::Body::Builder b) {
        auto t = b.initTransfer();
        t.setTo(kj::arrayPtr(cli.id.bytes.data(), 32));
        t.setAmount(amount);
      });
    });
  }

  /// `aicon ARGS --connect c1 --data-dir CLIENT` (c1 runs the job role).
  command_result job_cli(std::vector<std::string> args, std::chrono::milliseconds timeout) {
    args.insert(args.begin(), aicon_binary());
    args.insert(args.end(), {"--connect", fmt::format("127.0.0.1:{}", ports[1]), "--data-dir",
                             cli.dir.string()});
    auto r = run_command(args, timeout);
    BOOST_TEST_MESSAGE("aicon " << args[1] << " " << args[2] << " -> " << r.exit_code << "\n"
                                << r.output);
    return r;
  }

  /// Job `job`'s JobInfo from the job host c1.
  envelope job_status(const std::array<uint8_t, 32>& job) {
    auto r = ask(1, "job", make_envelope<schema::JobQuery>([&](auto q) {
                   q.setStatus(kj::arrayPtr(job.data(), 32));
                 }));
    BOOST_REQUIRE_MESSAGE(r, why(r));
    return *r;
  }

  /// Waits (at most 60 s) until job `job` has run `step` steps; returns the
  /// step it reached.
  uint64_t wait_step(const std::array<uint8_t, 32>& job, uint64_t step) {
    auto deadline = std::chrono::steady_clock::now() + 60s;
    for (;;) {
      auto at = opened<schema::JobInfo>{job_status(job)}->getStep();
      if (at >= step || std::chrono::steady_clock::now() > deadline)
        return at;
      std::this_thread::sleep_for(50ms);
    }
  }

  size_t offers() {
    auto r = ask(0, "allocator", make_envelope<schema::AllocQuery>([](auto q) { q.setBook(); }));
    if (!r)
      return 0;
    opened<schema::AllocBook> b{*r};
    return b ? b->getOffers().size() : 0;
  }

  std::vector<alloc::lease> leases_of_job(const std::array<uint8_t, 32>& job) {
    std::vector<alloc::lease> out;
    auto r = ask(0, "allocator", make_envelope<schema::AllocQuery>([](auto q) { q.setBook(); }));
    if (!r)
      return out;
    opened<schema::AllocBook> b{*r};
    if (!b)
      return out;
    for (auto l : b->getLeases())
      if (l.getJob().size() == 32 && std::memcmp(l.getJob().begin(), job.data(), 32) == 0) {
        alloc::lease x;
        std::memcpy(x.trainer.bytes.data(), l.getLease().getTrainer().begin(), 32);
        x.count = l.getLease().getCount();
        out.push_back(x);
      }
    return out;
  }

  /// The coordinator's token of the asks this test makes by hand.
  std::array<uint8_t, 32> alloc_token = random_job();

  /// An AllocAsk signed by `who` (the payer unless said) with `token`.
  envelope alloc_ask(const std::array<uint8_t, 32>& job, uint32_t k, uint64_t steps,
                     const identity* who = nullptr,
                     const std::array<uint8_t, 32>* token = nullptr) {
    auto unsigned_ask = make_envelope<schema::AllocAsk>([&](schema::AllocAsk::Builder b) {
      b.setToken(kj::arrayPtr((token ? *token : alloc_token).data(), 32));
      b.setJob(kj::arrayPtr(job.data(), 32));
      b.setK(k);
      b.setDevice("cpu");
      b.setMaxPrice(1);
      b.setSteps(steps);
      b.setDataSite("west");
      b.setLeaseMs(60000);
    });
    return sign_alloc_ask(who ? *who : payer, chain,
                          opened<schema::AllocAsk>{unsigned_ask}.root());
  }

  /// An AllocQuery of `job` carrying `token`; `set` picks the case.
  template <class F>
  caf::expected<envelope> alloc_query(const std::array<uint8_t, 32>& job,
                                      const std::array<uint8_t, 32>& token, F set) {
    return ask(0, "allocator", make_envelope<schema::AllocQuery>([&](auto q) {
                 q.setJob(kj::arrayPtr(job.data(), 32));
                 q.setToken(kj::arrayPtr(token.data(), 32));
                 set(q);
               }));
  }

  /// A digits job of 4 trainers from c0's allocator at price 1, data in the
  /// west site; c0's rater named as its verifier.
  train::job_options allocated_job(const std::array<uint8_t, 32>& job, uint64_t steps) {
    train::job_options o;
    o.allocator = nodes[0].id;
    o.payer = &payer;
    o.trainers = 4;
    o.max_price = 1;
    o.data_site = "west";
    o.job = job;
    o.verifier = nodes[0].id;
    o.steps = steps;
    o.global_batch = 32;
    o.ring_timeout_ms = 3000;
    o.data_file = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string();
    return o;
  }

  void wait_offers(size_t n) {
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (offers() < n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(100ms);
    BOOST_REQUIRE_MESSAGE(offers() >= n, "the allocator never got " << n << " offers:\n"
                                                                  << hosts[0].proc->log_text());
  }
};

} // namespace

BOOST_AUTO_TEST_SUITE(economy)

BOOST_AUTO_TEST_CASE(gang_allocation_budgets_and_a_restart_that_keeps_leases) {
  economy_cluster ec;
  ec.wait_offers(2);
  auto a = random_job(), b = random_job();
  // Offers that are forged, stale or empty are refused by name and change
  // nothing in the book.
  auto now = static_cast<uint64_t>(now_ms());
  alloc::offer o;
  o.trainer = ec.nodes[2].id; // claims to be t0, signed by someone else
  o.site = "west";
  o.price = 1;
  auto forged = ec.ask(0, "allocator", make_signed_offer(ec.worker, o, 1000, now));
  BOOST_REQUIRE(!forged);
  BOOST_TEST(what_of(forged.error()).find("the signature is not the trainer's")
               != std::string::npos, what_of(forged.error()));
  o.trainer = ec.worker.id();
  auto stale = ec.ask(0, "allocator", make_signed_offer(ec.worker, o, 1000, now - 3'600'000));
  BOOST_REQUIRE(!stale);
  BOOST_TEST(what_of(stale.error()).find("a replayed or stale offer") != std::string::npos,
             what_of(stale.error()));
  o.slots = 0;
  auto empty = ec.ask(0, "allocator", make_signed_offer(ec.worker, o, 1000, now));
  BOOST_REQUIRE(!empty);
  BOOST_TEST(what_of(empty.error()).find("at least one slot") != std::string::npos,
             what_of(empty.error()));
  BOOST_TEST(ec.offers() == 2u);
  // A rate request that names no ranks, or a short job id: refused by name.
  auto no_ranks = ec.ask(0, "rater", make_envelope<schema::RateRequest>([&](auto r) {
                           r.setJob(kj::arrayPtr(a.data(), 32));
                           r.setSession(kj::arrayPtr(b.data(), 32));
                         }));
  BOOST_REQUIRE(!no_ranks);
  BOOST_TEST(what_of(no_ranks.error()).find("0 ranks but 0 logs") != std::string::npos,
             what_of(no_ranks.error()));
  auto short_job = ec.ask(0, "rater", make_envelope<schema::RateRequest>([&](auto r) {
                            r.setJob(kj::arrayPtr(a.data(), 5));
                          }));
  BOOST_REQUIRE(!short_job);
  BOOST_TEST(what_of(short_job.error()).find("must be 32 bytes") != std::string::npos,
             what_of(short_job.error()));
  // No escrow: refused by name.
  auto unpaid = ec.ask(0, "allocator", ec.alloc_ask(a, 4, 100));
  BOOST_REQUIRE(!unpaid);
  BOOST_TEST_MESSAGE(what_of(unpaid.error()));
  BOOST_TEST(what_of(unpaid.error()).find("insufficient budget") != std::string::npos);
  // Escrow both (in one block), then A takes all four trainers.
  auto ack = ec.ask(0, "block_generator", train::make_escrow_lock(ec.payer, ec.chain, 1, a, 400));
  BOOST_REQUIRE_MESSAGE(ack, why(ack));
  ec.payer_nonce = 1;
  ec.payer_tx([&](uint64_t n) { return train::make_escrow_lock(ec.payer, ec.chain, n, b, 400); });
  auto granted = ec.ask(0, "allocator", ec.alloc_ask(a, 4, 100));
  BOOST_REQUIRE_MESSAGE(granted, why(granted));
  auto leases = leases_of(*granted);
  uint32_t slots = 0;
  for (auto& l : leases)
    slots += l.count;
  BOOST_TEST(slots == 4u);
  BOOST_TEST(leases.size() == 2u); // both trainer hosts, 2 each
  // A lease entitles its job to that host's leased slots and nothing else:
  // not another host, not another job, not a third trainer.
  {
    auto signed_leases = signed_leases_of(*granted);
    BOOST_REQUIRE_EQUAL(signed_leases.size(), 2u);
    auto first = signed_leases.begin(), second = std::next(first);
    auto token = random_job();
    auto join = [&](const node_id& host, const envelope& lease, const std::array<uint8_t, 32>& job,
                    const std::array<uint8_t, 32>& session) {
      auto dst = ec.c->lookup("trainer@" + host.hex());
      BOOST_REQUIRE_MESSAGE(dst, why(dst));
      return ec.c->request(*dst, make_envelope<schema::TrainerJoin>([&](schema::TrainerJoin::Builder j) {
                             j.setSession(kj::arrayPtr(session.data(), 32));
                             j.setSize(1);
                             j.setRight(kj::arrayPtr(host.bytes.data(), 32));
                             j.setToken(kj::arrayPtr(token.data(), 32));
                             auto c = j.initConfig();
                             c.setModel("mlp:64-64-10");
                             c.setGlobalBatch(32);
                             c.setLr(0.1f);
                             c.setTestPercent(20);
                             c.setTransport(train::transport::ACTOR);
                             c.setJob(kj::arrayPtr(job.data(), 32));
                             c.setDataFile((std::filesystem::path{AICON_SOURCE_DIR}
                                            / "tests/data/digits.csv.gz").string());
                             j.setLease(opened<schema::LeaseInfo>{lease}.root());
                           }),
                           60s);
    };
    auto refused_join = [&](caf::expected<envelope> r, const std::string& words) {
      BOOST_REQUIRE_MESSAGE(!r, "a join was taken that should be refused: " << words);
      BOOST_TEST(what_of(r.error()).find("TrainerJoin may be sent only by") != std::string::npos,
                 what_of(r.error()));
      BOOST_TEST(what_of(r.error()).find(words) != std::string::npos, what_of(r.error()));
    };
    refused_join(join(second->first, first->second, a, random_job()), "not this one");
    refused_join(join(first->first, first->second, b, random_job()), "for another job");
    // A lease whose count is raised after the allocator signed it.
    {
      capnp::MallocMessageBuilder mb;
      mb.setRoot(opened<schema::LeaseInfo>{first->second}.root());
      mb.getRoot<schema::LeaseInfo>().setCount(100);
      refused_join(join(first->first,
                        copy_envelope<schema::LeaseInfo>(mb.getRoot<schema::LeaseInfo>().asReader()),
                        a, random_job()),
                   "not signed by the allocator it names");
    }
    std::vector<std::array<uint8_t, 32>> sessions;
    for (int i = 0; i < 2; ++i) {
      sessions.push_back(random_job());
      auto ok = join(first->first, first->second, a, sessions.back());
      BOOST_REQUIRE_MESSAGE(ok, why(ok));
    }
    refused_join(join(first->first, first->second, a, random_job()), "run for its job already");
    auto dst = ec.c->lookup("trainer@" + first->first.hex());
    BOOST_REQUIRE(dst);
    for (auto& s : sessions) {
      auto done = ec.c->request(*dst, make_envelope<schema::TrainQuery>([&](auto q) {
                                  q.setSession(kj::arrayPtr(s.data(), 32));
                                  q.setToken(kj::arrayPtr(token.data(), 32));
                                  q.setDrop();
                                }),
                                20s);
      BOOST_TEST(static_cast<bool>(done), why(done));
    }
  }
  // The operator's view of the allocator's host.
  auto status = run_command({aicon_binary(), "status", "--connect",
                             fmt::format("127.0.0.1:{}", ec.ports[0]), "--data-dir",
                             ec.cli.dir.string()},
                            30s);
  BOOST_TEST(status.exit_code == 0, status.output);
  BOOST_TEST(status.output.find("offers    2 trainer hosts") != std::string::npos, status.output);
  BOOST_TEST(status.output.find("jobs      1 holding leases") != std::string::npos, status.output);
  auto json = run_command({aicon_binary(), "status", "--connect",
                           fmt::format("127.0.0.1:{}", ec.ports[0]), "--data-dir",
                           ec.cli.dir.string(), "--json"},
                          30s);
  BOOST_TEST(json.output.find("\"allocator\": {\"offers\": [{") != std::string::npos, json.output);
  // B: not enough free, so it waits and holds nothing (gang).
  auto waiting = ec.ask(0, "allocator", ec.alloc_ask(b, 2, 100));
  BOOST_REQUIRE_MESSAGE(waiting, why(waiting));
  {
    opened<schema::AllocReply> w{*waiting};
    BOOST_REQUIRE(w);
    BOOST_TEST((w->which() == schema::AllocReply::WAITING));
    BOOST_TEST_MESSAGE("B: " << w->getWaiting().cStr());
  }
  BOOST_TEST(ec.leases_of_job(b).empty());
  // The allocator's host restarts: A's leases are still there.
  BOOST_TEST(ec.hosts[0].proc->stop(SIGTERM, 30s) == 0, ec.hosts[0].proc->log_text());
  ec.hosts[0] = start_host(ec.root / "c0.toml", ec.root / "c0-restart.log", {"-v"});
  BOOST_REQUIRE_MESSAGE(ec.hosts[0].proc->wait_for_log("restored", 20s),
                        ec.hosts[0].proc->log_text());
  auto deadline = std::chrono::steady_clock::now() + 30s;
  caf::expected<node_id> relinked = make_error(errc::internal, "not tried");
  while (!relinked && std::chrono::steady_clock::now() < deadline) {
    relinked = ec.c->connect(fmt::format("127.0.0.1:{}", ec.ports[0]), ec.nodes[0].id);
    if (!relinked)
      std::this_thread::sleep_for(200ms);
  }
  BOOST_REQUIRE_MESSAGE(relinked, why(relinked));
  std::vector<alloc::lease> kept;
  while (std::chrono::steady_clock::now() < deadline) {
    kept = ec.leases_of_job(a);
    if (!kept.empty())
      break;
    std::this_thread::sleep_for(200ms);
  }
  uint32_t kept_slots = 0;
  for (auto& l : kept)
    kept_slots += l.count;
  BOOST_TEST(kept_slots == 4u);
  // Another admitted peer knows A's job id (block headers carry job ids)
  // but not its token: it may not release, renew or replace A's leases,
  // nor ask for A itself, signed or unsigned; A keeps all four trainers.
  auto thief = random_job();
  auto stranger = identity::generate();
  auto refused_by = [&](caf::expected<envelope> r, const std::string& words) {
    BOOST_REQUIRE_MESSAGE(!r, "answered a request that should say: " << words);
    BOOST_TEST(what_of(r.error()).find(words) != std::string::npos, what_of(r.error()));
  };
  refused_by(ec.alloc_query(a, thief, [](auto q) { q.setRelease(); }), "not job");
  refused_by(ec.alloc_query(a, thief, [](auto q) { q.setRenew(60000); }), "not job");
  refused_by(ec.alloc_query(a, thief, [&](auto q) {
               q.setReplace(kj::arrayPtr(ec.nodes[2].id.bytes.data(), 32));
             }),
             "not job");
  refused_by(ec.ask(0, "allocator", ec.alloc_ask(a, 4, 100, &stranger)), "not signed by job");
  refused_by(ec.ask(0, "allocator", ec.alloc_ask(a, 4, 100, nullptr, &thief)),
             "already asked for by another coordinator");
  kept_slots = 0;
  for (auto& l : ec.leases_of_job(a))
    kept_slots += l.count;
  BOOST_TEST(kept_slots == 4u);
  // Released by its coordinator, the trainers go to B when it asks again.
  auto rel = ec.alloc_query(a, ec.alloc_token, [](auto q) { q.setRelease(); });
  BOOST_REQUIRE_MESSAGE(rel, why(rel));
  auto b_again = ec.ask(0, "allocator", ec.alloc_ask(b, 2, 100));
  BOOST_REQUIRE_MESSAGE(b_again, why(b_again));
  BOOST_TEST(leases_of(*b_again).size() >= 1u);
}

BOOST_AUTO_TEST_CASE(a_job_is_allocated_trained_verified_committed_and_settled) {
  economy_cluster ec;
  ec.wait_offers(2);
  auto job = random_job();
  // The dataset and the model are assets of two other wallets, each with a
  // price per job; registered in the same block as the escrow.
  auto o = ec.allocated_job(job, 150);
  auto data_owner = identity::generate(), model_owner = identity::generate();
  auto dataset = train::file_asset_id(o.data_file);
  BOOST_REQUIRE_MESSAGE(dataset, why(dataset));
  o.dataset_asset = *dataset;
  auto model = train::model_asset_of(o);
  const uint64_t dataset_price = 70, model_price = 30;
  for (auto [who, id, kind, price] :
       {std::tuple{&data_owner, *dataset, "dataset", dataset_price},
        std::tuple{&model_owner, model, "model", model_price}}) {
    auto ack = ec.ask(0, "block_generator",
                      train::make_asset_register(*who, ec.chain, 1, id, kind, id, price));
    BOOST_REQUIRE_MESSAGE(ack, why(ack));
  }
  const uint64_t steps = 150, escrow = 4 * steps * 1 + 500;
  const uint64_t reward = escrow * ledger::genesis_config{}.reward_percent / 100; // the rule's
  ec.payer_tx([&](uint64_t n) { return train::make_escrow_lock(ec.payer, ec.chain, n, job, escrow); });
  auto [payer_before, pn, ps] = ec.account(0, ec.payer.id());
  BOOST_TEST(payer_before == economy_cluster::payer_funds - escrow);

  auto r = train::run_job(*ec.c, o);
  BOOST_REQUIRE_MESSAGE(r, why(r));
  for (auto& e : r->events)
    BOOST_TEST_MESSAGE("job: " << e);
  BOOST_TEST_MESSAGE("held-out accuracy " << r->accuracy);
  BOOST_TEST(r->accuracy >= 0.9);
  BOOST_REQUIRE(r->logs.size() == 4u);
  BOOST_TEST(ec.leases_of_job(job).empty()); // released at the end

  // Admitted peers attack the rater before the payer asks (security): each
  // request is refused by name, and nothing is rated, minted or slashed.
  auto honest = ec.rate_request(o, *r);
  auto refused_with = [&](const envelope& req, const std::string& words) {
    auto reply = ec.ask(0, "rater", req, 60s);
    BOOST_TEST(!reply, "accepted a request that should say: " << words);
    if (!reply)
      BOOST_TEST(what_of(reply.error()).find(words) != std::string::npos,
                 what_of(reply.error()));
  };
  refused_with(tampered(honest, [](auto b) { b.setReward(1'000'000'000'000); }),
               "reward is 1000000000000: the reward is not the requester's to set");
  refused_with(tampered(honest, [](auto b) { b.setSlashPercent(100); }),
               "slashPercent is 100: the slash is not the requester's to set");
  refused_with(tampered(honest, [](auto b) { b.setFraction(0.99); }),
               "fraction and target are not the requester's to set");
  refused_with(tampered(honest, [](auto b) { b.disownSignature(); }),
               "the signature is not payer");
  auto attacker = identity::generate();
  auto chain = ec.chain_id();
  refused_with(sign_rate_request(attacker, chain, opened<schema::RateRequest>{honest}.root()),
               "was escrowed by another payer");
  auto other_chain = random_job();
  refused_with(sign_rate_request(ec.payer, other_chain, opened<schema::RateRequest>{honest}.root()),
               "the signature is not payer");
  // A ring named twice (an earlier ring with the last ring's session)
  // would pay its ranks twice.
  refused_with(sign_rate_request(ec.payer, chain,
                                 opened<schema::RateRequest>{tampered(honest, [&](auto b) {
                                   auto e = b.initEarlier(1)[0];
                                   e.setSession(kj::arrayPtr(r->session.data(), 32));
                                   e.setToken(kj::arrayPtr(r->token.data(), 32));
                                   e.initRanks(1).set(0, kj::arrayPtr(r->rank_hosts[0].bytes.data(), 32));
                                   e.setKeptSteps(10);
                                 })}.root()),
               "is named twice in the request");
  // An earlier ring whose kept steps run into the last ring's (which
  // started at step 0): some steps would be paid twice.
  auto overlapping = random_job();
  refused_with(sign_rate_request(ec.payer, chain,
                                 opened<schema::RateRequest>{tampered(honest, [&](auto b) {
                                   auto e = b.initEarlier(1)[0];
                                   e.setSession(kj::arrayPtr(overlapping.data(), 32));
                                   e.setToken(kj::arrayPtr(r->token.data(), 32));
                                   e.initRanks(1).set(0, kj::arrayPtr(r->rank_hosts[0].bytes.data(), 32));
                                   e.setKeptSteps(10);
                                 })}.root()),
               "10 steps kept from step 0 do not end by the next ring's start (step 0)");
  // Malformed earlier rings: refused by name before anything is checked.
  auto with_earlier = [&](auto fill) {
    return sign_rate_request(ec.payer, chain,
                             opened<schema::RateRequest>{tampered(honest, [&](auto b) {
                               fill(b);
                             })}.root());
  };
  refused_with(with_earlier([&](auto b) {
                 auto e = b.initEarlier(1)[0];
                 std::vector<uint8_t> short_id(5, 1);
                 e.setSession(kj::arrayPtr(short_id.data(), short_id.size()));
                 e.setToken(kj::arrayPtr(r->token.data(), 32));
               }),
               "RateRequest.earlier[0]: session and token must be 32 bytes");
  refused_with(with_earlier([&](auto b) {
                 auto e = b.initEarlier(1)[0];
                 e.setSession(kj::arrayPtr(overlapping.data(), 32));
                 e.setToken(kj::arrayPtr(r->token.data(), 32));
                 e.initLogs(1);
               }),
               "RateRequest.earlier[0]: 0 ranks and 1 logs");
  refused_with(with_earlier([&](auto b) { b.initEarlier(65); }),
               "RateRequest.earlier: 65 rings; at most 64");
  auto never_escrowed = random_job();
  refused_with(sign_rate_request(ec.payer, chain,
                                 opened<schema::RateRequest>{tampered(honest, [&](auto b) {
                                   b.setJob(kj::arrayPtr(never_escrowed.data(), 32));
                                 })}.root()),
               "has no escrow on the chain");
  // The payer of another escrowed job names this job's trainers with their
  // logs, and t0 with a garbage log: every rank fails, nobody is slashed
  // (none signed anything for that job) and nothing is minted.
  auto decoy = random_job();
  ec.payer_tx([&](uint64_t n) { return train::make_escrow_lock(ec.payer, ec.chain, n, decoy, 100); });
  auto garbage = tampered(honest, [&](auto b) {
    b.setJob(kj::arrayPtr(decoy.data(), 32));
    auto l = b.getLogs()[0];
    std::vector<uint8_t> junk(64, 0x5a);
    l.setSignature(kj::arrayPtr(junk.data(), junk.size()));
    l.setLogRoot(kj::arrayPtr(junk.data(), 32));
  });
  auto decoy_rated = ec.ask(0, "rater",
                            sign_rate_request(ec.payer, chain,
                                              opened<schema::RateRequest>{garbage}.root()),
                            120s);
  BOOST_REQUIRE_MESSAGE(decoy_rated, why(decoy_rated));
  auto decoy_rating = train::parse_rating(*decoy_rated);
  BOOST_REQUIRE_MESSAGE(decoy_rating, why(decoy_rating));
  for (auto& v : decoy_rating->verdicts)
    BOOST_TEST(!v.passed, "rank " << v.rank << " passed for a job it did not work for");
  BOOST_TEST(decoy_rating->slashed == 0u);
  BOOST_TEST(decoy_rating->minted == 0u);
  BOOST_TEST(decoy_rating->receipts == 0u);
  ec.payer_tx([&](uint64_t n) {
    return ledger::make_signed_transaction(ec.payer, ec.chain, n, [&](auto b) {
      b.initSettle().setJobId(kj::arrayPtr(decoy.data(), 32)); // all refunded
    });
  });

  // Verification by the rater on c0.
  auto height_before = ec.height(0);
  auto rated = ec.ask(0, "rater", honest, 120s);
  BOOST_REQUIRE_MESSAGE(rated, why(rated));
  auto rating = train::parse_rating(*rated);
  BOOST_REQUIRE_MESSAGE(rating, why(rating));
  for (auto& v : rating->verdicts) {
    BOOST_TEST(v.passed, "rank " << v.rank << ": " << v.why);
    BOOST_TEST(v.units == steps * 8); // 32 rows over 4 trainers
  }
  BOOST_TEST(rating->receipts == 4u);
  BOOST_TEST(rating->samples_per_trainer == 44u);
  BOOST_TEST(rating->minted == reward); // 80% trainers, 10% dataset, 10% model
  BOOST_TEST(rating->slashed == 0u);
  // The same request again (its job host restarted before it read the
  // answer) gets the verdict given, byte for byte: nothing is re-executed,
  // receipted, minted or slashed twice (the supply is checked below).
  // Another session for the same job is refused: a job is rated once.
  auto again = ec.ask(0, "rater", honest, 60s);
  BOOST_REQUIRE_MESSAGE(again, why(again));
  BOOST_TEST(std::ranges::equal(again->bytes(), rated->bytes()));
  auto other_session = random_job();
  refused_with(sign_rate_request(ec.payer, chain,
                                 opened<schema::RateRequest>{tampered(honest, [&](auto b) {
                                   b.setSession(kj::arrayPtr(other_session.data(), 32));
                                 })}.root()),
               "was already rated");
  for (size_t t : {size_t{2}, size_t{3}})
    BOOST_TEST(std::get<2>(ec.account(0, ec.nodes[t].id)) == economy_cluster::trainer_stake);

  // PoV blocks carrying this session id get committed on both chain hosts.
  bool found = false;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!found && std::chrono::steady_clock::now() < deadline) {
    for (uint64_t h = height_before + 1; h <= ec.height(1) && !found; ++h) {
      auto blk = ec.ask(1, "ledger", make_envelope<schema::LedgerQuery>([h](auto q) {
                          q.setBlockAt(h);
                        }));
      if (!blk)
        continue;
      opened<schema::Block> bl{*blk};
      if (bl && bl->getHeader().getSessionId().size() == 32
          && std::memcmp(bl->getHeader().getSessionId().begin(), r->session.data(), 32) == 0) {
        found = true;
        BOOST_TEST(std::memcmp(bl->getHeader().getJobId().begin(), job.data(), 32) == 0);
        BOOST_TEST_MESSAGE("block " << h << " carries session " << to_hex({r->session.data(), 8}));
      }
    }
    if (!found)
      std::this_thread::sleep_for(200ms);
  }
  BOOST_TEST(found, "no block carries the job's session");

  // Settlement by the payer; the weights become the payer's asset.
  auto ledger_c1 = [&](envelope q) { return ec.ask(1, "ledger", std::move(q)); };
  auto dataset_terms = train::terms_of(ledger_c1, *dataset);
  auto model_terms = train::terms_of(ledger_c1, model);
  BOOST_REQUIRE_MESSAGE(dataset_terms, why(dataset_terms));
  BOOST_REQUIRE_MESSAGE(model_terms, why(model_terms));
  BOOST_REQUIRE(dataset_terms->has_value());
  BOOST_REQUIRE(model_terms->has_value());
  BOOST_TEST((*dataset_terms)->price == dataset_price);
  BOOST_TEST(((*model_terms)->owner == model_owner.id()));
  auto plan = train::plan_settlement(escrow, *rating, steps, 1, ec.payer.id(), *dataset_terms,
                                     *model_terms);
  BOOST_REQUIRE(plan.why.empty());
  BOOST_TEST(plan.trainers == 4 * steps);
  BOOST_TEST(plan.refund == escrow - 4 * steps - dataset_price - model_price);
  ec.payer_tx([&](uint64_t n) { return train::make_settle(ec.payer, ec.chain, n, job, plan); });
  std::array<uint8_t, 32> asset{};
  ec.payer_tx([&](uint64_t n) { return train::make_model_asset(ec.payer, ec.chain, n, r->checkpoint, &asset); });
  auto owner = ec.ask(1, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                        q.setAsset(kj::arrayPtr(asset.data(), 32));
                      }));
  BOOST_REQUIRE_MESSAGE(owner, why(owner));
  {
    opened<schema::AssetInfo> ai{*owner};
    BOOST_REQUIRE(ai);
    BOOST_TEST(ai->getKind().cStr() == std::string{"trained-model"});
    BOOST_TEST(std::memcmp(ai->getOwner().begin(), ec.payer.id().bytes.data(), 32) == 0);
  }

  // Every balance, to the unit: each trainer host ran 2 ranks x steps x 1,
  // plus its share of the trainers' 80% of the reward (equal units: half
  // each); the dataset's and model's owners their price plus 10% of the
  // reward each; the payer got the unused escrow back; supply = genesis +
  // minted - slashed.
  std::map<node_id, uint64_t> reward_of;
  for (auto& [w, a] : rating->rewards)
    reward_of[w] += a;
  for (size_t t : {size_t{2}, size_t{3}}) {
    auto [bal, nonce, stake] = ec.account(1, ec.nodes[t].id);
    BOOST_TEST(bal == 2 * steps * 1 + reward_of[ec.nodes[t].id], ec.names[t]);
    BOOST_TEST(reward_of[ec.nodes[t].id] == reward / 10 * 8 / 2);
    BOOST_TEST(stake == economy_cluster::trainer_stake);
  }
  auto [data_bal, dn, ds] = ec.account(1, data_owner.id());
  BOOST_TEST(data_bal == dataset_price + reward / 10);
  auto [model_bal, mn, ms] = ec.account(1, model_owner.id());
  BOOST_TEST(model_bal == model_price + reward / 10);
  auto [payer_after, pn2, ps2] = ec.account(1, ec.payer.id());
  BOOST_TEST(payer_after
             == economy_cluster::payer_funds - 4 * steps - dataset_price - model_price);
  uint64_t total = payer_after + data_bal + model_bal;
  for (size_t t : {size_t{2}, size_t{3}}) {
    auto [bal, nonce, stake] = ec.account(1, ec.nodes[t].id);
    total += bal + stake;
  }
  BOOST_TEST(total == economy_cluster::payer_funds + 2 * economy_cluster::trainer_stake
                        + rating->minted - rating->slashed);
}

BOOST_AUTO_TEST_CASE(a_job_host_runs_a_budgeted_job_to_settlement_with_its_client_gone) {
  economy_cluster ec;
  ec.wait_offers(2);
  // The client's own key is the payer here: fund its wallet.
  const uint64_t funds = 100'000;
  ec.fund_client(funds);
  auto aicon = [&](std::vector<std::string> args, std::chrono::milliseconds timeout = 60s) {
    return ec.job_cli(std::move(args), timeout); // c1 runs the job role
  };
  auto digits = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string();
  auto last_line = [](const std::string& out) {
    auto end = out.find_last_not_of('\n');
    auto start = out.rfind('\n', end);
    return out.substr(start == std::string::npos ? 0 : start + 1, end - (start == std::string::npos ? 0 : start + 1) + 1);
  };
  auto jobs_listed = [&] {
    auto r = ec.ask(1, "job", make_envelope<schema::JobQuery>([](auto q) { q.setList(); }));
    BOOST_REQUIRE_MESSAGE(r, why(r));
    return opened<schema::JobList>{*r}->getJobs().size();
  };

  // Refused by the job host by name, nothing started: a bad field, a
  // signature that is not the payer's, a budget whose escrow does not name
  // this host its agent.
  {
    capnp::MallocMessageBuilder mb;
    auto spec = mb.initRoot<schema::JobSpec>();
    small_job_spec(spec);
    spec.setDataFile(digits);
    auto refused = [&](envelope submit, const std::string& words) {
      auto r = ec.ask(1, "job", std::move(submit));
      BOOST_REQUIRE_MESSAGE(!r, "a submission was taken that should be refused: " << words);
      BOOST_TEST(describe(r.error()).find(words) != std::string::npos, describe(r.error()));
    };
    spec.setLr(0);
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()), "spec.lr");
    spec.setLr(0.05f);
    spec.setTransport(static_cast<schema::Transport>(9)); // an enumerant this build lacks
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()), "spec.transport");
    spec.setTransport(train::transport::STREAM);
    spec.setOptimizer(static_cast<schema::Optimizer>(5)); // neither sgd nor adamw
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()), "spec.optimizer");
    spec.setOptimizer(schema::Optimizer::SGD);
    spec.setSteps(0);
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()), "spec.steps");
    spec.setSteps(10);
    spec.setWeightDecay(std::numeric_limits<float>::quiet_NaN());
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()), "spec.weightDecay");
    spec.setWeightDecay(1e-4f);
    spec.setCheckpointEvery(0);
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()),
            "spec.checkpointEvery");
    spec.setCheckpointEvery(10);
    spec.setChunkBytes(16);
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()), "spec.chunkBytes");
    spec.setChunkBytes(1 << 18);
    spec.setRingTimeoutMs(0);
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()),
            "spec.ringTimeoutMs");
    spec.setRingTimeoutMs(5000);
    spec.initHosts(1).set(0, kj::arrayPtr(ec.nodes[2].id.bytes.data(), 31)); // not a NodeId
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()), "spec.hosts");
    spec.disownHosts();
    spec.setBudget(1000);
    spec.initSpares(1).set(0, kj::arrayPtr(ec.nodes[2].id.bytes.data(), 32));
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()),
            "the allocator places a budgeted job's trainers");
    spec.disownSpares();
    spec.setBudget(0);
    spec.setStoredLeases(true); // a data file, not a dataset: no leases to use
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()),
            "spec.storedLeases: only for an unpaid job on a dataset");
    spec.setStoredLeases(false);
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms() - 3'600'000),
            "stale or replayed");
    {
      auto forged = sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms());
      capnp::MallocMessageBuilder fb;
      fb.setRoot(opened<schema::JobSubmit>{forged}.root());
      fb.getRoot<schema::JobSubmit>().getSpec().setSteps(100000);
      refused(copy_envelope<schema::JobSubmit>(fb.getRoot<schema::JobSubmit>().asReader()),
              "not signed by the payer it names");
    }
    // Unpaid: it would spend the trainers of hosts that trust c1; the
    // payer is not among c1's operator's clients.
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()),
            "an unpaid job is only for this host's operator's clients");
    auto plain = random_job(); // escrowed, but with no terms naming c1
    ec.payer_tx([&](uint64_t n) { return train::make_escrow_lock(ec.payer, ec.chain, n, plain, 1000); });
    spec.setBudget(1000);
    refused(sign_job_submit(ec.payer, spec.asReader(), plain, now_ms()), "its agent");
    refused(sign_job_submit(ec.payer, spec.asReader(), random_job(), now_ms()), "has no escrow");
    BOOST_TEST(jobs_listed() == 0u);
  }

  // A bad field through the CLI: refused by name before anything is
  // escrowed (the same check_job_spec the host runs).
  for (auto [flag, value, words] : {std::tuple{"--lr", "0", "spec.lr"},
                                    std::tuple{"--transport", "pigeon", "--transport 'pigeon'"},
                                    std::tuple{"--trainers", "0", "--trainers"}}) {
    auto bad = aicon({"job", "submit", "--data", digits, "--steps", "10", "--budget", "5000", flag,
                      value});
    BOOST_TEST(bad.exit_code != 0);
    BOOST_TEST(bad.output.find(words) != std::string::npos, bad.output);
  }
  BOOST_TEST(std::get<0>(ec.account(0, ec.cli.id)) == funds); // nothing escrowed

  // Submit: the budget is escrowed with terms naming c1 its agent, the
  // job is handed over, and the submitting process is gone.
  auto submit = aicon({"job", "submit", "--data", digits, "--trainers", "2", "--steps", "120",
                       "--budget", "5000", "--verify"},
                      120s);
  BOOST_REQUIRE_EQUAL(submit.exit_code, 0);
  auto id = last_line(submit.output);
  BOOST_REQUIRE_EQUAL(id.size(), 64u);
  // Another process waits for it and reads the result.
  auto wait = aicon({"job", "wait", id, "--timeout", "240"}, 300s);
  BOOST_REQUIRE_MESSAGE(wait.exit_code == 0, wait.output << "\n--- c1:\n" << ec.hosts[1].proc->log_text());
  BOOST_TEST(wait.output.find("phase     done") != std::string::npos, wait.output);
  BOOST_TEST(wait.output.find("accuracy  0.9") != std::string::npos, wait.output);
  BOOST_TEST(wait.output.find("verified  2/2 trainers passed") != std::string::npos, wait.output);
  // 2 trainers x 120 steps at the price their leases name, 1 (the hosts'
  // trainer_price; the terms' cap is 5000 / 240 = 20): 240 paid, 4760 back
  // to the payer; settled once by the agent.
  BOOST_TEST(wait.output.find("budget    5000: trainers paid 240, refunded 4760") != std::string::npos,
             wait.output);
  BOOST_TEST(std::get<0>(ec.account(0, ec.cli.id)) == funds - 240);
  auto job = id_bytes(id);
  auto escrow = ec.ask(0, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                         q.setEscrow(kj::arrayPtr(job.data(), 32));
                       }));
  BOOST_TEST(!escrow, "the escrow is still open after settlement");
  // The trained weights are the payer's asset, registered by its agent.
  auto asset_at = wait.output.find("asset     ");
  BOOST_REQUIRE_MESSAGE(asset_at != std::string::npos, wait.output);
  std::array<uint8_t, 32> asset{};
  for (size_t i = 0; i < 32; ++i)
    asset[i] = static_cast<uint8_t>(std::stoi(wait.output.substr(asset_at + 10 + 2 * i, 2), nullptr, 16));
  auto terms = train::terms_of([&](envelope q) { return ec.ask(0, "ledger", std::move(q)); }, asset);
  BOOST_REQUIRE_MESSAGE(terms && *terms, "the trained model is not registered");
  BOOST_TEST(((*terms)->owner == ec.cli.id));
  BOOST_TEST((*terms)->kind == "trained-model");
  // The payer fetches the trained weights: the checkpoint the chain's
  // asset id is the hash of; nobody else may.
  auto weights = (ec.root / "trained.ckpt").string();
  auto fetched = aicon({"job", "fetch", id, "--out", weights});
  BOOST_REQUIRE_MESSAGE(fetched.exit_code == 0, fetched.output);
  BOOST_TEST(fetched.output.find("at step 120 (mlp:64-64-10), matching its trained-model asset")
               != std::string::npos,
             fetched.output);
  // Checked against another chain host's ledger (c0's), not the job host's.
  auto elsewhere = aicon({"job", "fetch", id, "--out", weights, "--ledger",
                          fmt::format("127.0.0.1:{}", ec.ports[0])});
  BOOST_TEST(elsewhere.exit_code == 0, elsewhere.output);
  BOOST_TEST(elsewhere.output.find("(asked of the ledger of 127.0.0.1:" + std::to_string(ec.ports[0]))
               != std::string::npos,
             elsewhere.output);
  {
    auto cp = train::load_checkpoint(weights);
    BOOST_REQUIRE_MESSAGE(cp, why(cp));
    BOOST_TEST(cp->step == 120u);
    auto m = train::model::from_params(cp->spec, cp->params);
    BOOST_REQUIRE_MESSAGE(m, why(m));
  }
  // An mlp job has no TorchScript file: asked for one, refused by name.
  auto no_pt = aicon({"job", "fetch", id, "--torchscript", (ec.root / "x.pt").string()});
  BOOST_TEST(no_pt.exit_code == 1, no_pt.output);
  BOOST_TEST(no_pt.output.find("has no TorchScript file (only jobs on a model asset") != std::string::npos,
             no_pt.output);
  BOOST_TEST(!std::filesystem::exists(ec.root / "x.pt"));
  // Weights that are not the asset's are refused by name: a checkpoint one
  // byte off, a TorchScript file the asset is not the hash of, another
  // payer's asset.
  {
    auto payer = load_identity(ec.cli.dir);
    BOOST_REQUIRE_MESSAGE(payer, why(payer));
    auto real = ec.ask(1, "job", sign_job_weights(*payer, job, now_ms()));
    BOOST_REQUIRE_MESSAGE(real, why(real));
    opened<schema::JobWeights> w{*real};
    BOOST_REQUIRE(w.ok());
    auto info = ec.ask(0, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                         q.setAsset(w->getModelAsset());
                       }));
    BOOST_REQUIRE_MESSAGE(info, why(info));
    BOOST_TEST(!check_job_weights(*real, *info, payer->id()));
    auto doctored = [&](const std::function<void(schema::JobWeights::Builder)>& f) {
      capnp::MallocMessageBuilder mb;
      mb.setRoot(w.root());
      f(mb.getRoot<schema::JobWeights>());
      return copy_envelope<schema::JobWeights>(mb.getRoot<schema::JobWeights>().asReader());
    };
    auto flipped = doctored([](auto b) { b.getCheckpoint()[10] ^= 1; });
    auto err = check_job_weights(flipped, *info, payer->id());
    BOOST_TEST(describe(err).find("not to the id of the trained-model asset") != std::string::npos,
               describe(err));
    std::vector<uint8_t> junk(64, 7);
    auto with_pt = doctored([&](auto b) { b.setTorchscript(kj::arrayPtr(junk.data(), junk.size())); });
    err = check_job_weights(with_pt, *info, payer->id());
    BOOST_TEST(describe(err).find("the TorchScript file does not hash to the trained-model asset")
                 != std::string::npos,
               describe(err));
    err = check_job_weights(*real, *info, identity::generate().id());
    BOOST_TEST(describe(err).find("not this payer's trained model") != std::string::npos,
               describe(err));
  }
  auto stranger = ec.ask(1, "job", sign_job_weights(identity::generate(), job, now_ms()));
  BOOST_REQUIRE(!stranger);
  BOOST_TEST(describe(stranger.error()).find("may be read only by its payer") != std::string::npos,
             describe(stranger.error()));
  auto payer_key = load_identity(ec.cli.dir);
  BOOST_REQUIRE_MESSAGE(payer_key, why(payer_key));
  auto stale = ec.ask(1, "job", sign_job_weights(*payer_key, job, now_ms() - 3'600'000));
  BOOST_REQUIRE(!stale);
  BOOST_TEST(describe(stale.error()).find("the weights query is stale or replayed") != std::string::npos,
             describe(stale.error()));
  auto logs = aicon({"job", "logs", id.substr(0, 16)});
  BOOST_TEST(logs.exit_code == 0);
  BOOST_TEST(logs.output.find("allocator granted 2 trainers") != std::string::npos, logs.output);
  BOOST_TEST(logs.output.find("settled: trainers 240") != std::string::npos, logs.output);
  auto ls = aicon({"job", "ls"});
  BOOST_TEST(ls.output.find(id.substr(0, 16) + " done") != std::string::npos, ls.output);

  // Cancel: only the payer; then the job stops and the whole escrow returns.
  auto before = std::get<0>(ec.account(0, ec.cli.id));
  auto long_job = aicon({"job", "submit", "--data", digits, "--trainers", "2", "--steps", "20000",
                         "--budget", "40000"},
                        120s);
  BOOST_REQUIRE_EQUAL(long_job.exit_code, 0);
  auto long_id = last_line(long_job.output);
  auto long_bytes = id_bytes(long_id);
  auto mallory = identity::generate();
  auto stolen = ec.ask(1, "job", sign_job_cancel(mallory, long_bytes, now_ms()));
  BOOST_REQUIRE(!stolen);
  BOOST_TEST(describe(stolen.error()).find("may be cancelled only by its payer") != std::string::npos,
             describe(stolen.error()));
  // Cancelled once it has run some steps: the steps run are paid at the
  // trainers' lease price (1), the rest of the budget comes back.
  BOOST_REQUIRE(ec.wait_step(long_bytes, 20) >= 20u);
  auto early = aicon({"job", "fetch", long_id, "--out", (ec.root / "early.ckpt").string()});
  BOOST_TEST(early.exit_code == 1, early.output);
  BOOST_TEST(early.output.find("its weights are there once it is done") != std::string::npos,
             early.output);
  auto cancel = aicon({"job", "cancel", long_id});
  BOOST_TEST(cancel.exit_code == 0, cancel.output);
  auto ended = aicon({"job", "wait", long_id, "--timeout", "120"}, 180s);
  BOOST_TEST(ended.exit_code == 1, ended.output);
  BOOST_TEST(ended.output.find("phase     cancelled") != std::string::npos, ended.output);
  opened<schema::JobInfo> cancelled{ec.job_status(long_bytes)};
  auto ran = cancelled->getStep();
  BOOST_TEST_MESSAGE("cancelled at step " << ran << ": paid " << cancelled->getPaidTrainers()
                                          << ", refunded " << cancelled->getRefunded());
  BOOST_TEST(ran >= 20u);
  BOOST_TEST(ran < 20000u);
  BOOST_TEST(cancelled->getPaidTrainers() == 2 * ran);
  BOOST_TEST(cancelled->getRefunded() == 40000 - 2 * ran);
  BOOST_TEST(std::get<0>(ec.account(0, ec.cli.id)) == before - 2 * ran);
}

BOOST_AUTO_TEST_CASE(a_job_host_killed_mid_job_resumes_from_its_checkpoint_and_pays_once) {
  economy_cluster ec;
  ec.wait_offers(2);
  const uint64_t funds = 100'000;
  ec.fund_client(funds);
  auto aicon = [&](std::vector<std::string> args, std::chrono::milliseconds timeout = 60s) {
    return ec.job_cli(std::move(args), timeout); // c1 runs the job role
  };
  auto digits = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string();
  const uint64_t steps = 4000, budget = 2 * steps; // price cap 1 per trainer-step
  auto submit = aicon({"job", "submit", "--data", digits, "--trainers", "2", "--steps",
                       std::to_string(steps), "--budget", std::to_string(budget), "--verify"},
                      120s);
  BOOST_REQUIRE_EQUAL(submit.exit_code, 0);
  auto end = submit.output.find_last_not_of('\n');
  auto id = submit.output.substr(submit.output.rfind('\n', end) + 1, 64);
  // Let it train a while, then kill the job host outright.
  auto deadline = std::chrono::steady_clock::now() + 60s;
  uint64_t reached = 0;
  while (reached < 300 && std::chrono::steady_clock::now() < deadline) {
    auto st = aicon({"job", "status", id});
    auto at = st.output.find("step ");
    if (at != std::string::npos)
      reached = std::stoull(st.output.substr(at + 5));
    if (reached < 300)
      std::this_thread::sleep_for(200ms);
  }
  BOOST_REQUIRE_MESSAGE(reached >= 300 && reached < steps, "the job did not get to step 300 in time: "
                                                               << reached);
  // A `job wait` already watching rides out the job host's death: it links
  // again to the restarted host and ends with the job (Ray's `job logs
  // --follow` does the same).
  process watching{{aicon_binary(), "job", "wait", id, "--timeout", "240", "--connect",
                    fmt::format("127.0.0.1:{}", ec.ports[1]), "--data-dir", ec.cli.dir.string()},
                   ec.root / "early-wait.log"};
  BOOST_REQUIRE(watching.wait_for_log(" step ", 30s));
  BOOST_TEST(ec.hosts[1].proc->stop(SIGKILL, 10s) == 128 + SIGKILL);
  ec.hosts[1] = start_host(ec.root / "c1.toml", ec.root / "c1-restart.log", {"-v"});
  BOOST_REQUIRE_MESSAGE(ec.hosts[1].proc->wait_for_log("resumed after a restart", 30s),
                        ec.hosts[1].proc->log_text());
  auto wait = aicon({"job", "wait", id, "--timeout", "240"}, 300s);
  BOOST_REQUIRE_MESSAGE(wait.exit_code == 0, wait.output << "\n--- c1:\n" << ec.hosts[1].proc->log_text());
  BOOST_TEST(wait.output.find("accuracy  0.9") != std::string::npos, wait.output);
  BOOST_TEST(watching.wait(60s) == 0, watching.log_text());
  BOOST_TEST(watching.log_text().find("the job host does not answer") != std::string::npos,
             watching.log_text());
  BOOST_TEST(watching.log_text().find("accuracy  0.9") != std::string::npos, watching.log_text());
  BOOST_TEST(wait.output.find(fmt::format("budget    {}: trainers paid {}, refunded 0", budget,
                                          budget)) != std::string::npos,
             wait.output);
  auto logs = aicon({"job", "logs", id});
  BOOST_TEST(logs.output.find("job host restarted: resuming from the checkpoint of step")
               != std::string::npos,
             logs.output);
  BOOST_TEST(logs.output.find("resumed from the checkpoint of step") != std::string::npos,
             logs.output);
  // The ring from before the restart finished with the rater named: its
  // steps up to the checkpoint resumed from are verified and paid with the
  // second ring's, so both rings' four ranks pass and the trainers are
  // paid 2 x steps in all (the second ring alone would be paid less).
  BOOST_TEST(logs.output.find("the ring from before the restart: rank 0 on") != std::string::npos,
             logs.output);
  BOOST_TEST(logs.output.find("finished, its log kept for the rater") != std::string::npos,
             logs.output);
  BOOST_TEST(wait.output.find("verified  4/4 trainers passed") != std::string::npos, wait.output);
  // Paid once, to the unit: the trainers got 2 x steps and their share of
  // the reward minted for the job, the payer paid exactly 2 x steps, and the
  // supply is the genesis' and that reward.
  BOOST_TEST(std::get<0>(ec.account(0, ec.cli.id)) == funds - budget);
  uint64_t trainers = std::get<0>(ec.account(0, ec.nodes[2].id)) + std::get<0>(ec.account(0, ec.nodes[3].id));
  const uint64_t reward = budget * ledger::genesis_config{}.reward_percent / 100; // the rule's
  BOOST_TEST(trainers >= budget);
  BOOST_TEST(trainers <= budget + reward, "trainers got " << trainers);
  uint64_t total = std::get<0>(ec.account(0, ec.payer.id())) + std::get<0>(ec.account(0, ec.cli.id))
                   + trainers + 2 * economy_cluster::trainer_stake;
  BOOST_TEST(total == economy_cluster::payer_funds + 2 * economy_cluster::trainer_stake
                        + (trainers - budget));

  // A payer's cancel outlives a restart: a long job cancelled, the job host
  // SIGKILLed at once and restarted; the job ends cancelled and does not
  // train on to its last step, and the payer loses at most the steps run.
  auto before = std::get<0>(ec.account(0, ec.cli.id));
  auto long_job = aicon({"job", "submit", "--data", digits, "--trainers", "2", "--steps", "20000",
                         "--budget", "40000"},
                        120s);
  BOOST_REQUIRE_EQUAL(long_job.exit_code, 0);
  auto long_id = long_job.output.substr(long_job.output.find_last_not_of('\n') - 63, 64);
  auto long_bytes = id_bytes(long_id);
  // (this test's client dialed the job host before its restart above)
  auto relinked = ec.c->connect(fmt::format("127.0.0.1:{}", ec.ports[1]), ec.nodes[1].id);
  BOOST_REQUIRE_MESSAGE(relinked, why(relinked));
  BOOST_REQUIRE(ec.wait_step(long_bytes, 1) >= 1u); // training when the cancel comes
  auto cancel = aicon({"job", "cancel", long_id});
  BOOST_TEST(cancel.exit_code == 0, cancel.output);
  BOOST_TEST(ec.hosts[1].proc->stop(SIGKILL, 10s) == 128 + SIGKILL);
  ec.hosts[1] = start_host(ec.root / "c1.toml", ec.root / "c1-restart2.log", {"-v"});
  auto ended = aicon({"job", "wait", long_id, "--timeout", "120"}, 180s);
  BOOST_TEST(ended.exit_code == 1, ended.output);
  BOOST_TEST(ended.output.find("phase     cancelled") != std::string::npos, ended.output);
  BOOST_TEST(ended.output.find("progress  step 20000/20000") == std::string::npos, ended.output);
  auto after = std::get<0>(ec.account(0, ec.cli.id));
  BOOST_TEST(after <= before);
  BOOST_TEST(before - after < 2 * 20000u, "paid for the whole job: " << before - after << "\n"
                                           << aicon({"job", "logs", long_id}).output);
}

// A job host that dies between deciding a settlement and submitting it
// ([faults] job_crash_before_settle: it exits right after writing the
// plan) submits that same plan once it is back: the trainers are paid once,
// the payer pays exactly that, the trained model is registered once.
namespace {

/// A budgeted job on c1 started with `[faults] FAULT = true`: c1 exits with
/// `code` at that point of the settlement and is restarted without the
/// fault; the job ends done, paying the trainers 2 x steps once.
void settlement_survives(const std::string& fault, int code, const std::string& event,
                         bool verify = false) {
  economy_cluster ec;
  ec.wait_offers(2);
  const uint64_t funds = 100'000;
  ec.fund_client(funds);
  auto c1_config = ec.root / "c1.toml";
  ec.restart_with_fault(1, fault);
  auto digits = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string();
  const uint64_t steps = 100, budget = 5000;
  std::vector<std::string> args{"job", "submit", "--data", digits, "--trainers", "2", "--steps",
                                std::to_string(steps), "--budget", std::to_string(budget)};
  if (verify)
    args.push_back("--verify");
  auto submit = ec.job_cli(args, 120s);
  BOOST_REQUIRE_MESSAGE(submit.exit_code == 0, submit.output);
  auto id = submit.output.substr(submit.output.find_last_not_of('\n') - 63, 64);
  // The job host trains, decides the settlement, writes it and dies.
  BOOST_REQUIRE_MESSAGE(ec.hosts[1].proc->wait_for_log(fault + ": exiting now", 120s),
                        ec.hosts[1].proc->log_text());
  BOOST_TEST(ec.hosts[1].proc->wait(10s) == code); // its own exit
  ec.hosts[1] = start_host(c1_config, ec.root / "c1-back.log", {"-v"});
  auto wait = ec.job_cli({"job", "wait", id, "--timeout", "120"}, 150s);
  BOOST_REQUIRE_MESSAGE(wait.exit_code == 0, wait.output << "\n--- c1:\n" << ec.hosts[1].proc->log_text());
  BOOST_TEST(wait.output.find(fmt::format("budget    {}: trainers paid {}, refunded {}", budget,
                                          2 * steps, budget - 2 * steps))
               != std::string::npos,
             wait.output);
  BOOST_TEST(wait.output.find("asset     ") != std::string::npos, wait.output);
  auto logs = ec.job_cli({"job", "logs", id}, 60s);
  if (!verify)
    BOOST_TEST(logs.output.find("job host restarted during settlement: submitting the written plan")
                 != std::string::npos,
               logs.output);
  BOOST_TEST(logs.output.find(event) != std::string::npos, logs.output);
  // Paid once: the payer lost exactly the trainers' pay; the trainers got it.
  BOOST_TEST(std::get<0>(ec.account(0, ec.cli.id)) == funds - 2 * steps);
  uint64_t trainers = std::get<0>(ec.account(0, ec.nodes[2].id)) + std::get<0>(ec.account(0, ec.nodes[3].id));
  if (!verify) {
    BOOST_TEST(trainers == 2 * steps);
    return;
  }
  // Rated once: the rater re-executed the session once, answered the
  // restarted host with that verdict, and minted its reward once.
  auto rater_log = ec.hosts[0].proc->log_text();
  auto count = [&](const std::string& what) {
    size_t n = 0;
    for (auto at = rater_log.find(what); at != std::string::npos; at = rater_log.find(what, at + 1))
      ++n;
    return n;
  };
  BOOST_TEST(count("trainers verified (") == 1u, rater_log);
  BOOST_TEST(count("asked again by its payer") == 1u, rater_log);
  const uint64_t reward = budget * ledger::genesis_config{}.reward_percent / 100; // the rule's
  BOOST_TEST(trainers >= 2 * steps);
  BOOST_TEST(trainers <= 2 * steps + reward, "trainers got " << trainers);
}

} // namespace

// Dead with the plan written, not yet submitted: the plan is submitted when
// it is back. Dead with the settlement final, the job not yet ended: the
// settled escrow is recognised (not settled again, not refunded), the
// trained model registered and the job done.
BOOST_AUTO_TEST_CASE(a_job_host_dead_at_settlement_settles_its_written_plan_once) {
  settlement_survives("job_crash_before_settle", 86, "settled: trainers 200");
  settlement_survives("job_crash_after_settle", 87,
                      "settled (before this host restarted): trainers 200");
}

// Dead with the rater's answer read, before the settlement is written: the
// restarted host asks the same rater the same again and gets the verdict it
// had (no second rating, no second reward), then settles once.
BOOST_AUTO_TEST_CASE(a_job_host_dead_after_its_rating_asks_the_rater_again_and_settles_once) {
  settlement_survives("job_crash_after_rating", 88,
                      "job host restarted during verification: asking rater", true);
}

// A rater that dies with a rating decided and written, before any of its
// transactions went out ([faults] rater_crash_after_deciding, exit 89):
// back, the job host's repeated request gets the written decision carried
// out (receipts, mint) without a second verification, and the job settles
// once. Before, the repeat was refused and the verified work refunded.
BOOST_AUTO_TEST_CASE(a_rater_dead_after_deciding_sends_its_decision_when_asked_again) {
  economy_cluster ec;
  ec.wait_offers(2);
  const uint64_t funds = 100'000;
  ec.fund_client(funds);
  auto c0_config = ec.root / "c0.toml";
  ec.restart_with_fault(0, "rater_crash_after_deciding");
  auto digits = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string();
  const uint64_t steps = 100, budget = 5000;
  auto submit = ec.job_cli({"job", "submit", "--data", digits, "--trainers", "2", "--steps",
                            std::to_string(steps), "--budget", std::to_string(budget), "--verify"},
                           120s);
  BOOST_REQUIRE_MESSAGE(submit.exit_code == 0, submit.output);
  auto id = submit.output.substr(submit.output.find_last_not_of('\n') - 63, 64);
  BOOST_REQUIRE_MESSAGE(ec.hosts[0].proc->wait_for_log("rater_crash_after_deciding: exiting now",
                                                       120s),
                        ec.hosts[0].proc->log_text());
  BOOST_TEST(ec.hosts[0].proc->wait(10s) == 89); // its own exit
  auto first_log = ec.hosts[0].proc->log_text();
  BOOST_TEST(first_log.find("trainers verified (") != std::string::npos, first_log);
  ec.hosts[0] = start_host(c0_config, ec.root / "c0-back.log", {"-v"});
  auto wait = ec.job_cli({"job", "wait", id, "--timeout", "180"}, 210s);
  BOOST_REQUIRE_MESSAGE(wait.exit_code == 0, wait.output << "\n--- c0:\n"
                                                         << ec.hosts[0].proc->log_text());
  BOOST_TEST(wait.output.find(fmt::format("budget    {}: trainers paid {}, refunded {}", budget,
                                          2 * steps, budget - 2 * steps))
               != std::string::npos,
             wait.output);
  BOOST_TEST(wait.output.find("verified  2/2 trainers passed") != std::string::npos, wait.output);
  // Back, the rater carried out the written decision: no second
  // verification, the receipts and the mint sent once.
  auto back_log = ec.hosts[0].proc->log_text();
  BOOST_TEST(back_log.find("the rating was decided before this rater stopped") != std::string::npos,
             back_log);
  BOOST_TEST(back_log.find("trainers verified (") == std::string::npos, back_log);
  BOOST_TEST(back_log.find("2 receipts") != std::string::npos, back_log);
  // Paid once: the payer lost exactly the trainers' pay; the trainers got
  // it and their share of the reward, minted once (the chain refuses a
  // second MintReward for a job). Read on c1's chain (this test's client
  // dialed c0 before its restart).
  BOOST_TEST(std::get<0>(ec.account(1, ec.cli.id)) == funds - 2 * steps);
  uint64_t trainers = std::get<0>(ec.account(1, ec.nodes[2].id)) + std::get<0>(ec.account(1, ec.nodes[3].id));
  const uint64_t reward = budget * ledger::genesis_config{}.reward_percent / 100; // the rule's
  BOOST_TEST(trainers > 2 * steps, "the reward was not minted: " << trainers);
  BOOST_TEST(trainers <= 2 * steps + reward, "trainers got " << trainers);
}

BOOST_AUTO_TEST_CASE(a_console_killed_mid_job_leaves_the_job_to_its_host) {
  economy_cluster ec;
  ec.wait_offers(2);
  const uint64_t funds = 100'000;
  ec.fund_client(funds);
  std::string connect;
  for (auto p : ec.ports)
    connect += (connect.empty() ? "" : ",") + fmt::format("127.0.0.1:{}", p);
  auto digits = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string();
  auto budget = write_file(ec.root.path(), "budget.lua", R"lua(
local j = train{model = "mlp:64-64-10", data = arg[1], trainers = 2, steps = 3000, budget = 6000}
print("job " .. j.id)
io.stdout:flush()
j:wait{}
print("not reached: the console is killed first")
)lua");
  process console({aicon_binary(), "run", budget.string(), "--connect", connect, "--data-dir",
                   ec.cli.dir.string(), "--", digits},
                  ec.root / "console.log");
  auto line = console.wait_for_log("job ", 90s);
  BOOST_REQUIRE_MESSAGE(line, console.log_text());
  auto id = line->substr(line->find("job ") + 4, 64);
  auto job = id_bytes(id);
  auto status = [&] { return ec.job_status(job); };
  BOOST_REQUIRE_MESSAGE(ec.wait_step(job, 100) >= 100, "the job did not reach step 100 within 60 s");
  BOOST_TEST(console.stop(SIGKILL, 10s) == 128 + SIGKILL);
  BOOST_TEST(console.log_text().find("not reached") == std::string::npos);
  // A second console attaches by id and reads the result.
  auto attach = write_file(ec.root.path(), "attach.lua", R"lua(
local j = job.attach(arg[1])
local m = j:wait{}
print(("attached: %s, accuracy %.4f, paid %d, refunded %d, %s"):format(j:status(), m.accuracy,
      m.paid, m.refunded, m.verified))
)lua");
  auto second = run_command({aicon_binary(), "run", attach.string(), "--connect", connect,
                             "--data-dir", ec.cli.dir.string(), "--", id},
                            180s);
  BOOST_TEST_MESSAGE("second console -> " << second.exit_code << "\n" << second.output);
  BOOST_REQUIRE_EQUAL(second.exit_code, 0);
  BOOST_TEST(second.output.find("attached: done, accuracy 0.9") != std::string::npos, second.output);
  // 6000 / (2 x 3000) = 1 per trainer-step: all of it to the trainers.
  BOOST_TEST(second.output.find("paid 6000, refunded 0, 2/2 trainers passed") != std::string::npos,
             second.output);
  // Verified work earned blocks that carry the session; the escrow is
  // settled; the trained model is the payer's.
  opened<schema::JobInfo> info{status()};
  BOOST_REQUIRE_EQUAL(info->getSession().size(), 32u);
  bool carried = false;
  for (uint64_t h = 1; h <= ec.height(0) && !carried; ++h) {
    auto blk = ec.ask(0, "ledger", make_envelope<schema::LedgerQuery>([h](auto q) { q.setBlockAt(h); }));
    if (blk)
      carried = opened<schema::Block>{*blk}->getHeader().getSessionId() == info->getSession();
  }
  BOOST_TEST(carried, "no block carries the job's session");
  BOOST_TEST(std::get<0>(ec.account(0, ec.cli.id)) == funds - 6000);
  BOOST_REQUIRE_EQUAL(info->getModelAsset().size(), 32u);
  std::array<uint8_t, 32> asset{};
  std::memcpy(asset.data(), info->getModelAsset().begin(), 32);
  auto terms = train::terms_of([&](envelope q) { return ec.ask(0, "ledger", std::move(q)); }, asset);
  BOOST_REQUIRE(terms && *terms);
  BOOST_TEST(((*terms)->owner == ec.cli.id));
}

BOOST_AUTO_TEST_CASE(a_preempted_job_yields_resumes_and_ends_with_the_same_weights) {
  economy_cluster ec;
  ec.wait_offers(2);
  auto low = random_job(), high = random_job(), reference = random_job();
  for (auto* j : {&low, &high}) {
    auto ack = ec.ask(0, "block_generator", train::make_escrow_lock(ec.payer, ec.chain, ++ec.payer_nonce, *j, 10'000));
    BOOST_REQUIRE_MESSAGE(ack, why(ack));
  }
  ec.payer_tx([&](uint64_t n) { return train::make_escrow_lock(ec.payer, ec.chain, n, reference, 10'000); });
  auto options = [&](const std::array<uint8_t, 32>& job, uint32_t priority, uint64_t steps) {
    auto o = ec.allocated_job(job, steps);
    o.priority = priority;
    o.checkpoint_every = 10;
    o.lease_ms = 2000; // renewed every 500 ms
    return o;
  };
  const uint64_t steps = 2500;
  std::atomic<uint64_t> low_step{0};
  caf::expected<train::job_result> low_result = make_error(errc::internal, "not run");
  std::thread low_thread([&] {
    low_result = train::run_job(*ec.c, options(low, 0, steps),
                                [&](const train::step_report& s) { low_step = s.step; });
  });
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (low_step < 50 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  // The higher-priority job asks for all four trainers while `low` holds them.
  auto high_result = train::run_job(*ec.c, options(high, 5, 100));
  low_thread.join();
  BOOST_REQUIRE_MESSAGE(high_result, why(high_result));
  BOOST_REQUIRE_MESSAGE(low_result, why(low_result));
  for (auto& e : low_result->events)
    BOOST_TEST_MESSAGE("low: " << e);
  for (auto& e : high_result->events)
    BOOST_TEST_MESSAGE("high: " << e);
  BOOST_TEST(low_result->preemptions >= 1u);
  BOOST_TEST(low_result->steps == steps);
  // The same job never preempted: the same final weights, bit for bit (the
  // resumed ring re-computes from the checkpoint with the same 4 ranks).
  auto uninterrupted = train::run_job(*ec.c, options(reference, 0, steps));
  BOOST_REQUIRE_MESSAGE(uninterrupted, why(uninterrupted));
  BOOST_TEST(uninterrupted->preemptions == 0u);
  auto a = train::parse_checkpoint(low_result->checkpoint, "preempted");
  auto b = train::parse_checkpoint(uninterrupted->checkpoint, "uninterrupted");
  BOOST_REQUIRE(a && b);
  BOOST_TEST((a->params == b->params));
  BOOST_TEST(low_result->accuracy == uninterrupted->accuracy);
  BOOST_TEST_MESSAGE("accuracy after preemption " << low_result->accuracy << ", uninterrupted "
                                                  << uninterrupted->accuracy);
}

BOOST_AUTO_TEST_CASE(a_trainer_computing_at_weights_of_its_own_is_voted_out) {
  // t1's trainers compute 20% of their steps at all-zero weights (an MLP's
  // gradient there is nearly free) and show those as the steps' evidence:
  // re-execution alone passes them (the digest binds the weights they
  // show). The rater's vote on each challenged step's weights finds the
  // ring split two against two (t1's two ranks agree with each other): no
  // rank can be trusted, nobody is paid, minted for or slashed.
  economy_cluster ec{false, false, 3, {}, true};
  ec.wait_offers(2);
  auto job = random_job();
  const uint64_t steps = 150, escrow = 4 * steps + 500;
  ec.payer_tx([&](uint64_t n) { return train::make_escrow_lock(ec.payer, ec.chain, n, job, escrow); });
  auto o = ec.allocated_job(job, steps);
  auto r = train::run_job(*ec.c, o);
  BOOST_REQUIRE_MESSAGE(r, why(r));
  BOOST_TEST(ec.hosts[3].proc->log_text().find("gradients at all-zero weights") != std::string::npos);
  auto rated = ec.ask(0, "rater", ec.rate_request(o, *r), 120s);
  BOOST_REQUIRE_MESSAGE(rated, why(rated));
  auto rating = train::parse_rating(*rated);
  BOOST_REQUIRE_MESSAGE(rating, why(rating));
  BOOST_REQUIRE(rating->verdicts.size() == 4u);
  for (auto& v : rating->verdicts) {
    BOOST_TEST_MESSAGE("rank " << v.rank << ": " << (v.passed ? "passed" : "FAILED: " + v.why));
    BOOST_TEST(!v.passed, "rank " << v.rank);
    BOOST_TEST(v.why.find("none hold a majority") != std::string::npos, v.why);
  }
  BOOST_TEST(rating->slashed == 0u);
  BOOST_TEST(rating->minted == 0u);
  BOOST_TEST(rating->receipts == 0u);
  for (size_t t : {size_t{2}, size_t{3}})
    BOOST_TEST(std::get<2>(ec.account(0, ec.nodes[t].id)) == economy_cluster::trainer_stake);
  // The settlement pays nobody for unverified work: the escrow returns whole.
  auto plan = train::plan_settlement(escrow, *rating, steps, 1, ec.payer.id());
  BOOST_TEST(plan.trainers == 0u);
  BOOST_TEST(plan.refund == escrow);
}

BOOST_AUTO_TEST_CASE(a_trainer_host_killed_after_its_ring_finished_still_answers_its_rater) {
  // t1's host is killed (SIGKILL) after the job's ring finished and before
  // the rating, then started again: the sessions it finished for the
  // verifier wrote down what the rater is owed, so the new process answers
  // the digests and evidence from its files and its honest trainers pass
  // and are paid (they used to fail "no trainer ... on this host", a
  // slashable failure).
  economy_cluster ec;
  ec.wait_offers(2);
  auto [o, r] = ec.trained_job(80);
  ec.rated_after_restart(3, o, r);
  // Its evidence files are still there, for the rest of their keeping.
  size_t files = 0;
  std::error_code ec_;
  for (auto& f : std::filesystem::directory_iterator(ec.nodes[3].dir / "evidence", ec_)) {
    BOOST_TEST_MESSAGE("kept: " << f.path().filename().string());
    ++files;
  }
  BOOST_TEST(files == 4u); // two sessions' .ev and .owed
}

BOOST_AUTO_TEST_CASE(a_rating_request_with_other_training_terms_slashes_no_one) {
  // The payer asks for a rating with another seed than its job ran: the
  // rater would re-execute every step against other batches and fail the
  // honest trainers. Each trainer signed the terms it ran with its log, so
  // the rater sees the request's are not theirs: unpaid, nobody slashed
  // (before, by the code, they failed re-execution as culprits, and the
  // escrow went back to the payer).
  economy_cluster ec;
  ec.wait_offers(2);
  auto [o, r] = ec.trained_job(40);
  auto lying = o;
  lying.seed += 1;
  auto reply = ec.ask(0, "rater", ec.rate_request(lying, r), 120s);
  BOOST_REQUIRE_MESSAGE(reply, why(reply));
  auto rating = train::parse_rating(*reply);
  BOOST_REQUIRE_MESSAGE(rating, why(rating));
  for (auto& v : rating->verdicts) {
    BOOST_TEST(!v.passed, "rank " << v.rank);
    BOOST_TEST(v.why.find("signed for other training terms") != std::string::npos, v.why);
  }
  BOOST_TEST(rating->slashed == 0u);
}

BOOST_AUTO_TEST_CASE(a_trainer_host_that_answers_link_down_to_its_challenges_is_slashed) {
  // t1's host comes back after the ring finished with fault injection on:
  // every evidence challenge is answered with a made-up "link down". The
  // rater's own directory has the link up, so that is the host's answer
  // (no evidence shown), not an out-of-reach host: its ranks fail and it
  // is slashed, as a host hiding steps it cannot show must be.
  economy_cluster ec;
  ec.wait_offers(2);
  auto [o, r] = ec.trained_job(60);
  ec.restart_with_fault(3, "trainer_hide_evidence");
  BOOST_TEST(ec.hosts[3].proc->log_text().find("FAULT INJECTION") != std::string::npos);
  auto rating = ec.rated(o, r);
  auto liar = ec.nodes[3].id;
  for (auto& v : rating.verdicts) {
    bool lies = r.rank_hosts[v.rank] == liar;
    BOOST_TEST(v.passed == !lies, "rank " << v.rank << ": " << v.why);
    if (lies)
      BOOST_TEST(v.why.find("trainer_hide_evidence") != std::string::npos, v.why);
  }
  BOOST_TEST(rating.slashed == economy_cluster::trainer_stake / 2);
  BOOST_TEST(rating.receipts == 2u);
}

BOOST_AUTO_TEST_CASE(a_trainer_that_poisons_its_ring_partner_is_caught_by_its_own_signature) {
  // A ring of two on the stream transport. t1's operator turns on
  // [faults] trainer_poison_ring: on 20% of its steps its trainer commits
  // to its gradient in its log but sends its partner noise, signing the
  // noise's hash (its partner takes no floats whose hash its host did not
  // sign). Both ranks add the same poisoned sum, so the weights agree and
  // every committed gradient re-executes: only the partner's record of the
  // signed hash shows it, and the saboteur's own signature convicts it.
  // (Without the signatures this rating passed both ranks and paid them.)
  economy_cluster ec;
  ec.wait_offers(2);
  ec.one_slot_each("\n[faults]\ntrainer_poison_ring = true\n");
  auto saboteur = ec.nodes[3].id;
  auto [o, r] = ec.trained_job(150, {}, 2);
  BOOST_TEST(ec.hosts[3].proc->log_text().find("noise sent to its ring") != std::string::npos);
  // The honest host is killed and started again before the rating: what
  // the saboteur signed is in its owed record, and outlives the process.
  ec.restart_killed(2);
  auto rating = ec.rated(o, r);
  size_t poisoning = 0;
  for (auto& v : rating.verdicts) {
    bool poisons = r.rank_hosts[v.rank] == saboteur;
    poisoning += poisons ? 1 : 0;
    BOOST_TEST(v.passed == !poisons, "rank " << v.rank << ": " << v.why);
    if (poisons)
      BOOST_TEST(v.why.find("it poisoned the ring's sum") != std::string::npos, v.why);
  }
  BOOST_REQUIRE(poisoning == 1u);
  BOOST_TEST(rating.slashed == economy_cluster::trainer_stake / 2);
}

BOOST_AUTO_TEST_CASE(a_cheating_trainer_is_caught_slashed_and_unpaid) {
  // t1's operator turns on fault injection in its own host.toml: its
  // trainers send random gradients on 20% of their steps (a miss by k = 44
  // draws has probability ~4e-5). No message can ask for that.
  economy_cluster ec{false, false, 3};
  auto cheater = ec.nodes[3].id;
  ec.wait_offers(2);
  auto job = random_job();
  const uint64_t steps = 150, escrow = 4 * steps + 500;
  const uint64_t reward = escrow * ledger::genesis_config{}.reward_percent / 100; // the rule's
  ec.payer_tx([&](uint64_t n) { return train::make_escrow_lock(ec.payer, ec.chain, n, job, escrow); });
  auto o = ec.allocated_job(job, steps);
  auto r = train::run_job(*ec.c, o);
  BOOST_REQUIRE_MESSAGE(r, why(r));
  BOOST_TEST(ec.hosts[3].proc->log_text().find("FAULT INJECTION") != std::string::npos);
  auto rated = ec.ask(0, "rater", ec.rate_request(o, *r), 120s);
  BOOST_REQUIRE_MESSAGE(rated, why(rated));
  auto rating = train::parse_rating(*rated);
  BOOST_REQUIRE_MESSAGE(rating, why(rating));
  size_t cheating_ranks = 0;
  for (auto& v : rating->verdicts) {
    BOOST_TEST_MESSAGE("rank " << v.rank << ": " << (v.passed ? "passed" : "FAILED: " + v.why));
    bool cheats = r->rank_hosts[v.rank] == cheater;
    cheating_ranks += cheats ? 1 : 0;
    BOOST_TEST(v.passed == !cheats, "rank " << v.rank);
    if (cheats)
      BOOST_TEST(v.why.find("differs from the committed digest") != std::string::npos, v.why);
  }
  BOOST_REQUIRE(cheating_ranks == 2u); // two slots on each trainer host
  // Slashed once for the job (both its ranks failed), by the chain's rule.
  BOOST_TEST(rating->slashed == economy_cluster::trainer_stake / 2);
  BOOST_TEST(rating->receipts == 2u);
  // Its rating drops at the allocator (halved for each failure), so later
  // asks rank it lower.
  BOOST_TEST(ec.hosts[0].proc->wait_for_log("trainer " + cheater.short_hex()
                                              + " FAILED verification, rating",
                                            10s).has_value(),
             ec.hosts[0].proc->log_text());
  // Settled: the cheater's rank earns nothing; its host keeps what its honest
  // rank earned; half its stake is gone, and so is that much supply.
  auto plan = train::plan_settlement(escrow, *rating, steps, 1, ec.payer.id());
  ec.payer_tx([&](uint64_t n) { return train::make_settle(ec.payer, ec.chain, n, job, plan); });
  std::map<node_id, uint64_t> ranks_passed, reward_of;
  for (auto& v : rating->verdicts)
    ranks_passed[v.trainer] += v.passed ? 1 : 0;
  for (auto& [w, a] : rating->rewards)
    reward_of[w] += a;
  uint64_t total = 0;
  for (size_t t : {size_t{2}, size_t{3}}) {
    auto id = ec.nodes[t].id;
    auto [bal, nonce, stake] = ec.account(1, id);
    BOOST_TEST(bal == ranks_passed[id] * steps + reward_of[id], ec.names[t]);
    BOOST_TEST(stake == (id == cheater ? economy_cluster::trainer_stake / 2
                                       : economy_cluster::trainer_stake),
               ec.names[t]);
    total += bal + stake;
  }
  // Trainers' part of the reward (80%; no dataset or model is registered
  // here, so their parts stay unminted): all of it to the honest host.
  BOOST_TEST(rating->minted == reward / 10 * 8);
  BOOST_TEST(reward_of[cheater] == 0u);
  auto [payer_after, pn, ps] = ec.account(1, ec.payer.id());
  BOOST_TEST(payer_after == economy_cluster::payer_funds - 2 * steps);
  total += payer_after;
  BOOST_TEST(total == economy_cluster::payer_funds + 2 * economy_cluster::trainer_stake
                        + rating->minted - rating->slashed);
}

BOOST_AUTO_TEST_CASE(a_lost_trainer_host_is_replaced_by_the_allocator) {
  economy_cluster ec{true}; // t0, t2 in the data's site, t1 40 ms away
  ec.wait_offers(3);
  auto job = random_job();
  const uint64_t steps = 300;
  ec.payer_tx([&](uint64_t n) { return train::make_escrow_lock(ec.payer, ec.chain, n, job, 4 * steps); });
  auto o = ec.allocated_job(job, steps);
  o.checkpoint_every = 10;
  o.ring_timeout_ms = 2000;
  o.lease_ms = 2000;
  std::atomic<uint64_t> at{0};
  caf::expected<train::job_result> r = make_error(errc::internal, "not run");
  std::thread runner([&] {
    r = train::run_job(*ec.c, o, [&](const train::step_report& s) {
      at = s.step;
      if (s.step == 60) // give the test time to pull the plug mid-job
        std::this_thread::sleep_for(300ms);
    });
  });
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (at < 60 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  // The nearest hosts won (t0 and t2, both in the data's site); kill one.
  auto held = ec.leases_of_job(job);
  BOOST_REQUIRE(!held.empty());
  std::set<node_id> holders;
  for (auto& l : held)
    holders.insert(l.trainer);
  BOOST_TEST(holders.count(ec.nodes[3].id) == 0u); // the far host was not chosen
  size_t victim = holders.count(ec.nodes[2].id) ? 2 : 4;
  BOOST_TEST_MESSAGE("SIGKILL " << ec.names[victim] << " at step " << at.load());
  ec.hosts[victim].proc->stop(SIGKILL, 10s);
  runner.join();
  BOOST_REQUIRE_MESSAGE(r, why(r));
  bool replaced = false;
  for (auto& e : r->events) {
    BOOST_TEST_MESSAGE("job: " << e);
    replaced |= e.find("allocator replaced " + ec.nodes[victim].id.short_hex()) != std::string::npos;
  }
  BOOST_TEST(replaced);
  BOOST_TEST(r->steps == steps);
  BOOST_TEST(r->accuracy >= 0.9);
  // The allocator also dropped the dead host's offer once it stopped beating.
  bool dropped = ec.hosts[0].proc->wait_for_log("lost its trainer "
                                                  + ec.nodes[victim].id.short_hex(),
                                                10s).has_value()
                 || ec.offers() == 2u;
  BOOST_TEST(dropped);

  // The first ring's work is verified and paid with the job's: its
  // surviving host's two ranks for the steps up to the checkpoint the
  // second ring resumed from; the lost host, which logged nothing, neither
  // paid nor slashed.
  BOOST_REQUIRE_EQUAL(r->earlier.size(), 1u);
  auto& first = r->earlier[0];
  auto survivor = victim == 2 ? ec.nodes[4].id : ec.nodes[2].id;
  const auto& victim_id = ec.nodes[victim].id;
  BOOST_TEST(first.first_step == 0u);
  BOOST_TEST(first.kept_steps >= 10u);
  BOOST_TEST(first.kept_steps % 10 == 0u); // a checkpoint's step
  BOOST_TEST(first.kept_steps < steps);
  BOOST_TEST(first.logs.size() == 2u); // the survivor's two ranks answered the finish
  BOOST_TEST(std::count(first.rank_hosts.begin(), first.rank_hosts.end(), victim_id) == 2);
  auto rated = ec.ask(0, "rater", ec.rate_request(o, *r), 120s);
  BOOST_REQUIRE_MESSAGE(rated, why(rated));
  auto rating = train::parse_rating(*rated);
  BOOST_REQUIRE_MESSAGE(rating, why(rating));
  BOOST_REQUIRE_EQUAL(rating->verdicts.size(), 6u); // 4 of the last ring, 2 of the first
  uint64_t kept = first.kept_steps;
  for (size_t i = 0; i < rating->verdicts.size(); ++i) {
    auto& v = rating->verdicts[i];
    bool earlier = i >= 4;
    BOOST_TEST_MESSAGE((earlier ? "first ring" : "last ring")
                       << " rank " << v.rank << " on " << v.trainer.short_hex() << ": "
                       << (v.passed ? "passed" : "FAILED: " + v.why) << ", paid for "
                       << v.paid_steps << " steps");
    BOOST_TEST(v.passed, v.why);
    BOOST_TEST((v.session == (earlier ? first.session : r->session)));
    BOOST_TEST(v.paid_steps == (earlier ? kept : steps - kept));
    if (earlier)
      BOOST_TEST((v.trainer == survivor));
    BOOST_TEST((v.trainer != victim_id));
  }
  BOOST_TEST(rating->slashed == 0u);
  BOOST_TEST(rating->receipts == 6u);
  auto plan = train::plan_settlement(4 * steps, *rating, steps, 1, ec.payer.id());
  BOOST_REQUIRE_MESSAGE(plan.why.empty(), plan.why);
  std::map<node_id, uint64_t> paid(plan.payouts.begin(), plan.payouts.end());
  BOOST_TEST(paid[survivor] == 2 * kept + 2 * (steps - kept)); // both rings
  BOOST_TEST(paid[ec.nodes[3].id] == 2 * (steps - kept));      // the replacement
  BOOST_TEST(paid.count(victim_id) == 0u);
  BOOST_TEST(plan.refund == 4 * steps - plan.trainers);
  ec.payer_tx([&](uint64_t n) { return train::make_settle(ec.payer, ec.chain, n, job, plan); });
  std::map<node_id, uint64_t> reward_of;
  for (auto& [w, a] : rating->rewards)
    reward_of[w] += a;
  BOOST_TEST(reward_of.count(victim_id) == 0u);
  for (auto* who : {&survivor, &ec.nodes[3].id}) {
    auto [bal, nonce, stake] = ec.account(1, *who);
    BOOST_TEST(bal == paid[*who] + reward_of[*who], who->short_hex());
    BOOST_TEST(stake == economy_cluster::trainer_stake);
  }
}

BOOST_AUTO_TEST_CASE(a_ring_across_two_sites_is_placed_by_measured_round_trips) {
  economy_cluster ec{true, true}; // t0, t2 west; t1 east, 15 ms each way behind a proxy
  ec.wait_offers(3);
  // No [[site_rtt]] here: the allocator learns west-east from the pings.
  double west_east = 0;
  bool measured = false;
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline && west_east < 25.0) {
    auto r = ec.ask(0, "allocator", make_envelope<schema::AllocQuery>([](auto q) { q.setBook(); }));
    if (r) {
      opened<schema::AllocBook> b{*r};
      for (auto x : b->getSiteRtts())
        if (std::string{x.getA().cStr()} == "east" && std::string{x.getB().cStr()} == "west") {
          west_east = x.getMs();
          measured = x.getMeasured();
        }
    }
    if (west_east < 25.0)
      std::this_thread::sleep_for(200ms);
  }
  BOOST_TEST_MESSAGE("the allocator measured west-east at " << west_east << " ms");
  BOOST_TEST(west_east >= 25.0);
  BOOST_TEST(measured);

  auto small = random_job(), big = random_job();
  auto ack = ec.ask(0, "block_generator",
                    train::make_escrow_lock(ec.payer, ec.chain, ++ec.payer_nonce, small, 10'000));
  BOOST_REQUIRE_MESSAGE(ack, why(ack));
  ec.payer_tx([&](uint64_t n) { return train::make_escrow_lock(ec.payer, ec.chain, n, big, 10'000); });
  // At equal price and rating, a job with its data in the west gets west
  // trainers.
  auto granted = ec.ask(0, "allocator", ec.alloc_ask(small, 2, 100));
  BOOST_REQUIRE_MESSAGE(granted, why(granted));
  auto leases = leases_of(*granted);
  BOOST_REQUIRE(!leases.empty());
  for (auto& l : leases)
    BOOST_TEST((l.trainer == ec.nodes[2].id || l.trainer == ec.nodes[4].id),
               "a trainer across the WAN was chosen: " << l.trainer.short_hex());
  auto rel = ec.alloc_query(small, ec.alloc_token, [](auto q) { q.setRelease(); });
  BOOST_REQUIRE_MESSAGE(rel, why(rel));
  // A job that needs all six trainers gets one ring across both sites.
  auto o = ec.allocated_job(big, 150);
  o.trainers = 6;
  auto r = train::run_job(*ec.c, o);
  BOOST_REQUIRE_MESSAGE(r, why(r));
  std::set<node_id> hosts(r->rank_hosts.begin(), r->rank_hosts.end());
  BOOST_TEST(hosts.size() == 3u);
  BOOST_TEST(hosts.count(ec.nodes[3].id) == 1u); // east
  BOOST_TEST_MESSAGE("cross-site ring of " << r->rank_hosts.size() << " ranks: accuracy "
                                           << r->accuracy);
  BOOST_TEST(r->accuracy >= 0.9);
}

BOOST_AUTO_TEST_SUITE_END()

// A TorchScript job verified across numeric environments: the rater's host
// pins libtorch's CPU kernels to `default` while the trainers' pick their
// own (auto-detected), so the rater compares each sampled step within the
// tolerance (rater/verify.hpp) against the gradient the trainer committed.
// The honest host's trainers pass; the cheating host's (20% of steps faked)
// are caught. Its own ctest entry: skipped without libtorch or python3-torch.
BOOST_AUTO_TEST_SUITE(torch_verification)

BOOST_AUTO_TEST_CASE(a_rater_on_other_cpu_kernels_compares_within_the_tolerance) {
  if (torch_skipped())
    return;
  economy_cluster ec(false, false, 3, {"ATEN_CPU_CAPABILITY=default"}); // t1 cheats
  auto models = ec.root / "models";
  if (!make_torch_models(models))
    return;
  ec.wait_offers(2);
  ec.fund_client(100'000);
  auto digits = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string();
  auto submit = ec.job_cli({"job", "submit", "--model", "torch:" + (models / "digits_cnn.pt").string(),
                            "--data", digits, "--trainers", "4", "--steps", "120", "--budget",
                            "10000", "--verify"},
                           120s);
  BOOST_REQUIRE_EQUAL(submit.exit_code, 0);
  auto end = submit.output.find_last_not_of('\n');
  auto id = submit.output.substr(end - 63, 64);
  auto wait = ec.job_cli({"job", "wait", id, "--timeout", "240"}, 300s);
  BOOST_REQUIRE_MESSAGE(wait.exit_code == 0, wait.output << "\n--- c0:\n" << ec.hosts[0].proc->log_text());
  // The honest host's two trainers pass, the cheater's two are caught.
  BOOST_TEST(wait.output.find("verified  2/4 trainers passed") != std::string::npos, wait.output);
  auto log = ec.hosts[0].proc->log_text();
  BOOST_TEST(log.find("cannot be re-executed bit for bit here; comparing its steps within the "
                      "tolerance (rtol 1e-04, atol 1e-06)")
               != std::string::npos,
             log);
  const std::string passed = "passed within tolerance: 44 steps, at most ";
  auto at = log.find(passed);
  BOOST_REQUIRE_MESSAGE(at != std::string::npos, log);
  auto used = std::stod(log.substr(at + passed.size(), 12));
  BOOST_TEST_MESSAGE("honest steps on auto-detected kernels against a rater on default ones: "
                     "at most " << used << " of the tolerance used");
  BOOST_TEST(used < 0.5); // well inside it, not at its edge
  BOOST_TEST(log.find("failed within tolerance") != std::string::npos, log);
  BOOST_TEST(log.find("is not the one it committed to") != std::string::npos, log);

  // A regression model (one output column, squared error against the
  // diabetes targets) is verified the same way: the rater reads the file's
  // targets as the trainers do.
  auto diabetes = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/diabetes.csv.gz").string();
  auto reg = ec.job_cli({"job", "submit", "--model",
                         "torch:" + (models / "diabetes_mlp.pt").string(), "--data", diabetes,
                         "--trainers", "4", "--steps", "120", "--optimizer", "adamw", "--lr",
                         "0.01", "--budget", "10000", "--verify"},
                        120s);
  BOOST_REQUIRE_EQUAL(reg.exit_code, 0);
  auto reg_end = reg.output.find_last_not_of('\n');
  auto reg_id = reg.output.substr(reg_end - 63, 64);
  auto reg_wait = ec.job_cli({"job", "wait", reg_id, "--timeout", "240"}, 300s);
  BOOST_REQUIRE_MESSAGE(reg_wait.exit_code == 0, reg_wait.output);
  BOOST_TEST(reg_wait.output.find("verified  2/4 trainers passed") != std::string::npos,
             reg_wait.output);
  BOOST_TEST(reg_wait.output.find("r2        ") != std::string::npos, reg_wait.output);
}

BOOST_AUTO_TEST_CASE(a_torch_trainer_host_restarted_before_the_rating_still_shows_its_gradients) {
  // A rater in another numeric environment asks each challenged step's
  // gradient. t1's host is killed after the ring finished and started
  // again: its sessions kept a copy of the model file they loaded and the
  // rows their steps used, so the new process recomputes the gradients
  // (they used to be refused "its model and data are gone", a slashable
  // failure).
  if (torch_skipped())
    return;
  economy_cluster ec(false, false, economy_cluster::no_cheater, {"ATEN_CPU_CAPABILITY=default"});
  auto models = ec.root / "models";
  if (!make_torch_models(models))
    return;
  ec.wait_offers(2);
  auto [o, r] = ec.trained_job(40, "torch:" + (models / "digits_cnn.pt").string());
  ec.rated_after_restart(3, o, r);
  auto log = ec.hosts[0].proc->log_text();
  BOOST_TEST(log.find("comparing its steps within the tolerance") != std::string::npos, log);
  std::map<std::string, size_t> kinds;
  std::error_code ec_;
  for (auto& f : std::filesystem::directory_iterator(ec.nodes[3].dir / "evidence", ec_))
    ++kinds[f.path().extension().string()];
  BOOST_TEST(kinds[".ev"] == 2u);
  BOOST_TEST(kinds[".owed"] == 2u);
  BOOST_TEST(kinds[".rows"] == 2u);
  BOOST_TEST(kinds[".pt"] == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
