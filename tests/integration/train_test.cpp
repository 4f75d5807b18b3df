// Data-parallel training across real host processes on 127.0.0.1: two hosts
// with the trainer role, two trainers each, coordinated from this process.
// 4 trainers on 2 hosts match 1 trainer on the same global batch and seed
// (weights within 1e-5 relative after 50 steps); they train an MLP on digits
// to >= 0.95 held-out accuracy; a trainer host killed with SIGKILL in the
// middle of a job is dropped, the ring re-forms from the last checkpoint
// with the survivors and a spare host in the lost one's place, and the job
// still reaches >= 0.95.
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

#include <sodium.h>

#include "actors/data_node/model_store.hpp"
#include "actors/data_node/remote.hpp"
#include "actors/job/job.hpp"
#include "actors/ledger/hashing.hpp"
#include "actors/trainer/trainer.hpp"
#include "schemas/alloc.capnp.h"
#include "gpu/device.hpp"
#include "actors/trainer/model.hpp"
#include "actors/trainer/torch_model.hpp"
#include "fixtures.hpp"
#include "schemas/trainer.capnp.h"

using namespace aicon;
using namespace aicon::test;

namespace {

std::filesystem::path digits_csv() {
  return std::filesystem::path{AICON_SOURCE_DIR} / "tests" / "data" / "digits.csv.gz";
}

struct train_cluster {
  test::temp_dir root;
  std::vector<node_dir> nodes;  ///< a, b (and the spare s)
  std::vector<uint16_t> ports;
  std::vector<running_host> hosts;
  node_dir cli;
  std::unique_ptr<client> c;

  /// `roles`: what every host runs, besides directory and trainer;
  /// `hosts_are_clients`: every host lists the others (and itself) in its
  /// trainer_clients, as a job role running unpaid jobs on them needs.
  explicit train_cluster(bool with_spare = false, std::string roles = "",
                         bool hosts_are_clients = false, std::string host_extra = "") {
    std::vector<std::string> names{"a", "b"};
    if (with_spare)
      names.push_back("s");
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
    // Every host dials every other: the accepting side of a link does not
    // learn who dialed.
    std::string clients = fmt::format("\"{}\"", cli.id.hex());
    if (hosts_are_clients)
      for (auto& n : nodes)
        clients += fmt::format(", \"{}\"", n.id.hex());
    for (size_t i = 0; i < nodes.size(); ++i) {
      std::string allow = fmt::format("\"{}\"", cli.id.hex()), connect;
      for (size_t k = 0; k < nodes.size(); ++k)
        if (k != i) {
          allow += fmt::format(", \"{}\"", nodes[k].id.hex());
          connect += fmt::format("  {{ address = \"127.0.0.1:{}\", node = \"{}\" }},\n", ports[k],
                                 nodes[k].id.hex());
        }
      auto cfg = write_file(root.path(), names[i] + ".toml",
                            fmt::format("[host]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n"
                                        "roles = [\"directory\", \"trainer\"{}]\n"
                                        "data_files = [\"{}/tests/data\", \"{}\"]\n"
                                        "trainer_clients = [{}]\n{}[peers]\n"
                                        "allow = [{}]\nconnect = [\n{}]\n",
                                        names[i], ports[i], roles, AICON_SOURCE_DIR,
                                        (root / "models").string(), clients, host_extra, allow,
                                        connect));
      hosts.push_back(start_host(cfg, root / (names[i] + ".log"), {"-v"}));
    }
    for (size_t i = 0; i < nodes.size(); ++i)
      for (size_t k = 0; k < nodes.size(); ++k)
        if (k != i)
          BOOST_REQUIRE_MESSAGE(hosts[i].proc->wait_for_log("peer up " + nodes[k].id.short_hex(), 20s),
                                "host " << i << " never linked to " << k << ":\n"
                                        << hosts[i].proc->log_text());
    client::options opts;
    opts.data_dir = cli.dir;
    opts.threads = 2;
    auto cl = client::start(opts);
    BOOST_REQUIRE_MESSAGE(cl, why(cl));
    c = std::move(*cl);
    for (size_t i = 0; i < nodes.size(); ++i) {
      auto linked = c->connect(fmt::format("127.0.0.1:{}", ports[i]), nodes[i].id);
      BOOST_REQUIRE_MESSAGE(linked, why(linked));
    }
  }

  ~train_cluster() {
    c.reset();
  }

  train::job_options job(std::vector<node_id> hosts, uint32_t per_host, uint64_t steps) {
    train::job_options o;
    o.hosts = std::move(hosts);
    o.trainers_per_host = per_host;
    o.steps = steps;
    o.data_file = digits_csv().string();
    o.global_batch = 32;
    o.chunk_bytes = 4096; // several chunks per segment: the pipelined path
    o.ring_timeout_ms = 2000;
    return o;
  }
};

std::vector<float> params_of(const std::vector<uint8_t>& checkpoint) {
  auto c = train::parse_checkpoint(checkpoint, "job checkpoint");
  BOOST_REQUIRE_MESSAGE(c, why(c));
  return c->params;
}

/// ||a - b|| / ||b|| of two jobs' final weights (the same model).
double relative_difference(const std::vector<uint8_t>& a_checkpoint,
                           const std::vector<uint8_t>& b_checkpoint) {
  auto a = params_of(a_checkpoint), b = params_of(b_checkpoint);
  BOOST_REQUIRE_EQUAL(a.size(), b.size());
  double diff = 0, norm = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff += (a[i] - b[i]) * static_cast<double>(a[i] - b[i]);
    norm += b[i] * static_cast<double>(b[i]);
  }
  return std::sqrt(diff / norm);
}

/// Python's torch.jit.load of `pt` predicts for `rows` random 64-feature
/// rows (from `seed`) exactly the classes aicon's `mine` predicts.
void python_predicts_as(const train::model& mine, const std::filesystem::path& pt,
                        const std::filesystem::path& dir, size_t rows, uint64_t seed) {
  std::vector<float> x(rows * 64);
  train::rng gen{seed};
  for (auto& v : x)
    v = 4 * gen.uniform() - 2;
  auto inputs = dir / "inputs.f32";
  {
    std::ofstream f{inputs, std::ios::binary};
    f.write(reinterpret_cast<const char*>(x.data()), static_cast<std::streamsize>(x.size() * 4));
  }
  auto py = run_command(
    {"/usr/bin/python3", "-c",
     "import sys, torch; m = torch.jit.load(sys.argv[1]); "
     "x = torch.frombuffer(bytearray(open(sys.argv[2], 'rb').read()), dtype=torch.float32).view(-1, 64); "
     "print(' '.join(str(int(v)) for v in m(x).argmax(1)))",
     pt.string(), inputs.string()});
  BOOST_REQUIRE_MESSAGE(py.exit_code == 0, py.output);
  std::string expect;
  for (auto v : mine.predict(x.data(), rows))
    expect += (expect.empty() ? "" : " ") + std::to_string(v);
  BOOST_TEST(py.output.find(expect) != std::string::npos, "python: " << py.output << "\naicon: " << expect);
}

} // namespace

BOOST_AUTO_TEST_SUITE(training)

BOOST_AUTO_TEST_CASE(four_trainers_on_two_hosts_match_one_and_learn_digits) {
  train_cluster tc;
  // Equivalence: 50 steps, the same global batch and seed.
  auto ring = train::run_job(*tc.c, tc.job({tc.nodes[0].id, tc.nodes[1].id}, 2, 50));
  BOOST_REQUIRE_MESSAGE(ring, why(ring));
  auto single = train::run_job(*tc.c, tc.job({tc.nodes[0].id}, 1, 50));
  BOOST_REQUIRE_MESSAGE(single, why(single));
  auto p4 = params_of(ring->checkpoint), p1 = params_of(single->checkpoint);
  BOOST_REQUIRE_EQUAL(p4.size(), p1.size());
  double diff = 0, norm = 0, worst = 0;
  for (size_t i = 0; i < p1.size(); ++i) {
    diff += (p4[i] - p1[i]) * static_cast<double>(p4[i] - p1[i]);
    norm += p1[i] * static_cast<double>(p1[i]);
    worst = std::max(worst, static_cast<double>(std::abs(p4[i] - p1[i])));
  }
  double rel = std::sqrt(diff / norm);
  BOOST_TEST_MESSAGE("4 trainers vs 1 after 50 steps: relative difference " << rel
                                                                            << ", largest " << worst);
  BOOST_TEST(rel <= 1e-5);
  // The same job with its chunks as actor messages instead of sealed
  // streams: the ring schedule fixes the order of every sum, so the weights
  // are the same bits.
  auto via_actor_opts = tc.job({tc.nodes[0].id, tc.nodes[1].id}, 2, 50);
  via_actor_opts.transport = train::transport::ACTOR;
  auto via_actor = train::run_job(*tc.c, via_actor_opts);
  BOOST_REQUIRE_MESSAGE(via_actor, why(via_actor));
  auto pa = params_of(via_actor->checkpoint);
  BOOST_TEST((pa == p4), "stream and actor transports give other weights");
  BOOST_TEST(ring->logs.size() == 4u);
  for (auto& env : ring->logs) {
    opened<schema::SessionLog> l{env};
    BOOST_REQUIRE(l);
    BOOST_TEST(l->getSteps() == 50u);
  }

  // Accuracy: 4 trainers on 2 hosts.
  auto trained = train::run_job(*tc.c, tc.job({tc.nodes[0].id, tc.nodes[1].id}, 2, 400));
  BOOST_REQUIRE_MESSAGE(trained, why(trained));
  BOOST_TEST_MESSAGE("held-out accuracy " << trained->accuracy);
  BOOST_TEST(trained->accuracy >= 0.95);

  // From the console, on these hosts (trainers, no job role): an unpaid job
  // is coordinated by the console itself; a budget needs a job host to
  // escrow, verify and settle it, and is refused by name, nothing escrowed.
  auto script = write_file(tc.root.path(), "console.lua", R"lua(
local j = train{model = "mlp:64-64-10", data = arg[1], trainers = 2, steps = 20}
print("unpaid job " .. j.id .. " " .. j:wait{}.steps .. " steps")
print(select(2, pcall(train, {data = arg[1], trainers = 2, steps = 20, budget = 1000})))
)lua");
  auto run = run_command({aicon_binary(), "run", script.string(), "--connect",
                          fmt::format("127.0.0.1:{},127.0.0.1:{}", tc.ports[0], tc.ports[1]),
                          "--data-dir", tc.cli.dir.string(), "--", digits_csv().string()},
                         120s);
  BOOST_TEST(run.exit_code == 0, run.output);
  BOOST_TEST(run.output.find("unpaid job local-1 20 steps") != std::string::npos, run.output);
  BOOST_TEST(run.output.find("train: budget= needs a connected host running the job role")
               != std::string::npos,
             run.output);
}

BOOST_AUTO_TEST_CASE(a_ring_runs_the_job_on_its_own_and_reports_through_polls) {
  train_cluster tc;
  // One TrainStep per rank for the whole job: progress and checkpoints come
  // back through polls beside the steps, none of which waits for this
  // coordinator.
  auto o = tc.job({tc.nodes[0].id, tc.nodes[1].id}, 2, 300);
  o.checkpoint_every = 50;
  o.poll_ms = 20;
  std::vector<uint64_t> seen, kept;
  o.on_checkpoint = [&](const std::vector<uint8_t>& bytes) {
    auto c = train::parse_checkpoint(bytes, "checkpoint");
    BOOST_REQUIRE_MESSAGE(c, why(c));
    kept.push_back(c->step);
  };
  auto run = train::run_job(*tc.c, o, [&](const train::step_report& s) {
    seen.push_back(s.step);
    BOOST_TEST(std::isfinite(s.loss));
  });
  BOOST_REQUIRE_MESSAGE(run, why(run));
  BOOST_TEST(run->step_requests == 4u);
  BOOST_TEST(run->polls >= 1u);
  BOOST_TEST_MESSAGE("300 steps: " << run->step_requests << " step requests, " << run->polls
                                   << " polls, checkpoints at " << kept.size() << " steps");
  BOOST_REQUIRE_EQUAL(seen.size(), 300u); // every step once, in order
  for (size_t i = 0; i < seen.size(); ++i)
    BOOST_TEST(seen[i] == i);
  // Checkpoints every 50 steps, in order, the last the job's end.
  BOOST_REQUIRE(!kept.empty());
  BOOST_TEST(kept.size() >= 5u);
  BOOST_TEST(std::is_sorted(kept.begin(), kept.end()));
  BOOST_TEST(kept.back() == 300u);
  for (auto k : kept)
    BOOST_TEST(k % 50 == 0u);

  // The same job a TrainStep per step (as a debugger would): the same bits.
  auto stepwise = o;
  stepwise.steps_per_request = 1;
  stepwise.on_checkpoint = {};
  auto one_by_one = train::run_job(*tc.c, stepwise);
  BOOST_REQUIRE_MESSAGE(one_by_one, why(one_by_one));
  BOOST_TEST(one_by_one->step_requests == 4u * 300u);
  BOOST_TEST((params_of(one_by_one->checkpoint) == params_of(run->checkpoint)));

  // A cancel stops every rank after the same step, agreed in that step's
  // allreduce: the work logs and the checkpoint all end there.
  auto long_job = tc.job({tc.nodes[0].id, tc.nodes[1].id}, 2, 1'000'000);
  long_job.poll_ms = 20;
  long_job.cancel = std::make_shared<std::atomic<bool>>(false);
  long_job.finish_on_cancel = [] { return true; };
  auto cancelled = train::run_job(*tc.c, long_job, [&](const train::step_report& s) {
    if (s.step >= 40)
      long_job.cancel->store(true);
  });
  BOOST_REQUIRE_MESSAGE(cancelled, why(cancelled));
  BOOST_TEST(cancelled->cancelled);
  BOOST_TEST(cancelled->steps >= 41u);
  BOOST_TEST(cancelled->steps < 1'000'000u);
  BOOST_TEST(params_of(cancelled->checkpoint).size() > 0u);
  BOOST_TEST(train::parse_checkpoint(cancelled->checkpoint, "c")->step == cancelled->steps);
  BOOST_REQUIRE(cancelled->logs.size() == 4u);
  for (auto& env : cancelled->logs) {
    opened<schema::SessionLog> l{env};
    BOOST_REQUIRE(l);
    BOOST_TEST(l->getSteps() == cancelled->steps);
  }
}

BOOST_AUTO_TEST_CASE(a_run_longer_than_the_idle_limit_keeps_every_rank) {
  // Only rank 0 is polled for progress; the other ranks hear the
  // coordinator's keep-alive. With trainer_idle_ms at 2 s on both hosts, a
  // run of 6 s must not lose rank 1 to the idle check (a lost rank fails the
  // ring and re-forms it).
  train_cluster tc{false, "", false, "[limits]\ntrainer_idle_ms = 2000\n"};
  auto o = tc.job({tc.nodes[0].id, tc.nodes[1].id}, 1, 100'000'000);
  o.cancel = std::make_shared<std::atomic<bool>>(false);
  o.finish_on_cancel = [] { return true; };
  auto t0 = std::chrono::steady_clock::now();
  auto r = train::run_job(*tc.c, o, [&](const train::step_report&) {
    if (std::chrono::steady_clock::now() - t0 > 6s)
      o.cancel->store(true);
  });
  BOOST_REQUIRE_MESSAGE(r, why(r));
  for (auto& e : r->events)
    BOOST_TEST_MESSAGE(e);
  BOOST_TEST(r->cancelled);
  BOOST_TEST(r->reforms == 0u);
  BOOST_TEST(r->step_requests == 2u);
  BOOST_REQUIRE(r->logs.size() == 2u);
  for (auto& env : r->logs) {
    opened<schema::SessionLog> l{env};
    BOOST_REQUIRE(l);
    BOOST_TEST(l->getSteps() == r->steps);
  }
}

BOOST_AUTO_TEST_CASE(a_verified_run_keeps_every_steps_evidence_or_is_refused) {
  // A rater may challenge any step of a verified job, so a trainer keeps
  // the weights before every one (in files under its data dir), and
  // refuses, by name, a run it could not keep them for: here 1 MiB a
  // session, 19 KiB a step of mlp:64-64-10.
  train_cluster tc{false, "", false, "[limits]\ntrainer_evidence_bytes = 1048576\n"};
  auto evidence_files = [&](size_t host) {
    size_t n = 0;
    std::error_code ec;
    for (auto& f : std::filesystem::directory_iterator(tc.nodes[host].dir / "evidence", ec)) {
      // .ev: the weights; .owed: what a session finished for a verifier
      // owes its rater after a restart.
      BOOST_TEST((f.path().extension() == ".ev" || f.path().extension() == ".owed"),
                 f.path().string());
      n += f.path().extension() == ".ev" ? 1 : 0;
    }
    return n;
  };
  auto verified = [&](uint64_t steps) {
    auto o = tc.job({tc.nodes[0].id, tc.nodes[1].id}, 1, steps);
    o.verifier = tc.nodes[0].id;
    return o;
  };
  auto refused = train::run_job(*tc.c, verified(100));
  BOOST_REQUIRE(!refused);
  BOOST_TEST(why(refused).find("keep 2 MiB of evidence for the rater") != std::string::npos,
             why(refused));
  BOOST_TEST(why(refused).find("trainer_evidence_bytes (1 MiB)") != std::string::npos,
             why(refused));
  // 40 steps fit: every step's evidence is kept, one file per session.
  auto kept = train::run_job(*tc.c, verified(40));
  BOOST_REQUIRE_MESSAGE(kept, why(kept));
  BOOST_TEST(kept->steps == 40u);
  for (size_t h : {size_t{0}, size_t{1}})
    BOOST_TEST(evidence_files(h) >= 1u, "host " << h);
  // Unverified, nothing is kept and no bound applies.
  std::vector<size_t> before{evidence_files(0), evidence_files(1)};
  auto unverified = train::run_job(*tc.c, tc.job({tc.nodes[0].id, tc.nodes[1].id}, 1, 100));
  BOOST_REQUIRE_MESSAGE(unverified, why(unverified));
  BOOST_TEST(unverified->steps == 100u);
  for (size_t h : {size_t{0}, size_t{1}})
    BOOST_TEST(evidence_files(h) <= before[h], "host " << h);
}

BOOST_AUTO_TEST_CASE(joins_beyond_the_trainer_slots_or_that_fail_hold_nothing) {
  // An admitted client floods a trainer host with joins: those that fail
  // (data it cannot read) free everything at once, and no more than
  // trainer_slots (2) trainers ever run, whoever asks.
  train_cluster tc;
  auto host = tc.nodes[0].id;
  auto dst = tc.c->lookup("trainer@" + host.hex());
  BOOST_REQUIRE_MESSAGE(dst, why(dst));
  auto fresh = [] {
    std::array<uint8_t, 32> s;
    randombytes_buf(s.data(), s.size());
    return s;
  };
  auto token = fresh(); // this coordinator's capability for its sessions
  auto unsigned_join = [&](const std::array<uint8_t, 32>& session, const std::string& data) {
    return make_envelope<schema::TrainerJoin>([&](schema::TrainerJoin::Builder j) {
      j.setSession(kj::arrayPtr(session.data(), 32));
      j.setRank(0);
      j.setSize(1);
      j.setRight(kj::arrayPtr(host.bytes.data(), 32));
      j.setToken(kj::arrayPtr(token.data(), 32));
      auto c = j.initConfig();
      c.setModel("mlp:64-64-10");
      c.setSeed(1);
      c.setGlobalBatch(32);
      c.setLr(0.1f);
      c.setDataFile(data);
      c.setTestPercent(20);
      c.setTransport(train::transport::ACTOR);
    });
  };
  auto now_ms = [] {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
  };
  // This client is the host's operator's ([host] trainer_clients): its own
  // signed joins need no lease.
  auto join = [&](const std::array<uint8_t, 32>& session, const std::string& data) {
    auto j = unsigned_join(session, data);
    return sign_trainer_join(tc.c->self(), opened<schema::TrainerJoin>{j}.root(), now_ms());
  };
  // An admitted peer that holds no lease and is not the operator's client
  // gets no trainer slot, however it dresses its join up; nothing starts.
  {
    auto refused = [&](const char* what, envelope req, const char* expect) {
      auto r = tc.c->request(*dst, std::move(req), 20s);
      BOOST_REQUIRE_MESSAGE(!r, what << ": the join was taken");
      BOOST_TEST(describe(r.error()).find("TrainerJoin may be sent only by") != std::string::npos,
                 describe(r.error()));
      BOOST_TEST(describe(r.error()).find(expect) != std::string::npos,
                 what << ": " << describe(r.error()));
    };
    auto data = digits_csv().string();
    refused("neither lease nor signature", unsigned_join(fresh(), data), "no lease from an allocator");
    auto mallory = identity::generate();
    refused("signed by a client the operator does not list",
            sign_trainer_join(mallory, opened<schema::TrainerJoin>{unsigned_join(fresh(), data)}.root(),
                              now_ms()),
            "is not in this host's [host] trainer_clients");
    // The operator's signature over another join (a captured one, changed).
    auto signed_join = join(fresh(), data);
    capnp::MallocMessageBuilder mb;
    mb.setRoot(opened<schema::TrainerJoin>{signed_join}.root());
    mb.getRoot<schema::TrainerJoin>().getConfig().setLr(9.0f);
    refused("an operator's join, altered",
            copy_envelope<schema::TrainerJoin>(mb.getRoot<schema::TrainerJoin>().asReader()),
            "is not signed by client");
    refused("an operator's join dated an hour ago",
            sign_trainer_join(tc.c->self(),
                              opened<schema::TrainerJoin>{unsigned_join(fresh(), data)}.root(),
                              now_ms() - 3'600'000),
            "ms from this host's clock");
    // A lease signed by an "allocator" this host never offered to.
    auto rogue = identity::generate();
    auto leased = [&] {
      capnp::MallocMessageBuilder lb;
      auto l = lb.initRoot<schema::LeaseInfo>();
      auto job = fresh();
      l.setTrainer(kj::arrayPtr(host.bytes.data(), 32));
      l.setCount(2);
      l.setExpiresMs(now_ms() + 60'000);
      l.setJob(kj::arrayPtr(job.data(), 32));
      l.setAllocator(kj::arrayPtr(rogue.id().bytes.data(), 32));
      auto sig = rogue.sign(ledger::tagged_canonical("aicon-lease-v1", l.asReader()));
      l.setSignature(kj::arrayPtr(sig.data(), sig.size()));
      auto j = unsigned_join(fresh(), data);
      capnp::MallocMessageBuilder jb;
      jb.setRoot(opened<schema::TrainerJoin>{j}.root());
      auto jr = jb.getRoot<schema::TrainerJoin>();
      jr.getConfig().setJob(kj::arrayPtr(job.data(), 32));
      jr.setLease(l.asReader());
      return copy_envelope<schema::TrainerJoin>(jr.asReader());
    }();
    refused("a lease from an allocator the host does not offer to", leased,
            "to which this host does not offer its trainers");
  }

  auto threads = [&] {
    size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(
           fmt::format("/proc/{}/task", tc.hosts[0].proc->pid())))
      ++n;
    return n;
  };
  auto before = threads();
  for (int i = 0; i < 50; ++i) {
    auto r = tc.c->request(*dst, join(fresh(), digits_csv().parent_path() / "no-such-data.csv"),
                           20s);
    BOOST_REQUIRE(!r);
    if (i == 0)
      BOOST_TEST_MESSAGE("a failing join: " << describe(r.error()));
  }
  // A file outside the host's [host] data_files is refused before anything
  // reads it (no existence oracle, no content echoed).
  for (auto* probe : {"/etc/passwd", "/nonexistent/aicon-data.csv"}) {
    auto r = tc.c->request(*dst, join(fresh(), probe), 20s);
    BOOST_REQUIRE(!r);
    BOOST_TEST(describe(r.error()).find("reads local data files only under") != std::string::npos,
               describe(r.error()));
    BOOST_TEST(describe(r.error()).find("root:") == std::string::npos);
  }
  // Every failed join's thread is gone again (a few of CAF's own may come
  // and go).
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (threads() > before + 4 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(50ms);
  BOOST_TEST(threads() <= before + 4, before << " threads before, " << threads() << " after");
  // Two trainers run; a third is refused by name until one finishes.
  auto s1 = fresh(), s2 = fresh(), s3 = fresh();
  for (auto* s : {&s1, &s2}) {
    auto r = tc.c->request(*dst, join(*s, digits_csv().string()), 60s);
    BOOST_REQUIRE_MESSAGE(r, why(r));
  }
  auto third = tc.c->request(*dst, join(s3, digits_csv().string()), 60s);
  BOOST_REQUIRE(!third);
  BOOST_TEST(describe(third.error()).find("all 2 trainer slots of this host are busy")
               != std::string::npos,
             describe(third.error()));
  BOOST_TEST((code_of(third.error()) == errc::busy));
  auto ask = [&](const std::array<uint8_t, 32>& s, const std::array<uint8_t, 32>& with,
                 auto set) {
    return tc.c->request(*dst, make_envelope<schema::TrainQuery>([&](auto q) {
                           q.setSession(kj::arrayPtr(s.data(), 32));
                           q.setRank(0);
                           q.setToken(kj::arrayPtr(with.data(), 32));
                           set(q);
                         }),
                         20s);
  };
  auto finish = [&](const std::array<uint8_t, 32>& s) {
    return ask(s, token, [](auto q) { q.setFinish(); });
  };
  // Another admitted peer that knows the session and rank (they are not
  // secret) but not its token may not finish, drop or read that trainer,
  // nor take its place with a join of its own.
  auto thief = fresh();
  for (auto* what : {"finish", "drop", "checkpoint", "evidence", "digests", "progress", "stop",
                     "weightsDigest"}) {
    auto r = ask(s1, thief, [what](auto q) {
      std::string w = what;
      if (w == "finish")
        q.setFinish();
      else if (w == "drop")
        q.setDrop();
      else if (w == "checkpoint")
        q.setCheckpoint();
      else if (w == "evidence")
        q.setEvidence(0);
      else if (w == "progress")
        q.initProgress().setWaitMs(10'000);
      else if (w == "stop")
        q.setStop();
      else if (w == "weightsDigest")
        q.setWeightsDigest(0);
      else
        q.setDigests();
    });
    BOOST_REQUIRE_MESSAGE(!r, what << " without the token was answered");
    BOOST_TEST(describe(r.error()).find("not the session's token") != std::string::npos,
               describe(r.error()));
    BOOST_TEST((code_of(r.error()) == errc::forbidden));
  }
  // Its coordinator's poll with no run going says so, and the digest of a
  // step it never logged is refused by name.
  {
    auto polled = ask(s1, token, [](auto q) { q.initProgress().setWaitMs(10'000); });
    BOOST_REQUIRE_MESSAGE(polled, why(polled));
    opened<schema::TrainProgress> tp{*polled};
    BOOST_REQUIRE(tp);
    BOOST_TEST(!tp->getRunning());
    BOOST_TEST(tp->getLossSums().size() == 0u);
    auto unlogged = ask(s1, token, [](auto q) { q.setWeightsDigest(12345); });
    BOOST_REQUIRE(!unlogged);
    BOOST_TEST(describe(unlogged.error()).find("no evidence of step 12345") != std::string::npos,
               describe(unlogged.error()));
    BOOST_TEST((code_of(unlogged.error()) == errc::not_found));
  }
  // Nor steer it, nor feed its ring chunks (RingChunk travels between the
  // ring's members, who hold the token).
  {
    auto refused = [&](const char* what, envelope req) {
      auto r = tc.c->request(*dst, std::move(req), 20s);
      BOOST_REQUIRE_MESSAGE(!r, what << " without the token was answered");
      BOOST_TEST(describe(r.error()).find(std::string{what} + " may be sent only by")
                   != std::string::npos,
                 describe(r.error()));
      BOOST_TEST((code_of(r.error()) == errc::forbidden));
    };
    refused("TrainStep", make_envelope<schema::TrainStep>([&](auto q) {
              q.setSession(kj::arrayPtr(s1.data(), 32));
              q.setToken(kj::arrayPtr(thief.data(), 32));
            }));
    refused("RingLink", make_envelope<schema::RingLink>([&](auto q) {
              q.setSession(kj::arrayPtr(s1.data(), 32));
              q.setToken(kj::arrayPtr(thief.data(), 32));
            }));
    refused("RingRun", make_envelope<schema::RingRun>([&](auto q) {
              q.setSession(kj::arrayPtr(s1.data(), 32));
              q.setToken(kj::arrayPtr(thief.data(), 32));
            }));
    refused("RingChunk", make_envelope<schema::RingChunk>([&](auto q) {
              q.setRing(kj::arrayPtr(s1.data(), 32));
              q.setToken(kj::arrayPtr(thief.data(), 32));
              q.setCollective(1);
            }));
  }
  {
    auto mine = token;
    token = thief;
    auto replaced = tc.c->request(*dst, join(s1, digits_csv().string()), 60s);
    token = mine;
    BOOST_REQUIRE(!replaced);
    BOOST_TEST(describe(replaced.error()).find("runs here for another coordinator")
                 != std::string::npos,
               describe(replaced.error()));
  }
  // Its coordinator's run of too many steps at once is refused by name
  // (the refusal reached nobody once, and the request timed out).
  {
    auto too_many = tc.c->request(*dst, make_envelope<schema::TrainStep>([&](auto q) {
                                    q.setSession(kj::arrayPtr(s1.data(), 32));
                                    q.setToken(kj::arrayPtr(token.data(), 32));
                                    q.setCount(10'000'001);
                                  }),
                                  20s);
    BOOST_REQUIRE(!too_many);
    BOOST_TEST(describe(too_many.error()).find("at most 10000000 steps at once") != std::string::npos,
               describe(too_many.error()));
    BOOST_TEST((code_of(too_many.error()) == errc::invalid_argument));
  }
  // The coordinator's own requests still work: the trainer is still there.
  auto checkpoint = ask(s1, token, [](auto q) { q.setCheckpoint(); });
  BOOST_TEST(static_cast<bool>(checkpoint), (checkpoint ? std::string{} : describe(checkpoint.error())));
  BOOST_REQUIRE(finish(s1));
  auto now_free = tc.c->request(*dst, join(s3, digits_csv().string()), 60s);
  BOOST_TEST(static_cast<bool>(now_free), (now_free ? std::string{} : describe(now_free.error())));
  // A finished trainer keeps its log and evidence an hour, or as long as
  // its coordinator asks (keepMs: a ring a job left is rated at the job's
  // end); then it is gone.
  finish(s2);
  auto kept_from = std::chrono::steady_clock::now(); // the finish comes after this
  BOOST_REQUIRE(ask(s3, token, [](auto q) {
    q.setFinish();
    q.setKeepMs(1000);
  }));
  BOOST_TEST(static_cast<bool>(ask(s3, token, [](auto q) { q.setDigests(); })));
  bool expired = false;
  while (!expired && std::chrono::steady_clock::now() - kept_from < 10s) {
    expired = !ask(s3, token, [](auto q) { q.setDigests(); });
    if (!expired)
      std::this_thread::sleep_for(50ms);
  }
  BOOST_TEST(expired, "kept more than 10 s past its keepMs of 1 s");
  BOOST_TEST((std::chrono::steady_clock::now() - kept_from >= 1s), "dropped before its keepMs");
  BOOST_TEST(static_cast<bool>(ask(s2, token, [](auto q) { q.setDigests(); })),
             "the default hour was cut short");
  // Finished sessions are bounded in count (4 per trainer slot, here 8):
  // beyond, the one soonest to expire goes first, so a ring kept for a
  // day (a ring a job left, rated at the job's end) outlives sessions
  // finished after it with the default hour.
  auto kept = fresh();
  BOOST_REQUIRE(tc.c->request(*dst, join(kept, digits_csv().string()), 60s));
  BOOST_REQUIRE(ask(kept, token, [](auto q) {
    q.setFinish();
    q.setKeepMs(24ull * 3600 * 1000);
  }));
  for (int i = 0; i < 8; ++i) {
    auto later = fresh();
    BOOST_REQUIRE(tc.c->request(*dst, join(later, digits_csv().string()), 60s));
    BOOST_REQUIRE(finish(later));
  }
  BOOST_TEST(static_cast<bool>(ask(kept, token, [](auto q) { q.setDigests(); })),
             "the kept ring was dropped before sessions that expire sooner");
  BOOST_TEST(!ask(s2, token, [](auto q) { q.setDigests(); }),
             "more finished sessions than the bound are kept");
  // A session finished for a verifier owes its evidence to that rater for
  // at least an hour: its coordinator cannot cut that short, drop it or
  // replace it (else it could have the rater fail honest trainers for
  // evidence gone), and a flood of later sessions never pushes it out.
  auto run_steps = [&](const std::array<uint8_t, 32>& session, bool unverified) {
    return tc.c->request(*dst, make_envelope<schema::TrainStep>([&](auto q) {
                           q.setSession(kj::arrayPtr(session.data(), 32));
                           q.setToken(kj::arrayPtr(token.data(), 32));
                           q.setCount(3);
                           q.setUnverified(unverified);
                         }),
                         60s);
  };
  auto owed = fresh();
  BOOST_REQUIRE(tc.c->request(*dst, join(owed, digits_csv().string()), 60s));
  auto stepped = run_steps(owed, false);
  BOOST_REQUIRE_MESSAGE(stepped, why(stepped));
  // A later run continues the log: one that skips ahead (or goes back) is
  // refused, or the rater would challenge steps by places that name others.
  auto skipped = tc.c->request(*dst, make_envelope<schema::TrainStep>([&](auto q) {
                                 q.setSession(kj::arrayPtr(owed.data(), 32));
                                 q.setToken(kj::arrayPtr(token.data(), 32));
                                 q.setStep(10);
                                 q.setCount(2);
                               }),
                               20s);
  BOOST_REQUIRE(!skipped);
  BOOST_TEST(describe(skipped.error()).find("TrainStep.step: 10 is not this trainer's next step (3")
               != std::string::npos,
             describe(skipped.error()));
  // Nor may it put a step elsewhere in the epochs than the schedule (the
  // rater re-executes each step at the schedule's place).
  auto elsewhere = tc.c->request(*dst, make_envelope<schema::TrainStep>([&](auto q) {
                                   q.setSession(kj::arrayPtr(owed.data(), 32));
                                   q.setToken(kj::arrayPtr(token.data(), 32));
                                   q.setStep(3);
                                   q.setCursor(64);
                                   q.setCount(2);
                                 }),
                                 20s);
  BOOST_REQUIRE(!elsewhere);
  BOOST_TEST(describe(elsewhere.error()).find("TrainStep: step 3 is at epoch 0 cursor 96 of the "
                                              "schedule")
               != std::string::npos,
             describe(elsewhere.error()));
  auto rater = fresh();
  auto signed_for = ask(owed, token, [&](auto q) {
    q.setFinish();
    q.setVerifier(kj::arrayPtr(rater.data(), 32));
    q.setKeepMs(1); // below the hour a verifier is owed: the hour holds
  });
  BOOST_REQUIRE_MESSAGE(signed_for, why(signed_for));
  BOOST_REQUIRE(opened<schema::SessionLog>{*signed_for}->hasReceipt());
  BOOST_TEST(static_cast<bool>(ask(owed, token, [](auto q) { q.setDigests(); })));
  // It answers its rater from the files it wrote down and holds no model or
  // data any more: evidence yes, a checkpoint or an evaluation no.
  auto shown = ask(owed, token, [](auto q) { q.setEvidence(1); });
  BOOST_REQUIRE_MESSAGE(shown, why(shown));
  BOOST_TEST(opened<schema::StepEvidence>{*shown}->getWeights().size() > 0u);
  for (auto gone : {schema::TrainQuery::CHECKPOINT, schema::TrainQuery::EVALUATE}) {
    auto refused = ask(owed, token, [gone](auto q) {
      if (gone == schema::TrainQuery::CHECKPOINT)
        q.setCheckpoint();
      else
        q.setEvaluate();
    });
    BOOST_REQUIRE(!refused);
    BOOST_TEST(describe(refused.error()).find("finished for a verifier: only its evidence is kept")
                 != std::string::npos,
               describe(refused.error()));
  }
  // Its drop is refused, saying how long it is kept: the hour a verifier
  // is owed, not the 1 ms asked.
  auto kept_seconds = [&] {
    auto not_dropped = ask(owed, token, [](auto q) { q.setDrop(); });
    BOOST_REQUIRE(!not_dropped);
    BOOST_TEST((code_of(not_dropped.error()) == errc::forbidden));
    auto refusal = describe(not_dropped.error());
    auto more = refusal.find("keeps its evidence for that rater ");
    BOOST_REQUIRE_MESSAGE(more != std::string::npos, refusal);
    return std::stoll(refusal.substr(more + 34));
  };
  auto hour_left = kept_seconds();
  BOOST_TEST(hour_left > 3500);
  BOOST_TEST(hour_left <= 3600);
  // A finish asked again gets the same signed log, kept as long as it asks
  // (two hours here, read from a drop's refusal below); for another
  // verifier, none, and the session stays owed.
  auto again = ask(owed, token, [&](auto q) {
    q.setFinish();
    q.setVerifier(kj::arrayPtr(rater.data(), 32));
    q.setKeepMs(2 * 3600 * 1000);
  });
  BOOST_REQUIRE_MESSAGE(again, why(again));
  BOOST_TEST((opened<schema::SessionLog>{*again}->getLogRoot()
              == opened<schema::SessionLog>{*signed_for}->getLogRoot()));
  auto other_rater = fresh();
  auto other = ask(owed, token, [&](auto q) {
    q.setFinish();
    q.setVerifier(kj::arrayPtr(other_rater.data(), 32));
  });
  BOOST_REQUIRE(!other);
  BOOST_TEST(describe(other.error()).find("already finished for another verifier")
               != std::string::npos,
             describe(other.error()));
  auto two_hours_left = kept_seconds();
  BOOST_TEST(two_hours_left > 7100);
  BOOST_TEST(two_hours_left <= 7200);
  // Nor does a join of the same session and rank replace it.
  auto rejoined = tc.c->request(*dst, join(owed, digits_csv().string()), 60s);
  BOOST_REQUIRE(!rejoined);
  BOOST_TEST(describe(rejoined.error()).find("it is not replaced") != std::string::npos,
             describe(rejoined.error()));
  // A finish for a verifier of a session with no step owes nothing (it
  // signs no receipt): it can be dropped.
  auto empty = fresh();
  BOOST_REQUIRE(tc.c->request(*dst, join(empty, digits_csv().string()), 60s));
  BOOST_REQUIRE(ask(empty, token, [&](auto q) {
    q.setFinish();
    q.setVerifier(kj::arrayPtr(rater.data(), 32));
  }));
  BOOST_TEST(static_cast<bool>(ask(empty, token, [](auto q) { q.setDrop(); })));
  for (int i = 0; i < 8; ++i) {
    auto later = fresh();
    BOOST_REQUIRE(tc.c->request(*dst, join(later, digits_csv().string()), 60s));
    BOOST_REQUIRE(ask(later, token, [](auto q) {
      q.setFinish();
      q.setKeepMs(48ull * 3600 * 1000); // outlives the owed session's hour: still goes first
    }));
  }
  BOOST_TEST(static_cast<bool>(ask(owed, token, [](auto q) { q.setDigests(); })),
             "a session owed to its rater was pushed out by sessions owed nothing");
  // A run that kept no evidence (unverified) signs no receipt for a
  // verifier: its rater would fail every step.
  auto loose = fresh();
  BOOST_REQUIRE(tc.c->request(*dst, join(loose, digits_csv().string()), 60s));
  auto ran = run_steps(loose, true);
  BOOST_REQUIRE_MESSAGE(ran, why(ran));
  auto unowed = ask(loose, token, [&](auto q) {
    q.setFinish();
    q.setVerifier(kj::arrayPtr(rater.data(), 32));
  });
  BOOST_REQUIRE(!unowed);
  BOOST_TEST(describe(unowed.error()).find("runs were unverified") != std::string::npos,
             describe(unowed.error()));
  BOOST_TEST(static_cast<bool>(finish(loose)), "the same session finished for no verifier");
  // Sessions owed to raters in their first hour are never evicted: past 16
  // per trainer slot (32 here), a join waits `busy` and is told when to
  // retry, and every owed session still answers.
  std::vector<std::array<uint8_t, 32>> owing{owed};
  caf::expected<envelope> full = envelope{};
  for (int i = 0; i < 40 && full; ++i) {
    auto s = fresh();
    full = tc.c->request(*dst, join(s, digits_csv().string()), 60s);
    if (!full)
      break;
    auto ran = run_steps(s, false);
    BOOST_REQUIRE_MESSAGE(ran, why(ran));
    BOOST_REQUIRE(ask(s, token, [&](auto q) {
      q.setFinish();
      q.setVerifier(kj::arrayPtr(rater.data(), 32));
    }));
    owing.push_back(s);
  }
  BOOST_REQUIRE_MESSAGE(!full, "40 more sessions owed to raters were all taken");
  BOOST_TEST((code_of(full.error()) == errc::busy));
  BOOST_TEST(describe(full.error()).find("keeps the evidence of 32 finished sessions for their "
                                         "raters (at most 16 per trainer slot); retry in ")
               != std::string::npos,
             describe(full.error()));
  BOOST_TEST_MESSAGE("sessions owed to raters when the host said busy: " << owing.size());
  BOOST_TEST(owing.size() == 32u);
  for (auto& s : owing)
    BOOST_TEST(static_cast<bool>(ask(s, token, [](auto q) { q.setDigests(); })));
}

BOOST_AUTO_TEST_CASE(the_nccl_transport_needs_a_gpu_and_matches_the_ring) {
  train_cluster tc;
  auto o = tc.job({tc.nodes[0].id}, 1, 20);
  o.transport = train::transport::NCCL;
  auto r = train::run_job(*tc.c, o);
  auto report = gpu::query_devices();
  if (report.devices.empty()) {
    BOOST_REQUIRE(!r);
    BOOST_TEST_MESSAGE("nccl job refused: " << what_of(r.error()));
    BOOST_TEST(what_of(r.error()).find("no usable GPU") != std::string::npos);
    BOOST_TEST_MESSAGE("GPU part skipped: " << report.status);
    return;
  }
  BOOST_REQUIRE_MESSAGE(r, why(r));
  auto ring = train::run_job(*tc.c, tc.job({tc.nodes[0].id}, 1, 20));
  BOOST_REQUIRE_MESSAGE(ring, why(ring));
  BOOST_TEST((params_of(r->checkpoint) == params_of(ring->checkpoint)));
}

BOOST_AUTO_TEST_CASE(a_trainer_host_killed_mid_job_is_survived) {
  train_cluster tc{true};
  auto o = tc.job({tc.nodes[0].id, tc.nodes[1].id}, 2, 1500);
  o.spare_hosts = {tc.nodes[2].id};
  o.checkpoint_every = 25;
  std::atomic<uint64_t> last_step{0};
  std::thread killer([&] {
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (last_step < 200 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(5ms);
    tc.hosts[1].proc->stop(SIGKILL, 5s);
  });
  auto r = train::run_job(*tc.c, o, [&](const train::step_report& s) { last_step = s.step; });
  killer.join();
  BOOST_REQUIRE_MESSAGE(r, why(r));
  for (auto& e : r->events)
    BOOST_TEST_MESSAGE(e);
  BOOST_TEST(r->reforms == 1u);
  BOOST_TEST(r->steps == 1500u);
  // The spare took the lost host's place: still 4 trainers on 2 hosts.
  BOOST_TEST(r->logs.size() == 4u);
  bool replaced = false;
  for (auto& e : r->events)
    replaced |= e.find("spare host " + tc.nodes[2].id.short_hex()) != std::string::npos;
  BOOST_TEST(replaced);
  BOOST_TEST_MESSAGE("held-out accuracy after losing a host " << r->accuracy);
  BOOST_TEST(r->accuracy >= 0.95);
}

BOOST_AUTO_TEST_CASE(aicon_train_hands_its_job_to_a_job_host_that_outlives_it) {
  // a, b and the spare s run the job role too: `aicon train --connect a,b`
  // submits to a's, naming a and b (and s as the spare) in the spec.
  train_cluster tc{true, ", \"job\"", true};
  auto addr = [&](size_t i) { return fmt::format("127.0.0.1:{}", tc.ports[i]); };
  auto job_status = [&](const std::string& id) {
    auto dst = tc.c->lookup("job@" + tc.nodes[0].id.hex());
    BOOST_REQUIRE_MESSAGE(dst, why(dst));
    auto r = tc.c->request(*dst, make_envelope<schema::JobQuery>([&](auto q) {
                             auto bytes = id_bytes(id);
                             q.setStatus(kj::arrayPtr(bytes.data(), 32));
                           }),
                           10s);
    BOOST_REQUIRE_MESSAGE(r, why(r));
    return *r;
  };
  process train({aicon_binary(), "train", "--data", digits_csv().string(), "--connect",
                 addr(0) + "," + addr(1), "--spare", addr(2), "--steps", "20000",
                 "--checkpoint-every", "50", "--ring-timeout-ms", "2000", "--data-dir",
                 tc.cli.dir.string()},
                tc.root / "train.log");
  auto line = train.wait_for_log(" runs on job host ", 60s);
  BOOST_REQUIRE_MESSAGE(line, train.log_text());
  auto id = line->substr(line->find("job ") + 4, 64);
  auto deadline = std::chrono::steady_clock::now() + 60s;
  uint64_t step = 0;
  while (step < 300 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
    step = opened<schema::JobInfo>{job_status(id)}->getStep();
  }
  BOOST_REQUIRE_MESSAGE(step >= 300, "the job did not reach step 300 within 60 s");
  // The client goes, then trainer host b: the job host goes on, with the
  // spare the spec names in b's place.
  BOOST_TEST(train.stop(SIGKILL, 10s) == 128 + SIGKILL);
  BOOST_TEST(tc.hosts[1].proc->stop(SIGKILL, 10s) == 128 + SIGKILL);
  auto wait = run_command({aicon_binary(), "job", "wait", id, "--timeout", "120", "--connect",
                           addr(0), "--data-dir", tc.cli.dir.string()},
                          150s);
  BOOST_REQUIRE_MESSAGE(wait.exit_code == 0, wait.output);
  BOOST_TEST(wait.output.find("progress  step 20000/20000") != std::string::npos, wait.output);
  auto acc_at = wait.output.find("accuracy  ");
  BOOST_REQUIRE(acc_at != std::string::npos);
  BOOST_TEST(std::stod(wait.output.substr(acc_at + 10)) >= 0.95, wait.output);
  auto logs = run_command({aicon_binary(), "job", "logs", id, "--connect", addr(0), "--data-dir",
                           tc.cli.dir.string()});
  BOOST_TEST(logs.output.find("ring of 2 trainers on 2 hosts") != std::string::npos, logs.output);
  BOOST_TEST(logs.output.find("spare host " + tc.nodes[2].id.short_hex()) != std::string::npos,
             logs.output);
  BOOST_TEST(logs.output.find("work log rank 1: ") != std::string::npos, logs.output);

  // Followed to its end, with its checkpoint written here.
  auto cp = tc.root / "job.ckpt";
  auto followed = run_command({aicon_binary(), "train", "--data", digits_csv().string(),
                               "--connect", addr(0), "--steps", "120", "--weight-decay", "0",
                               "--checkpoint", cp.string(), "--data-dir", tc.cli.dir.string()},
                              120s);
  BOOST_REQUIRE_MESSAGE(followed.exit_code == 0, followed.output);
  BOOST_TEST(followed.output.find(" runs on job host ") != std::string::npos, followed.output);
  BOOST_TEST(followed.output.find("ring of 1 trainers on 1 hosts") != std::string::npos,
             followed.output);
  BOOST_TEST(followed.output.find("trained 120 steps") != std::string::npos, followed.output);
  auto saved = train::load_checkpoint(cp);
  BOOST_REQUIRE_MESSAGE(saved, why(saved));
  BOOST_TEST(saved->step == 120u);

  // --local: coordinated by the command itself, as before job hosts.
  auto local = run_command({aicon_binary(), "train", "--local", "--data", digits_csv().string(),
                            "--connect", addr(0), "--steps", "60", "--data-dir",
                            tc.cli.dir.string()},
                           120s);
  BOOST_REQUIRE_MESSAGE(local.exit_code == 0, local.output);
  BOOST_TEST(local.output.find(" runs on job host ") == std::string::npos, local.output);
  BOOST_TEST(local.output.find("trained 60 steps") != std::string::npos, local.output);
  BOOST_TEST(local.output.find("work log rank 0: 60 steps") != std::string::npos, local.output);
}

// A job host the trainer hosts do not list in their trainer_clients (only
// the client): its job fails at the joins, and `aicon train` coordinates
// the job itself, saying why.
BOOST_AUTO_TEST_CASE(aicon_train_coordinates_itself_where_the_trainers_refuse_the_job_host) {
  train_cluster tc{false, ", \"job\""};
  auto out = run_command({aicon_binary(), "train", "--data", digits_csv().string(), "--connect",
                          fmt::format("127.0.0.1:{},127.0.0.1:{}", tc.ports[0], tc.ports[1]),
                          "--steps", "50", "--data-dir", tc.cli.dir.string()},
                         120s);
  BOOST_REQUIRE_MESSAGE(out.exit_code == 0, out.output);
  BOOST_TEST(out.output.find("do not take joins from job host") != std::string::npos, out.output);
  BOOST_TEST(out.output.find("trained 50 steps") != std::string::npos, out.output);
  BOOST_TEST(out.output.find("work log rank 1: 50 steps") != std::string::npos, out.output);
}

// A data node whose operator lists whose models its hosts run ([host]
// model_owners) keeps only theirs: another owner's put is refused by name
// and nothing is stored (owner keys cost nothing: the per-owner quota alone
// let one admitted peer fill the node with many owners' models).
BOOST_AUTO_TEST_CASE(a_data_node_keeps_only_the_models_of_the_owners_it_lists) {
  auto listed = identity::generate();
  train_cluster tc(false, ", \"data_node\"", false,
                   fmt::format("model_owners = [\"{}\"]\n", listed.id().hex()));
  auto dst = tc.c->lookup("data_node@" + tc.nodes[0].id.hex());
  BOOST_REQUIRE_MESSAGE(dst, why(dst));
  std::vector<uint8_t> file(4096, 7);
  auto refused = tc.c->request(*dst, data::make_model_put(tc.c->self(), file, "m.pt", 1), 20s);
  BOOST_REQUIRE(!refused);
  BOOST_TEST((code_of(refused.error()) == errc::forbidden));
  BOOST_TEST(describe(refused.error()).find("owner " + tc.cli.id.short_hex()
                                            + " is not one whose models this host keeps")
               != std::string::npos,
             describe(refused.error()));
  test::temp_dir cache;
  auto id = data::model_asset_id(tc.cli.id, data::model_hash(file));
  auto absent = data::fetch_model(*tc.c, {tc.nodes[0].id}, id, cache.path(), 32 << 20, {});
  BOOST_REQUIRE(!absent);
  BOOST_TEST(describe(absent.error()).find("not on this data node") != std::string::npos,
             describe(absent.error()));
  // A listed owner's model is kept, whoever sends it.
  auto taken = tc.c->request(*dst, data::make_model_put(listed, file, "m.pt", 1), 20s);
  BOOST_TEST(static_cast<bool>(taken), why(taken));
}

BOOST_AUTO_TEST_SUITE_END()

// Researchers' TorchScript models through the same ring, transports and
// checkpoints as the built-ins (its own ctest entry: it reports itself
// skipped where the build has no libtorch or /usr/bin/python3 no torch).
BOOST_AUTO_TEST_SUITE(torch_training)

BOOST_AUTO_TEST_CASE(a_torchscript_cnn_trains_data_parallel_like_the_built_ins) {
  if (torch_skipped())
    return;
  train_cluster tc;
  auto models = tc.root / "models";
  if (!make_torch_models(models))
    return;
  auto job = [&](std::vector<node_id> hosts, uint32_t per_host, uint64_t steps) {
    auto o = tc.job(std::move(hosts), per_host, steps);
    o.model = "torch:" + (models / "digits_cnn.pt").string();
    return o;
  };
  // 4 trainers on 2 hosts against 1, 50 steps: the same weights within 1e-5.
  auto ring = train::run_job(*tc.c, job({tc.nodes[0].id, tc.nodes[1].id}, 2, 50));
  BOOST_REQUIRE_MESSAGE(ring, why(ring));
  auto single = train::run_job(*tc.c, job({tc.nodes[0].id}, 1, 50));
  BOOST_REQUIRE_MESSAGE(single, why(single));
  double rel = relative_difference(ring->checkpoint, single->checkpoint);
  BOOST_TEST_MESSAGE("TorchScript CNN, 4 trainers vs 1 after 50 steps: relative difference " << rel);
  BOOST_TEST(rel <= 1e-5);
  // The same with AdamW: every rank's moments follow the same reduced
  // gradient, so 4 trainers still match 1.
  auto adamw = [&](std::vector<node_id> hosts, uint32_t per_host) {
    auto o = job(std::move(hosts), per_host, 50);
    o.optimizer = "adamw";
    o.lr = 0.003f;
    return o;
  };
  auto ring_adamw = train::run_job(*tc.c, adamw({tc.nodes[0].id, tc.nodes[1].id}, 2));
  BOOST_REQUIRE_MESSAGE(ring_adamw, why(ring_adamw));
  auto single_adamw = train::run_job(*tc.c, adamw({tc.nodes[0].id}, 1));
  BOOST_REQUIRE_MESSAGE(single_adamw, why(single_adamw));
  double rel_adamw = relative_difference(ring_adamw->checkpoint, single_adamw->checkpoint);
  BOOST_TEST_MESSAGE("TorchScript CNN with AdamW, 4 vs 1 after 50 steps: relative difference "
                     << rel_adamw);
  BOOST_TEST(rel_adamw <= 1e-5);
  BOOST_TEST((params_of(ring_adamw->checkpoint) != params_of(ring->checkpoint))); // other optimizer, other weights
  // Held-out accuracy of 4 trainers on 2 hosts.
  auto trained = train::run_job(*tc.c, job({tc.nodes[0].id, tc.nodes[1].id}, 2, 600));
  BOOST_REQUIRE_MESSAGE(trained, why(trained));
  BOOST_TEST_MESSAGE("TorchScript CNN held-out accuracy " << trained->accuracy);
  BOOST_TEST(trained->accuracy >= 0.97);
  // The trained weights back as TorchScript (aicon model export): Python's
  // torch.jit.load predicts exactly what aicon's own model predicts.
  auto ckpt = tc.root / "trained.ckpt";
  {
    auto c = train::parse_checkpoint(trained->checkpoint, "trained");
    BOOST_REQUIRE_MESSAGE(c, why(c));
    BOOST_REQUIRE(!train::save_checkpoint(ckpt, *c));
  }
  auto pt = tc.root / "trained.pt";
  auto spec_text = "torch:" + (models / "digits_cnn.pt").string();
  auto exported = run_command({aicon_binary(), "model", "export", "--model", spec_text,
                               "--checkpoint", ckpt.string(), "--out", pt.string()});
  BOOST_REQUIRE_MESSAGE(exported.exit_code == 0, exported.output);
  // Bad inputs to the export: a built-in spec, models breaking the
  // contract; each named, nothing written.
  auto bad_out = tc.root / "bad.pt";
  for (auto [model, words] : std::vector<std::pair<std::string, std::string>>{
         {"mlp:64-64-10", "--model must be torch:FILE"},
         {"torch:" + (models / "dropout.pt").string(), "aten::dropout"},
         {"torch:" + (models / "bad_output.pt").string(), "not float32[2, C]"}}) {
    auto r = run_command({aicon_binary(), "model", "export", "--model", model, "--checkpoint",
                          ckpt.string(), "--out", bad_out.string()});
    BOOST_TEST(r.exit_code == 1, r.output);
    BOOST_TEST(r.output.find(words) != std::string::npos, r.output);
  }
  BOOST_TEST(!std::filesystem::exists(bad_out));
  auto spec = train::parse_spec(spec_text);
  BOOST_REQUIRE(spec && !train::load_torch(*spec));
  auto mine = train::model::from_params(*spec, params_of(trained->checkpoint));
  BOOST_REQUIRE_MESSAGE(mine, why(mine));
  python_predicts_as(*mine, pt, tc.root.path(), 200, 11);
  // BatchNorm, 4 trainers on 2 hosts: each rank normalizes with its own
  // shard and the ring averages the running statistics' moves (the buffer
  // rule of torch_model.hpp), so the counter moved once per step and the
  // held-out accuracy, in eval mode with the running statistics, is high.
  auto bn = job({tc.nodes[0].id, tc.nodes[1].id}, 2, 400);
  bn.model = "torch:" + (models / "batchnorm.pt").string();
  auto bn_trained = train::run_job(*tc.c, bn);
  BOOST_REQUIRE_MESSAGE(bn_trained, why(bn_trained));
  BOOST_TEST_MESSAGE("TorchScript BatchNorm model, 4 trainers, held-out accuracy " << bn_trained->accuracy);
  BOOST_TEST(bn_trained->accuracy >= 0.95);
  auto bn_params = params_of(bn_trained->checkpoint);
  BOOST_REQUIRE(!bn_params.empty());
  BOOST_TEST(bn_params.back() == 400.0f); // num_batches_tracked, the last buffer
  // A model file outside the hosts' data_files is refused before it is read.
  auto outside = job({tc.nodes[0].id}, 1, 5);
  outside.model = "torch:/etc/passwd";
  auto refused = train::run_job(*tc.c, outside);
  BOOST_REQUIRE(!refused);
  BOOST_TEST(describe(refused.error()).find("data_files") != std::string::npos,
             describe(refused.error()));
  // And one that breaks the contract is refused by name.
  auto broken = job({tc.nodes[0].id}, 1, 5);
  broken.model = "torch:" + (models / "dropout.pt").string();
  auto r = train::run_job(*tc.c, broken);
  BOOST_REQUIRE(!r);
  BOOST_TEST(describe(r.error()).find("aten::dropout") != std::string::npos, describe(r.error()));
  // Regression (one output column): diabetes' float targets, 4 trainers on
  // 2 hosts, the held-out R^2 reported instead of an accuracy; from the
  // command line too.
  auto diabetes = (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/diabetes.csv.gz").string();
  auto reg = job({tc.nodes[0].id, tc.nodes[1].id}, 2, 600);
  reg.model = "torch:" + (models / "diabetes_mlp.pt").string();
  reg.data_file = diabetes;
  reg.optimizer = "adamw";
  reg.lr = 0.01f;
  reg.weight_decay = 0;
  auto fitted = train::run_job(*tc.c, reg);
  BOOST_REQUIRE_MESSAGE(fitted, why(fitted));
  BOOST_TEST(fitted->regression);
  BOOST_TEST_MESSAGE("diabetes, 4 trainers on 2 hosts: " << train::describe_metrics(*fitted));
  BOOST_TEST(fitted->r2 >= 0.35);
  auto cli = run_command({aicon_binary(), "train", "--model", reg.model, "--data", diabetes,
                          "--optimizer", "adamw", "--lr", "0.01", "--weight-decay", "0",
                          "--steps", "300", "--connect",
                          fmt::format("127.0.0.1:{}", tc.ports[0]), "--data-dir",
                          tc.cli.dir.string()},
                         120s);
  BOOST_TEST(cli.exit_code == 0, cli.output);
  BOOST_TEST(cli.output.find("held-out R^2 ") != std::string::npos, cli.output);
  // A regression model on a dataset of the data nodes (class labels only)
  // or a classifier-shaped file mismatch is refused by name.
  auto on_digits = job({tc.nodes[0].id}, 1, 5);
  on_digits.model = reg.model;
  auto mismatch = train::run_job(*tc.c, on_digits);
  BOOST_REQUIRE(!mismatch);
  BOOST_TEST(describe(mismatch.error()).find("does not fit 64 features") != std::string::npos,
             describe(mismatch.error()));
}

// [host] torch_cpu_capability pins libtorch's CPU kernels on a host: its
// trainers' work logs say so (the environment a rater must match for the
// exact check).
BOOST_AUTO_TEST_CASE(a_host_pins_the_cpu_kernels_its_torch_steps_run_on) {
  if (torch_skipped())
    return;
  train_cluster tc(false, "", false, "torch_cpu_capability = \"default\"\n");
  auto models = tc.root / "models";
  if (!make_torch_models(models))
    return;
  BOOST_TEST(tc.hosts[0].proc->log_text().find("torch models run on the 'default' CPU kernels")
               != std::string::npos,
             tc.hosts[0].proc->log_text());
  auto o = tc.job({tc.nodes[0].id}, 1, 5);
  o.model = "torch:" + (models / "digits_cnn.pt").string();
  auto r = train::run_job(*tc.c, o);
  BOOST_REQUIRE_MESSAGE(r, why(r));
  BOOST_REQUIRE_EQUAL(r->logs.size(), 1u);
  opened<schema::SessionLog> log{r->logs[0]};
  BOOST_REQUIRE(log.ok());
  std::string env = log->getEnvironment().cStr();
  BOOST_TEST(env.find("cpu capability default") != std::string::npos, env);
}

// Models as assets: `aicon model put` stores the file on the data nodes
// under its BLAKE2b hash, replicated; a job names it torch:<id> and every
// trainer fetches it and checks it against the id (a tampered cached copy
// is fetched again); a tampered upload and an unknown id are refused.
BOOST_AUTO_TEST_CASE(a_model_put_on_the_data_nodes_trains_by_its_id) {
  if (torch_skipped())
    return;
  train_cluster tc(false, ", \"data_node\"");
  auto models = tc.root / "models";
  if (!make_torch_models(models))
    return;
  auto cnn = models / "digits_cnn.pt";
  std::vector<uint8_t> bytes;
  {
    std::ifstream f{cnn, std::ios::binary};
    bytes.assign(std::istreambuf_iterator<char>{f}, std::istreambuf_iterator<char>{});
  }
  auto id = data::model_asset_id(tc.cli.id, data::model_hash(bytes)); // bound to its owner
  auto hex = to_hex({id.data(), 32});
  auto put = run_command({aicon_binary(), "model", "put", cnn.string(), "--data-dir",
                          tc.cli.dir.string(), "--connect", fmt::format("127.0.0.1:{}", tc.ports[0]),
                          "--replicas", "2", "--no-register"});
  BOOST_REQUIRE_MESSAGE(put.exit_code == 0, put.output);
  BOOST_TEST(put.output.find("model " + hex) != std::string::npos, put.output);
  BOOST_TEST(put.output.find("stored on 2 of 2") != std::string::npos, put.output);
  for (auto& h : tc.hosts)
    BOOST_TEST(h.proc->wait_for_log("model " + hex.substr(0, 8), 10s).has_value(), h.proc->log_text());
  // A file that is not TorchScript is refused before it is sent.
  auto junk = write_file(tc.root.path(), "junk.pt", "not a model");
  auto refused = run_command({aicon_binary(), "model", "put", junk.string(), "--data-dir",
                              tc.cli.dir.string(), "--connect",
                              fmt::format("127.0.0.1:{}", tc.ports[0]), "--no-register"});
  BOOST_TEST(refused.exit_code == 1, refused.output);
  BOOST_TEST(refused.output.find("TorchScript") != std::string::npos, refused.output);
  // The same job by id and by path: the same file, the same weights.
  auto job = [&](std::vector<node_id> hosts, uint32_t per_host, const std::string& model) {
    auto o = tc.job(std::move(hosts), per_host, 30);
    o.model = model;
    return o;
  };
  auto by_id = train::run_job(*tc.c, job({tc.nodes[0].id, tc.nodes[1].id}, 2, "torch:" + hex));
  BOOST_REQUIRE_MESSAGE(by_id, why(by_id));
  auto by_path = train::run_job(*tc.c, job({tc.nodes[0].id, tc.nodes[1].id}, 2,
                                           "torch:" + cnn.string()));
  BOOST_REQUIRE_MESSAGE(by_path, why(by_path));
  BOOST_TEST((params_of(by_id->checkpoint) == params_of(by_path->checkpoint)));
  // Each host keeps its fetched copy; one tampered on disk is not used: it
  // is fetched again and checked.
  auto cached = tc.root / "a" / "models" / (hex + ".pt");
  BOOST_REQUIRE_MESSAGE(std::filesystem::exists(cached), cached.string());
  {
    std::fstream f{cached, std::ios::binary | std::ios::in | std::ios::out};
    f.seekp(static_cast<std::streamoff>(bytes.size() / 2));
    f.put('\x5a');
  }
  auto again = train::run_job(*tc.c, job({tc.nodes[0].id}, 1, "torch:" + hex));
  BOOST_REQUIRE_MESSAGE(again, why(again));
  {
    std::ifstream f{cached, std::ios::binary};
    std::vector<uint8_t> now{std::istreambuf_iterator<char>{f}, std::istreambuf_iterator<char>{}};
    BOOST_TEST((now == bytes));
  }
  // A host whose operator runs only some owners' models ([host]
  // model_owners) refuses another's by name, and takes a listed one's.
  {
    test::temp_dir cache;
    auto other = data::fetch_model(*tc.c, {tc.nodes[0].id}, id, cache.path(), 32 << 20,
                                   {aicon::identity::generate().id()});
    BOOST_REQUIRE(!other);
    BOOST_TEST(describe(other.error()).find("whose models this host does not run ([host] "
                                            "model_owners)")
                 != std::string::npos,
               describe(other.error()));
    auto listed = data::fetch_model(*tc.c, {tc.nodes[0].id}, id, cache.path(), 32 << 20,
                                    {tc.cli.id});
    BOOST_TEST(static_cast<bool>(listed), why(listed));
  }
  // An id no data node has is refused by name, naming the nodes asked.
  auto unknown = train::run_job(*tc.c, job({tc.nodes[0].id}, 1, "torch:" + std::string(64, 'a')));
  BOOST_REQUIRE(!unknown);
  BOOST_TEST(describe(unknown.error()).find("not on this data node") != std::string::npos,
             describe(unknown.error()));
  // A put whose file is not the one its id names (one byte changed after
  // signing) is refused by the data node, by name, and not stored.
  auto forged = data::make_model_put(tc.c->self(), bytes, "cnn.pt", 1);
  {
    opened<schema::ModelPut> p{forged};
    BOOST_REQUIRE(p);
    auto file = bytes;
    file[100] ^= 1;
    forged = make_envelope<schema::ModelPut>([&](schema::ModelPut::Builder b) {
      b.setManifest(p->getManifest());
      b.setFile(kj::arrayPtr(file.data(), file.size()));
      b.setReplicas(1);
    });
  }
  auto tampered = data::upload_model(*tc.c, tc.nodes[1].id, forged, 20s);
  BOOST_REQUIRE(!tampered);
  BOOST_TEST(describe(tampered.error()).find("hash mismatch") != std::string::npos,
             describe(tampered.error()));
  // More copies than any network needs: refused before anything is stored.
  auto greedy = data::upload_model(*tc.c, tc.nodes[1].id,
                                   data::make_model_put(tc.c->self(), bytes, "cnn.pt", 1000), 20s);
  BOOST_REQUIRE(!greedy);
  BOOST_TEST(describe(greedy.error()).find("ModelPut.replicas: 1000 copies asked, at most 16")
               != std::string::npos,
             describe(greedy.error()));
}

// The same from Lua on the embedded cluster: model.put registers the model
// as the console's asset at its price; a budgeted job trains it by id, the
// rater fetches it too and passes the trainers, and the escrow pays the
// model's price besides the trainers' pay.
BOOST_AUTO_TEST_CASE(model_put_from_lua_and_a_budgeted_job_on_it) {
  if (torch_skipped())
    return;
  test::temp_dir root;
  if (!make_torch_models(root / "models"))
    return;
  // The example script: the model and the data set put, trained by their
  // ids with a budget, the weights saved.
  auto ckpt = root / "trained.ckpt";
  auto r = run_command({aicon_binary(), "run",
                        (std::filesystem::path{AICON_SOURCE_DIR} / "examples/train-cnn.lua").string(),
                        "--", (root / "models" / "digits_cnn.pt").string(), digits_csv().string(),
                        (root / "trained").string()},
                       180s);
  BOOST_TEST(r.exit_code == 0, r.output);
  BOOST_TEST(r.output.find("saved the weights of step 60") != std::string::npos, r.output);
  BOOST_TEST(r.output.find("saved the trained model of step 60") != std::string::npos, r.output);
  // The job host's TorchScript file (the payer's trained-model asset)
  // predicts in Python what aicon's own model predicts from the checkpoint.
  {
    auto spec = train::parse_spec("torch:" + (root / "models" / "digits_cnn.pt").string());
    BOOST_REQUIRE(spec && !train::load_torch(*spec));
    auto c = train::load_checkpoint(ckpt);
    BOOST_REQUIRE_MESSAGE(c, why(c));
    auto mine = train::model::from_params(*spec, c->params);
    BOOST_REQUIRE_MESSAGE(mine, why(mine));
    python_predicts_as(*mine, root / "trained.pt", root.path(), 100, 5);
  }
  // model.put's refusals, each by name.
  auto errors = write_file(root.path(), "errors.lua", R"lua(
print(select(2, pcall(model.put, arg[2])))
print(select(2, pcall(model.put, arg[1], {price = -1})))
)lua");
  auto e = run_command({aicon_binary(), "run", errors.string(), "--",
                        (root / "models" / "digits_cnn.pt").string(), digits_csv().string()},
                       120s);
  BOOST_TEST(e.exit_code == 0, e.output);
  BOOST_TEST(e.output.find("model.put: invalid_argument: model ") != std::string::npos, e.output);
  BOOST_TEST(e.output.find("not a TorchScript file") != std::string::npos, e.output);
  BOOST_TEST(e.output.find("model.put: price must be >= 0") != std::string::npos, e.output);
  // The payer's trained weights as TorchScript, from the file it put (its
  // hash is the model id the checkpoint names); another file is refused.
  auto pt = root / "trained.pt";
  auto exported = run_command({aicon_binary(), "model", "export", "--model",
                               "torch:" + (root / "models" / "digits_cnn.pt").string(),
                               "--checkpoint", ckpt.string(), "--out", pt.string()});
  BOOST_TEST(exported.exit_code == 0, exported.output);
  BOOST_TEST(std::filesystem::exists(pt));
  auto other = run_command({aicon_binary(), "model", "export", "--model",
                            "torch:" + (root / "models" / "batchnorm.pt").string(), "--checkpoint",
                            ckpt.string(), "--out", (root / "other.pt").string()});
  BOOST_TEST(other.exit_code == 1, other.output);
  BOOST_TEST(other.output.find("is a checkpoint of torch:") != std::string::npos, other.output);
  BOOST_TEST(r.output.find("phase done, 2/2 trainers passed") != std::string::npos, r.output);
  BOOST_TEST(r.output.find("model price 7") != std::string::npos, r.output);
}

BOOST_AUTO_TEST_SUITE_END()
