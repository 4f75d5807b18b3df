// Data nodes across real host processes on 127.0.0.1: two data-node hosts
// (d1, d2, each also a ledger and block generator) and a trainer host (t,
// a ledger). A dataset put through d1 is replicated to d2; a trainer
// without a lease, or whose job escrowed nothing, is refused its keys; with
// both it gets the exact tensors; a share corrupted on disk on one replica
// (or missing on the other) is detected, reported, repaired and served
// from the other replica; the data nodes challenge each other's storage
// and record a failed challenge.
#include <cstring>
#include <map>
#include <regex>
#include <thread>

#include <sodium.h>

#include "actors/data_node/remote.hpp"
#include "actors/data_node/shard_store.hpp"
#include "actors/job/job.hpp"
#include "actors/ledger/chain.hpp"
#include "actors/ledger/work.hpp"
#include "fixtures.hpp"
#include "schemas/chain.capnp.h"

using namespace aicon;
using namespace aicon::test;

namespace {

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
}

std::filesystem::path digits_csv() {
  return std::filesystem::path{AICON_SOURCE_DIR} / "tests" / "data" / "digits.csv.gz";
}

struct data_cluster {
  test::temp_dir root;
  std::vector<node_dir> nodes; // d1, d2, t
  std::vector<uint16_t> ports;
  std::vector<running_host> hosts;
  node_dir cli;
  aicon::identity rater = aicon::identity::generate();
  aicon::identity worker = aicon::identity::generate();
  aicon::identity alice = aicon::identity::generate(); // pays for the job
  std::filesystem::path genesis, owner_key;
  ledger::hash256 chain{};
  std::unique_ptr<client> c;

  data_cluster() {
    for (auto name : {"d1", "d2", "t"}) {
      nodes.push_back(make_node(root, name));
      ports.push_back(free_port());
    }
    cli = make_node(root, "client");
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
    g.authorities = {rater.id()};
    g.allocations = {{alice.id(), 1'000'000, 0}};
    chain = ledger::chain_id(g);
    genesis = write_file(root.path(), "genesis.toml", ledger::to_toml(g));
    owner_key = root / "owner.key";
    BOOST_REQUIRE(create_key_file(owner_key));
    hosts.resize(3);
    for (size_t i = 0; i < 3; ++i)
      hosts[i] = start_host(config(i), root / fmt::format("{}.log", name(i)), {"-v"});
    for (size_t i = 0; i < 3; ++i)
      for (size_t k = 0; k < 3; ++k)
        if (k != i)
          BOOST_REQUIRE_MESSAGE(hosts[i].proc->wait_for_log("peer up " + nodes[k].id.short_hex(),
                                                            20s),
                                "host " << i << " never linked:\n" << hosts[i].proc->log_text());
    client::options opts;
    opts.data_dir = cli.dir;
    opts.threads = 2;
    auto cl = client::start(opts);
    BOOST_REQUIRE_MESSAGE(cl, why(cl));
    c = std::move(*cl);
    for (size_t i = 0; i < 3; ++i) {
      auto id = c->connect(address(i), nodes[i].id);
      BOOST_REQUIRE_MESSAGE(id, why(id));
    }
  }

  ~data_cluster() {
    c.reset();
  }

  std::string name(size_t i) const {
    return nodes[i].dir.filename().string();
  }

  std::string address(size_t i) const {
    return fmt::format("127.0.0.1:{}", ports[i]);
  }

  std::filesystem::path config(size_t i) {
    std::string connect;
    for (size_t k = 0; k < 3; ++k)
      if (k != i)
        connect += fmt::format("  {{ address = \"127.0.0.1:{}\", node = \"{}\" }},\n", ports[k],
                               nodes[k].id.hex());
    // t also runs the job role, for its own client's jobs on stored leases.
    auto roles = i < 2 ? R"("directory", "ledger", "block_generator", "data_node")"
                       : R"("directory", "ledger", "trainer", "job")";
    auto clients = fmt::format("\"{}\"", cli.id.hex());
    if (i == 2)
      clients += fmt::format(", \"{}\"", nodes[2].id.hex());
    return write_file(
      root.path(), name(i) + ".toml",
      fmt::format("[host]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\nroles = [{}]\n"
                  "data_files = [\"{}/tests/data\"]\ntrainer_clients = [{}]\n"
                  "[peers]\nallow = [\"{}\"]\nconnect = [\n{}]\n[chain]\ngenesis = \"{}\"\n"
                  "[limits]\nblock_takeover_ms = 1000\nvote_wait_ms = 500\n"
                  "ledger_sync_ms = 300\nstorage_challenge_ms = 300\n",
                  name(i), ports[i], roles, AICON_SOURCE_DIR, clients, cli.id.hex(), connect,
                  genesis.string()));
  }

  caf::expected<envelope> ask(size_t i, const std::string& role, envelope req) {
    auto dst = c->lookup(role + "@" + nodes[i].id.hex());
    if (!dst)
      return dst.error();
    return c->request(*dst, std::move(req), 20s);
  }

  command_result cli_run(std::vector<std::string> args) {
    args.insert(args.begin(), aicon_binary());
    args.push_back("--data-dir");
    args.push_back(cli.dir.string());
    auto r = run_command(args, 120s);
    BOOST_TEST_MESSAGE("$ aicon " << args[1] << " " << args[2] << " -> " << r.exit_code << "\n"
                                  << r.output);
    return r;
  }

  /// The host's own LMDB, opened from this process beside the running host
  /// (LMDB is multi-process): what a disk fault or the allocator would touch.
  std::map<size_t, std::shared_ptr<store::environment>> stores; ///< open while the test runs
  store::environment& store_of(size_t i) {
    if (!stores[i]) {
      auto env = store::shared_environment(nodes[i].dir);
      BOOST_REQUIRE_MESSAGE(env, why(env));
      stores[i] = *env;
    }
    return *stores[i];
  }

  uint64_t nonce_of(size_t i, const node_id& who) {
    auto reply = ask(i, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                       q.setAccount(kj::arrayPtr(who.bytes.data(), 32));
                     }));
    if (!reply)
      return 0;
    opened<schema::AccountInfo> a{*reply};
    return a ? a->getNonce() : 0;
  }

  /// Alice escrows `amount` for `job`; a work receipt earns the block.
  void escrow(const data::hash256& job, uint64_t amount) {
    auto tx = ledger::make_signed_transaction(alice, chain, 1,
                                              [&](schema::Transaction::Body::Builder b) {
      auto e = b.initEscrowLock();
      e.setJobId(kj::arrayPtr(job.data(), 32));
      e.setAmount(amount);
    });
    auto ack = ask(0, "block_generator", tx);
    BOOST_REQUIRE_MESSAGE(ack, why(ack));
    ledger::work_facts f;
    f.session[0] = 1;
    f.job = job;
    f.model[0] = 2;
    f.seq = 1;
    f.units = 1000;
    auto r = ask(0, "block_generator", ledger::make_work_receipt(worker, rater, f));
    BOOST_REQUIRE_MESSAGE(r, why(r));
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (nonce_of(0, alice.id()) >= 1 && nonce_of(1, alice.id()) >= 1)
        return;
      std::this_thread::sleep_for(100ms);
    }
    BOOST_FAIL("the escrow never became final on both data nodes");
  }
};

std::string dataset_id_of(const std::string& out) {
  std::smatch m;
  std::regex re{"dataset ([0-9a-f]{64})"};
  BOOST_REQUIRE_MESSAGE(std::regex_search(out, m, re), "no dataset id in:\n" << out);
  return m[1];
}

/// What `aicon data put --standardize` made of digits, computed here.
data::table expected_digits() {
  data::csv_options csv;
  auto t = data::read_any(digits_csv(), std::nullopt, csv, std::nullopt);
  BOOST_REQUIRE_MESSAGE(t, why(t));
  data::fit_and_apply(*t, data::transform::kind::standardize);
  return *t;
}

bool same_bits(const data::table& a, const data::table& b) {
  return a.rows == b.rows && a.features == b.features && a.x.size() == b.x.size()
         && std::memcmp(a.x.data(), b.x.data(), a.x.size() * 4) == 0 && a.y == b.y;
}

} // namespace

BOOST_AUTO_TEST_SUITE(data_nodes)

BOOST_AUTO_TEST_CASE(replicas_leases_repair_and_challenges) {
  data_cluster dc;
  auto trainer_key = (dc.nodes[2].dir / "node.key").string();

  // No admitted peer may upload a dataset in another's name (its owner is
  // paid by every job that uses it): a manifest naming alice but signed by
  // mallory, and one with no signature, are refused by name; nothing is
  // staged or listed.
  {
    data::table t;
    t.rows = 20;
    t.features = 2;
    t.x.assign(40, 0.5f);
    auto mallory = aicon::identity::generate();
    auto built = data::build_dataset(mallory, t, data::transform{}, data::put_options{});
    BOOST_REQUIRE_MESSAGE(built, why(built));
    opened<schema::DatasetManifest> honest{built->manifest};
    auto claim = [&](bool sign) {
      return make_envelope<schema::UploadBegin>([&](schema::UploadBegin::Builder b) {
        b.setManifest(honest.root());
        auto m = b.getManifest();
        m.setOwner(kj::arrayPtr(dc.alice.id().bytes.data(), 32));
        auto id = data::manifest_id(m.asReader()); // a true id: only the signature is wrong
        m.setDatasetId(kj::arrayPtr(id.data(), 32));
        if (sign) {
          auto sig = mallory.sign(data::owner_signing_bytes(id));
          m.setOwnerSignature(kj::arrayPtr(sig.data(), sig.size()));
        } else {
          m.disownOwnerSignature();
        }
      });
    };
    for (bool sign : {true, false}) {
      auto r = dc.ask(0, "data_node", claim(sign));
      BOOST_REQUIRE(!r);
      BOOST_TEST(code_of(r.error()) == errc::bad_signature);
      BOOST_TEST(describe(r.error()).find("UploadBegin may be sent only by the owner the "
                                          "manifest names")
                   != std::string::npos,
                 describe(r.error()));
      BOOST_TEST(describe(r.error()).find("ownerSignature is not by the owner it names")
                   != std::string::npos,
                 describe(r.error()));
    }
    auto list = dc.ask(0, "data_node", make_envelope<schema::DataQuery>([](auto q) { q.setList(); }));
    BOOST_REQUIRE_MESSAGE(list, why(list));
    BOOST_TEST(opened<schema::DatasetList>{*list}->getManifests().size() == 0u);
  }

  // Put through d1 (64 KiB shards: 8 of them), replicated to d2.
  auto put = dc.cli_run({"data", "put", digits_csv().string(), "--standardize", "--price", "10",
                         "--shard-bytes", "65536", "--key", dc.owner_key.string(), "--connect",
                         dc.address(0)});
  BOOST_REQUIRE_EQUAL(put.exit_code, 0);
  BOOST_TEST(put.output.find("1797 rows, 64 features, 10 classes") != std::string::npos);
  BOOST_TEST(put.output.find("stored on 2 of 2") != std::string::npos);
  auto id = dataset_id_of(put.output);
  data::hash256 dataset;
  for (size_t i = 0; i < 32; ++i)
    dataset[i] = static_cast<uint8_t>(std::stoi(id.substr(2 * i, 2), nullptr, 16));
  auto ls = dc.cli_run({"data", "ls", "--connect", dc.address(0) + "," + dc.address(1)});
  BOOST_REQUIRE_EQUAL(ls.exit_code, 0);
  BOOST_TEST(ls.output.find("node " + dc.nodes[0].id.short_hex() + ": 1 dataset(s)")
             != std::string::npos);
  BOOST_TEST(ls.output.find("node " + dc.nodes[1].id.short_hex() + ": 1 dataset(s)")
             != std::string::npos);

  // The manifest is registered on the chain as an asset of the owner.
  {
    auto deadline = std::chrono::steady_clock::now() + 60s;
    caf::expected<envelope> asset = make_error(errc::not_found, "not asked");
    while (std::chrono::steady_clock::now() < deadline) {
      // A block needs verified work: one receipt per try is enough.
      asset = dc.ask(0, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                       q.setAsset(kj::arrayPtr(dataset.data(), 32));
                     }));
      if (asset)
        break;
      ledger::work_facts f;
      f.session[0] = 3;
      f.job[0] = 3;
      f.model[0] = 3;
      f.seq = now_ms();
      f.units = 1000;
      (void) dc.ask(0, "block_generator", ledger::make_work_receipt(dc.worker, dc.rater, f));
      std::this_thread::sleep_for(300ms);
    }
    BOOST_REQUIRE_MESSAGE(asset, why(asset));
    opened<schema::AssetInfo> a{*asset};
    BOOST_TEST(a->getKind().cStr() == std::string{"dataset"});
    auto owner = load_key_file(dc.owner_key);
    BOOST_TEST(std::memcmp(a->getOwner().begin(), owner->id().bytes.data(), 32) == 0);
  }

  data::hash256 job;
  randombytes_buf(job.data(), job.size());
  auto job_hex = to_hex({job.data(), 32});
  auto fetch_args = [&](std::string out) {
    std::vector<std::string> args{"data",  "fetch",     id,          "--job", job_hex,
                                  "--key", trainer_key, "--connect", dc.address(0) + "," + dc.address(1)};
    if (!out.empty()) {
      args.push_back("--out");
      args.push_back(out);
    }
    return args;
  };

  // No lease: refused, and the refusal says why.
  auto refused = dc.cli_run(fetch_args(""));
  BOOST_TEST(refused.exit_code != 0);
  BOOST_TEST(refused.output.find("holds no lease") != std::string::npos, refused.output);

  // A lease (the allocator's record, written directly) but no escrow: refused.
  for (size_t i = 0; i < 2; ++i) {
    auto err = data::put_lease(dc.store_of(i),
                               data::lease{job, dc.nodes[2].id, dataset, now_ms() + 600'000});
    BOOST_REQUIRE_MESSAGE(!err, why_not(err));
  }
  auto unpaid = dc.cli_run(fetch_args(""));
  BOOST_TEST(unpaid.exit_code != 0);
  BOOST_TEST(unpaid.output.find("escrowed nothing") != std::string::npos, unpaid.output);

  // Escrow on the chain: the leased trainer gets the keys and the exact tensors.
  dc.escrow(job, 10);
  auto fetched = dc.cli_run(fetch_args((dc.root / "got").string()));
  BOOST_REQUIRE_EQUAL(fetched.exit_code, 0);
  BOOST_TEST(fetched.output.find("fetched 8 shares") != std::string::npos, fetched.output);
  auto want = expected_digits();
  {
    auto got = data::read_npy(dc.root / "got.x.npy", dc.root / "got.y.npy", {});
    BOOST_REQUIRE_MESSAGE(got, why(got));
    BOOST_TEST(same_bits(*got, want));
  }

  // Training on the dataset: two trainers on t pull it from the data nodes
  // under the job's lease (t's key), and learn digits.
  {
    train::job_options o;
    o.hosts = {dc.nodes[2].id};
    o.trainers_per_host = 2;
    o.steps = 300;
    o.dataset = id;
    o.data_nodes = {dc.nodes[0].id, dc.nodes[1].id};
    std::memcpy(o.job.data(), job.data(), 32);
    auto r = train::run_job(*dc.c, o);
    BOOST_REQUIRE_MESSAGE(r, why(r));
    BOOST_TEST_MESSAGE("trained on the dataset from the data nodes: accuracy " << r->accuracy);
    BOOST_TEST(r->accuracy >= 0.95);
    // Another job holds no lease: its trainers cannot get the keys.
    auto other = o;
    other.job[0] ^= 1;
    auto refused_job = train::run_job(*dc.c, other);
    BOOST_REQUIRE(!refused_job);
    BOOST_TEST(describe(refused_job.error()).find("holds no lease") != std::string::npos,
               describe(refused_job.error()));
    // No stored lease, but a DataGrant in each join: signed by a payer
    // with no escrow for the job, refused; signed by the dataset's owner
    // (its own data, nothing to pay), the trainers get the keys and learn.
    auto stranger = identity::generate();
    auto granted = o;
    granted.job[0] ^= 2;
    granted.steps = 60;
    granted.payer = &stranger;
    auto no_escrow = train::run_job(*dc.c, granted);
    BOOST_REQUIRE(!no_escrow);
    BOOST_TEST(describe(no_escrow.error()).find("has no escrow") != std::string::npos,
               describe(no_escrow.error()));
    auto owner = load_key_file(dc.owner_key);
    BOOST_REQUIRE(owner);
    granted.payer = &*owner;
    auto by_owner = train::run_job(*dc.c, granted);
    BOOST_REQUIRE_MESSAGE(by_owner, why(by_owner));
    BOOST_TEST(by_owner->accuracy >= 0.8);
    // The same stored leases through a job host (t's): `aicon train
    // --dataset --job` hands the job over, and t's trainers take the keys
    // under the operator's leases.
    auto via_host = dc.cli_run({"train", "--dataset", id.substr(0, 16), "--data-connect",
                                dc.address(0), "--job", job_hex, "--connect", dc.address(2),
                                "--trainers-per-host", "2", "--steps", "200"});
    BOOST_REQUIRE_MESSAGE(via_host.exit_code == 0, via_host.output);
    BOOST_TEST(via_host.output.find(" runs on job host ") != std::string::npos, via_host.output);
    auto acc_at = via_host.output.find("held-out accuracy ");
    BOOST_REQUIRE(acc_at != std::string::npos);
    BOOST_TEST(std::stod(via_host.output.substr(acc_at + 18)) >= 0.9, via_host.output);
  }

  // Disk faults: share 2 corrupted on d1, share 5 gone on d2.
  auto man = data::read_dataset(dc.store_of(0), dataset);
  BOOST_REQUIRE_MESSAGE(man, why(man));
  opened<schema::DatasetManifest> m{man->manifest};
  auto hash_at = [&](unsigned i) {
    data::hash256 h;
    std::memcpy(h.data(), m->getShards()[i].getHash().begin(), 32);
    return h;
  };
  {
    auto bad = man->shares[2];
    bad[bad.size() / 2] ^= 0x40;
    auto t = store::txn::begin(dc.store_of(0), true);
    BOOST_REQUIRE(t);
    auto h = hash_at(2);
    BOOST_REQUIRE(!t->put(store::db::shares, {h.data(), 32}, bad));
    BOOST_REQUIRE(!t->commit());
    auto t2 = store::txn::begin(dc.store_of(1), true);
    BOOST_REQUIRE(t2);
    auto h5 = hash_at(5);
    BOOST_REQUIRE(!t2->del(store::db::shares, {h5.data(), 32}));
    BOOST_REQUIRE(!t2->commit());
  }
  auto trainer = load_key_file(trainer_key);
  BOOST_REQUIRE(trainer);
  auto found = data::find_replicas(*dc.c, {dc.nodes[0].id, dc.nodes[1].id}, id);
  BOOST_REQUIRE_MESSAGE(found, why(found));
  BOOST_REQUIRE_EQUAL(found->first.size(), 2u);
  auto by_node = [&](size_t i) {
    for (auto& r : found->first)
      if (r.node == dc.nodes[i].id)
        return r;
    BOOST_FAIL("no replica for node " << i);
    return found->first[0];
  };
  auto keys = data::request_keys(*dc.c, by_node(0), *trainer, found->second, job);
  BOOST_REQUIRE_MESSAGE(keys, why(keys));
  // Each replica first in turn: each bad copy is met once, reported,
  // repaired by its node from the other, and the tensors are still exact.
  for (auto first : {0, 1}) {
    std::vector<data::replica> order{by_node(first), by_node(1 - first)};
    data::fetch_stats stats;
    auto t = data::fetch_dataset(*dc.c, order, found->second, &*keys, 2, stats);
    BOOST_REQUIRE_MESSAGE(t, why(t));
    BOOST_TEST(same_bits(*t, want));
    BOOST_TEST(stats.bad_copies == 1u);
    BOOST_REQUIRE_EQUAL(stats.events.size(), 1u);
    BOOST_TEST(stats.events[0].find(first == 0 ? "corrupt" : "missing") != std::string::npos,
               stats.events[0]);
    BOOST_TEST(stats.events[0].find("repaired") != std::string::npos, stats.events[0]);
  }
  auto verify = dc.cli_run({"data", "verify", id, "--connect", dc.address(0) + "," + dc.address(1)});
  BOOST_TEST(verify.exit_code == 0, verify.output);
  BOOST_TEST(verify.output.find("8 shares") != std::string::npos);

  // A forged key request (signed by someone else for the trainer) is refused.
  {
    auto forged = data::make_key_request(dc.worker, dataset, job, now_ms());
    auto copy = make_envelope<schema::KeyRequest>([&](schema::KeyRequest::Builder b) {
      opened<schema::KeyRequest> o{forged};
      b.setDatasetId(o->getDatasetId());
      b.setJobId(o->getJobId());
      b.setTrainer(kj::arrayPtr(dc.nodes[2].id.bytes.data(), 32));
      b.setTimeMs(o->getTimeMs());
      b.setSignature(o->getSignature());
    });
    auto r = dc.ask(0, "data_node", copy);
    BOOST_REQUIRE(!r);
    BOOST_TEST(describe(r.error()).find("signature") != std::string::npos, describe(r.error()));
  }

  // Storage challenges: d1 and d2 challenge each other and record answers;
  // once d2 loses every share, d1 records failed challenges.
  auto wait_log = [&](size_t i, bool want_failure) {
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto reply = dc.ask(i, "data_node",
                          make_envelope<schema::DataQuery>([](auto q) { q.setChallenges(); }));
      if (reply) {
        opened<schema::ChallengeLog> log{*reply};
        for (auto r : log->getRecords())
          if (r.getOk() != want_failure && r.getTimeMs() + 30'000 > now_ms()
              && (!want_failure || std::string{r.getProblem().cStr()}.find("not held")
                                     != std::string::npos))
            return true;
      }
      std::this_thread::sleep_for(200ms);
    }
    return false;
  };
  BOOST_TEST(wait_log(0, false));
  BOOST_TEST(wait_log(1, false));
  {
    auto t = store::txn::begin(dc.store_of(1), true);
    BOOST_REQUIRE(t);
    for (unsigned i = 0; i < m->getShards().size(); ++i) {
      auto h = hash_at(i);
      BOOST_REQUIRE(!t->del(store::db::shares, {h.data(), 32}));
    }
    BOOST_REQUIRE(!t->commit());
  }
  BOOST_TEST(wait_log(0, true));
  BOOST_TEST(dc.hosts[0].proc->wait_for_log("storage challenge FAILED by "
                                              + dc.nodes[1].id.short_hex(),
                                            10s)
               .has_value());
  auto challenges = dc.cli_run({"data", "challenges", "--connect", dc.address(0)});
  BOOST_TEST(challenges.exit_code == 0);
  BOOST_TEST(challenges.output.find("FAILED") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
