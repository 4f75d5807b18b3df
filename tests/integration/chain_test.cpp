// The PoV chain across three real host processes on 127.0.0.1: blocks are
// produced from work receipts and finalized by committee votes; all hosts
// agree on tip and state root; forged blocks are refused by every honest
// host; a host killed with SIGKILL while blocks are committed verifies,
// catches up and agrees again.
#include <csignal>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "actors/ledger/chain.hpp"
#include "actors/ledger/work.hpp"
#include "fixtures.hpp"
#include "schemas/chain.capnp.h"

using namespace aicon;
using namespace aicon::test;

namespace {

struct tip_view {
  uint64_t height = 0;
  std::string hash, root;
  bool operator==(const tip_view&) const = default;
};

std::string hex_of(capnp::Data::Reader d) {
  return to_hex({d.begin(), d.size()});
}

struct chain_cluster {
  test::temp_dir root;
  std::vector<node_dir> nodes; // a, b, c
  std::vector<uint16_t> ports;
  std::vector<running_host> hosts;
  std::vector<int> starts;     // restarts per host (log file names)
  node_dir cli;
  aicon::identity rater = aicon::identity::generate();
  aicon::identity trainer = aicon::identity::generate();
  aicon::identity alice = aicon::identity::generate();
  aicon::identity bob = aicon::identity::generate();
  ledger::genesis_config g;
  std::filesystem::path genesis;
  std::unique_ptr<client> c;
  std::atomic<uint64_t> seq{0};
  static constexpr uint64_t validator_stake = 1000;

  /// `staked`: each validator holds validator_stake (what a double vote
  /// puts at risk).
  explicit chain_cluster(bool staked = false) {
    for (auto name : {"a", "b", "c"}) {
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
    g.time_ms = now_ms() - 10'000;
    for (auto& n : nodes)
      g.candidates.push_back({n.id, 1});
    g.committee_size = 3;
    g.initial_difficulty = 100;
    g.difficulty.target_interval_ms = 500;
    g.difficulty.window_blocks = 5;
    g.authorities = {rater.id()};
    g.allocations = {{alice.id(), 1'000'000, 0}};
    if (staked)
      for (auto& n : nodes)
        g.allocations.push_back({n.id, 0, validator_stake});
    genesis = write_file(root.path(), "genesis.toml", ledger::to_toml(g));
    hosts.resize(3);
    starts.assign(3, 0);
    for (size_t i = 0; i < 3; ++i)
      start(i);
    for (size_t i = 0; i < 3; ++i)
      for (size_t k = 0; k < 3; ++k)
        if (k != i)
          BOOST_REQUIRE_MESSAGE(hosts[i].proc->wait_for_log("peer up " + nodes[k].id.short_hex(),
                                                            20s),
                                "host " << i << " never linked:\n" << hosts[i].proc->log_text());
    c = make_client();
  }

  ~chain_cluster() {
    c.reset();
  }

  static uint64_t now_ms() {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
  }

  std::filesystem::path config(size_t i) {
    std::string connect;
    for (size_t k = 0; k < 3; ++k)
      if (k != i)
        connect += fmt::format("  {{ address = \"127.0.0.1:{}\", node = \"{}\" }},\n", ports[k],
                               nodes[k].id.hex());
    return write_file(
      root.path(), fmt::format("{}.toml", nodes[i].dir.filename().string()),
      fmt::format("[host]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n"
                  "roles = [\"directory\", \"ledger\", \"block_generator\"]\n"
                  "[peers]\nallow = [\"{}\"]\nconnect = [\n{}]\n[chain]\ngenesis = \"{}\"\n"
                  "[limits]\nblock_takeover_ms = 1000\nvote_wait_ms = 500\n"
                  "ledger_sync_ms = 300\n",
                  nodes[i].dir.filename().string(), ports[i], cli.id.hex(), connect,
                  genesis.string()));
  }

  void start(size_t i) {
    auto log = root / fmt::format("{}-{}.log", nodes[i].dir.filename().string(), starts[i]++);
    hosts[i] = start_host(config(i), log, {"-v"});
  }

  /// Links `cl` to host i; a host that has just restarted may refuse the
  /// first attempts while its peers reconnect, so try for a while.
  caf::expected<node_id> connect(client& cl, size_t i) {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
      auto id = cl.connect(fmt::format("127.0.0.1:{}", ports[i]), nodes[i].id);
      if (id || std::chrono::steady_clock::now() > deadline)
        return id;
      BOOST_TEST_MESSAGE("connect to host " << i << ": " << describe(id.error()) << "; retrying");
      std::this_thread::sleep_for(200ms);
    }
  }

  std::unique_ptr<client> make_client() {
    client::options opts;
    opts.data_dir = cli.dir;
    opts.threads = 2;
    auto cl = client::start(opts);
    BOOST_REQUIRE_MESSAGE(cl, why(cl));
    for (size_t i = 0; i < 3; ++i) {
      auto id = connect(**cl, i);
      BOOST_REQUIRE_MESSAGE(id, why(id));
    }
    return std::move(*cl);
  }

  caf::expected<envelope> ask(client& cl, size_t i, const std::string& role, envelope req) {
    auto dst = cl.lookup(role + "@" + nodes[i].id.hex());
    if (!dst)
      return dst.error();
    return cl.request(*dst, std::move(req), 10s);
  }

  envelope receipt(uint64_t units) {
    ledger::work_facts f;
    f.session[0] = 7;
    f.job[0] = 8;
    f.model[0] = 9;
    f.seq = ++seq;
    f.units = units;
    return ledger::make_work_receipt(trainer, rater, f);
  }

  envelope transfer(uint64_t nonce, uint64_t amount) {
    return ledger::make_signed_transaction(alice, ledger::chain_id(g), nonce, [&](schema::Transaction::Body::Builder b) {
      auto t = b.initTransfer();
      t.setTo(kj::arrayPtr(bob.id().bytes.data(), 32));
      t.setAmount(amount);
    });
  }

  caf::expected<tip_view> tip(client& cl, size_t i) {
    auto reply = ask(cl, i, "ledger", make_envelope<schema::LedgerQuery>([](auto q) { q.setTip(); }));
    if (!reply)
      return reply.error();
    opened<schema::TipInfo> t{*reply};
    if (!t)
      return t.error();
    return tip_view{t->getHeight(), hex_of(t->getHash()), hex_of(t->getStateRoot())};
  }

  uint64_t balance(size_t i, const node_id& who) {
    auto reply = ask(*c, i, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                       q.setAccount(kj::arrayPtr(who.bytes.data(), 32));
                     }));
    BOOST_REQUIRE_MESSAGE(reply, why(reply));
    return opened<schema::AccountInfo>{*reply}->getBalance();
  }

  /// Waits until every host reports the same tip at >= `height`.
  tip_view wait_agreed(uint64_t height, std::chrono::seconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::string last;
    while (std::chrono::steady_clock::now() < deadline) {
      std::vector<tip_view> tips;
      for (size_t i = 0; i < 3; ++i)
        if (auto t = tip(*c, i))
          tips.push_back(*t);
      if (tips.size() == 3 && tips[0].height >= height && tips[0] == tips[1]
          && tips[1] == tips[2])
        return tips[0];
      last.clear();
      for (auto& t : tips)
        last += fmt::format(" {}:{}", t.height, t.hash.substr(0, 8));
      std::this_thread::sleep_for(100ms);
    }
    BOOST_FAIL("hosts did not agree on a tip >= " << height << " within the timeout; last:"
                                                   << last << "\n" << logs());
    return {};
  }

  std::string logs() {
    std::string out;
    for (size_t i = 0; i < 3; ++i) {
      auto text = hosts[i].proc->log_text();
      if (text.size() > 4000)
        text = text.substr(text.size() - 4000);
      out += fmt::format("--- host {} ---\n{}\n", i, text);
    }
    return out;
  }

  /// Produces blocks until every host agrees on one above `height`.
  tip_view produce(uint64_t blocks) {
    auto start = tip(*c, 0);
    BOOST_REQUIRE_MESSAGE(start, why(start));
    for (uint64_t k = 0; k < blocks; ++k) {
      auto ack = ask(*c, k % 3, "block_generator", receipt(100));
      BOOST_REQUIRE_MESSAGE(ack, why(ack));
      std::this_thread::sleep_for(150ms);
    }
    return wait_agreed(start->height + blocks, 60s);
  }

  aicon::identity key_of(const node_id& id) {
    for (auto& n : nodes)
      if (n.id == id) {
        auto key = load_identity(n.dir);
        BOOST_REQUIRE_MESSAGE(key, why(key));
        return *key;
      }
    BOOST_FAIL("not a host of this cluster");
    return aicon::identity::generate();
  }
};

/// The error text a host's ledger answers to `block`.
std::string refusal(chain_cluster& cc, size_t i, const envelope& block) {
  auto reply = cc.ask(*cc.c, i, "ledger", block);
  return reply ? std::string{"accepted"} : describe(reply.error());
}

} // namespace

BOOST_AUTO_TEST_SUITE(chain)

BOOST_AUTO_TEST_CASE(three_hosts_finalize_blocks_and_refuse_forgeries) {
  chain_cluster cc;
  // Transfers submitted to different hosts reach whoever generates.
  for (uint64_t n = 1; n <= 3; ++n) {
    auto ack = cc.ask(*cc.c, n % 3, "block_generator", cc.transfer(n, 10 * n));
    BOOST_REQUIRE_MESSAGE(ack, why(ack));
  }
  // A replayed transaction is refused at the door.
  auto dup = cc.ask(*cc.c, 1, "block_generator", cc.transfer(1, 10));
  BOOST_REQUIRE(!dup);
  BOOST_TEST(describe(dup.error()).find("duplicate") != std::string::npos, describe(dup.error()));
  auto agreed = cc.produce(4);
  BOOST_TEST_MESSAGE("agreed tip " << agreed.height << " " << agreed.hash);
  for (size_t i = 0; i < 3; ++i)
    BOOST_TEST(cc.balance(i, cc.bob.id()) == 60u);
  // Once committed, the same nonce is a replay for the mempool too.
  auto replay = cc.ask(*cc.c, 2, "block_generator", cc.transfer(2, 99));
  BOOST_REQUIRE(!replay);
  BOOST_TEST(describe(replay.error()).find("replayed_nonce") != std::string::npos,
             describe(replay.error()));
  // The same keys on another chain (another genesis): alice's transfer
  // signed there is refused here by name; it counts on one chain only.
  auto other = cc.g;
  other.time_ms += 1;
  auto foreign = ledger::make_signed_transaction(
    cc.alice, ledger::chain_id(other), 4, [&](schema::Transaction::Body::Builder b) {
      auto t = b.initTransfer();
      t.setTo(kj::arrayPtr(cc.bob.id().bytes.data(), 32));
      t.setAmount(1);
    });
  for (size_t i = 0; i < 3; ++i) {
    auto r = cc.ask(*cc.c, i, "block_generator", foreign);
    BOOST_REQUIRE(!r);
    BOOST_TEST(describe(r.error()).find("wrong_chain") != std::string::npos, describe(r.error()));
  }
  // A transaction that breaks a rule now is refused at the door instead of
  // sitting in the pool and blocking its author's next nonce.
  auto bad_settle = ledger::make_signed_transaction(
    cc.alice, ledger::chain_id(cc.g), 4, [&](schema::Transaction::Body::Builder b) {
      std::array<uint8_t, 32> job{};
      job[0] = 0x42;
      b.initSettle().setJobId(kj::arrayPtr(job.data(), 32));
    });
  auto settled = cc.ask(*cc.c, 0, "block_generator", bad_settle);
  BOOST_REQUIRE(!settled);
  BOOST_TEST(describe(settled.error()).find("rule unknown_escrow") != std::string::npos,
             describe(settled.error()));
  auto next = cc.ask(*cc.c, 0, "block_generator", cc.transfer(4, 1));
  BOOST_TEST(static_cast<bool>(next), (next ? std::string{} : describe(next.error())));
  agreed = cc.wait_agreed(agreed.height + 1, 30s); // its idle block

  // A scratch copy of host a's chain up to `height`, to build blocks on.
  auto scratch_copy = [&](const std::string& name, uint64_t height) {
    auto copy = ledger::chain::open(cc.root / name, cc.g);
    BOOST_REQUIRE_MESSAGE(copy, why(copy));
    for (uint64_t h = 1; h <= height; ++h) {
      auto blk = cc.ask(*cc.c, 0, "ledger",
                        make_envelope<schema::LedgerQuery>([h](auto q) { q.setBlockAt(h); }));
      BOOST_REQUIRE_MESSAGE(blk, why(blk));
      auto err = (*copy)->append(*blk);
      BOOST_REQUIRE_MESSAGE(!err, describe(err));
    }
    return std::move(*copy);
  };
  // Forgeries for the next height, built on a scratch copy of the chain.
  auto scratch = scratch_copy("scratch", agreed.height);
  auto tip = scratch->tip();
  BOOST_REQUIRE(tip);
  auto committee = ledger::select_committee(tip->hash, cc.g.candidates, cc.g.committee_size);
  std::vector<aicon::identity> keys;
  for (auto& id : committee)
    keys.push_back(cc.key_of(id));
  auto vote_all = [&](envelope b) {
    for (auto& k : keys)
      b = ledger::chain::add_vote(b, k);
    return b;
  };
  auto resign = [&](const envelope& b) {
    auto hash = ledger::header_hash(opened<schema::Block>{b}->getHeader());
    auto sig = keys[0].sign(ledger::block_signing_bytes(hash));
    return vote_all(ledger::rebuild_block(b, [&](schema::Block::Builder nb) {
      nb.setGeneratorSignature(kj::arrayPtr(sig.data(), sig.size()));
      nb.initVotes(0);
    }));
  };
  ledger::block_draft d;
  d.receipts = {cc.receipt(1000)};
  d.transactions = {cc.transfer(4, 5)};
  d.time_ms = chain_cluster::now_ms();
  // 1. Signed by a key outside the committee (with the committee's votes).
  auto stranger = aicon::identity::generate();
  auto by_stranger = scratch->propose(stranger, d);
  BOOST_REQUIRE_MESSAGE(by_stranger, why(by_stranger));
  auto forged_generator = vote_all(*by_stranger);
  // 2. A correctly signed block that lies about the state root.
  auto honest = scratch->propose(keys[0], d);
  BOOST_REQUIRE_MESSAGE(honest, why(honest));
  auto wrong_root = resign(ledger::rebuild_block(*honest, [](schema::Block::Builder b) {
    std::vector<uint8_t> root(b.getHeader().getStateRoot().begin(),
                              b.getHeader().getStateRoot().end());
    root[0] ^= 0xff;
    b.getHeader().setStateRoot(kj::arrayPtr(root.data(), root.size()));
  }));
  // 3. A double spend: alice's already committed transfer (nonce 1) again.
  auto double_spend = resign(ledger::rebuild_block(*honest, [&](schema::Block::Builder b) {
    auto txs = b.initTransactions(1);
    auto again = cc.transfer(1, 10);
    txs.setWithCaveats(0, opened<schema::SignedTransaction>{again}.root());
    b.getHeader().setTxRoot(kj::arrayPtr(ledger::tx_root(txs.asReader()).data(), 32));
  }));
  for (size_t i = 0; i < 3; ++i) {
    auto r1 = refusal(cc, i, forged_generator);
    BOOST_TEST(r1.find("generator is not in this height's committee") != std::string::npos, r1);
    auto r2 = refusal(cc, i, wrong_root);
    BOOST_TEST(r2.find("stateRoot does not match") != std::string::npos, r2);
    auto r3 = refusal(cc, i, double_spend);
    BOOST_TEST(r3.find("replayed_nonce") != std::string::npos, r3);
    // A validator will not prevote for it as a proposal either: refused
    // by the rule's name.
    auto unvoted = ledger::rebuild_block(wrong_root, [](schema::Block::Builder b) { b.initVotes(0); });
    auto v = cc.ask(*cc.c, i, "block_generator", ledger::make_proposal(unvoted, 0, -1, {}, keys[0]));
    BOOST_REQUIRE(!v);
    BOOST_TEST(describe(v.error()).find("stateRoot does not match") != std::string::npos,
               describe(v.error()));
    // Nor for a proposal signed by another than the round's proposer.
    auto w = cc.ask(*cc.c, i, "block_generator", ledger::make_proposal(*honest, 0, -1, {}, keys[1]));
    BOOST_REQUIRE(!w);
    BOOST_TEST(describe(w.error()).find("signature does not verify") != std::string::npos,
               describe(w.error()));
  }
  // A vote in a member's name signed by another key is refused by name.
  {
    auto forged = ledger::sign_vote(keys[1], agreed.height + 1, 0, schema::VoteKind::PREVOTE,
                                    ledger::header_hash(opened<schema::Block>{*honest}->getHeader()));
    auto fv = make_envelope<schema::Vote>([&](schema::Vote::Builder v) {
      opened<schema::Vote> src{forged};
      v.setHeight(src->getHeight());
      v.setRound(0);
      v.setKind(schema::VoteKind::PREVOTE);
      v.setBlockHash(src->getBlockHash());
      v.setVoter(kj::arrayPtr(cc.key_of(committee[2]).id().bytes.data(), 32));
      v.setSignature(src->getSignature());
    });
    // Alice's own signature, but she is no committee member.
    auto outsider = ledger::sign_vote(cc.alice, agreed.height + 1, 0, schema::VoteKind::PREVOTE,
                                      ledger::header_hash(opened<schema::Block>{*honest}->getHeader()));
    for (size_t i = 0; i < 3; ++i) {
      auto r = cc.ask(*cc.c, i, "block_generator", fv);
      BOOST_REQUIRE(!r);
      BOOST_TEST(describe(r.error()).find("vote: the signature does not verify") != std::string::npos,
                 describe(r.error()));
      auto o = cc.ask(*cc.c, i, "block_generator", outsider);
      BOOST_REQUIRE(!o);
      BOOST_TEST(describe(o.error()).find("is not in the committee of block") != std::string::npos,
                 describe(o.error()));
    }
    // A proposal whose proof of lock names a later round, or carries a vote
    // of another block, is refused by name.
    auto bad_pol = ledger::make_proposal(*honest, 0, 0, {}, keys[0]);
    auto other_vote = ledger::sign_vote(keys[1], agreed.height + 1, 0, schema::VoteKind::PREVOTE,
                                        ledger::hash256{});
    auto by_second = scratch->propose(keys[1], d); // round 1 is committee[1]'s
    BOOST_REQUIRE_MESSAGE(by_second, why(by_second));
    auto wrong_pol = ledger::make_proposal(*by_second, 1, 0, {other_vote}, keys[1]);
    for (size_t i = 0; i < 3; ++i) {
      auto r = cc.ask(*cc.c, i, "block_generator", bad_pol);
      BOOST_REQUIRE(!r);
      BOOST_TEST(describe(r.error()).find("polRound 0 must be -1 or a round before 0") != std::string::npos,
                 describe(r.error()));
      auto w = cc.ask(*cc.c, i, "block_generator", wrong_pol);
      BOOST_REQUIRE(!w);
      BOOST_TEST(describe(w.error()).find("is not a prevote for this block in round 0") != std::string::npos,
                 describe(w.error()));
    }
  }
  // Validators prevote for a valid proposal of the round's proposer, but
  // once per round: a second proposal for the same round gets no vote.
  auto d2 = d;
  d2.time_ms += 1;
  auto second = scratch->propose(keys[0], d2);
  BOOST_REQUIRE_MESSAGE(second, why(second));
  auto honest_hash = ledger::header_hash(opened<schema::Block>{*honest}->getHeader());
  for (size_t i = 0; i < 3; ++i) {
    auto vote = cc.ask(*cc.c, i, "block_generator", ledger::make_proposal(*honest, 0, -1, {}, keys[0]));
    // Two of three prevotes are a quorum: by the time the test asks the
    // last host, the first two may have finalized the block there already.
    if (!vote && describe(vote.error()).find(fmt::format("this host decides block {}", agreed.height + 2))
                   != std::string::npos)
      continue;
    BOOST_REQUIRE_MESSAGE(vote, "host " << i << ": " << why(vote));
    if (opened<schema::SubmitAck> ack{*vote}) {
      // Two of three prevotes are a quorum: a host may already have the
      // precommits too and decide the block on receipt of the proposal.
      BOOST_TEST(hex_of(ack->getHash()) == ledger::hex(honest_hash));
      continue;
    }
    opened<schema::Vote> v{*vote};
    BOOST_REQUIRE_MESSAGE(v, "host " << i << " answered neither a prevote nor an ack");
    BOOST_TEST(hex_of(v->getVoter()) == cc.nodes[i].id.hex());
    BOOST_TEST((v->getKind() == schema::VoteKind::PREVOTE));
    BOOST_TEST(hex_of(v->getBlockHash()) == ledger::hex(honest_hash));
    auto again = cc.ask(*cc.c, i, "block_generator", ledger::make_proposal(*second, 0, -1, {}, keys[0]));
    BOOST_REQUIRE(!again);
    auto e = describe(again.error());
    BOOST_TEST((e.find("already voted") != std::string::npos || e.find("this host decides block") != std::string::npos), e);
  }
  // The honest proposal had every prevote: it is the block final at that
  // height on every host, and the chain goes on.
  auto after = cc.wait_agreed(agreed.height + 1, 20s);
  for (size_t i = 0; i < 3; ++i) {
    auto final_block = cc.ask(*cc.c, i, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                                q.setBlockAt(agreed.height + 1);
                              }));
    BOOST_REQUIRE_MESSAGE(final_block, why(final_block));
    BOOST_TEST(ledger::header_hash(opened<schema::Block>{*final_block}->getHeader()) == honest_hash,
               "host " << i);
  }
  auto more = cc.produce(2);
  BOOST_TEST(more.height >= after.height + 2);

  // A member locked on another member's block proposes it again in a later
  // round, with its proof of lock: the block's generator is not the
  // round's proposer, and that is taken (a partition heal once stalled the
  // chain for good when it was refused). Without a proof of lock, a block
  // must be the proposer's own.
  auto scratch2 = scratch_copy("scratch2", more.height);
  auto tip2 = scratch2->tip();
  BOOST_REQUIRE(tip2 && tip2->height == more.height);
  auto committee2 = ledger::select_committee(tip2->hash, cc.g.candidates, cc.g.committee_size);
  BOOST_REQUIRE(committee2.size() == 3u);
  ledger::block_draft d3;
  d3.receipts = {cc.receipt(1000)};
  d3.time_ms = chain_cluster::now_ms();
  auto built = scratch2->propose(cc.key_of(committee2[0]), d3); // round 0's block
  BOOST_REQUIRE_MESSAGE(built, why(built));
  auto built_hash = ledger::header_hash(opened<schema::Block>{*built}->getHeader());
  std::vector<envelope> lock;
  for (size_t k = 0; k < 2; ++k) // a quorum of 3: two round-0 prevotes
    lock.push_back(ledger::sign_vote(cc.key_of(committee2[k]), more.height + 1, 0,
                                     schema::VoteKind::PREVOTE, built_hash));
  auto& proposer2 = committee2[2]; // round 2's proposer
  size_t target = 0;
  for (size_t i = 0; i < 3; ++i)
    if (cc.nodes[i].id == committee2[1])
      target = i; // a member other than the proposer
  auto as_new = cc.ask(*cc.c, target, "block_generator",
                       ledger::make_proposal(*built, 2, -1, {}, cc.key_of(proposer2)));
  BOOST_REQUIRE(!as_new);
  BOOST_TEST(describe(as_new.error()).find("a new block (no proof of lock) must be its own")
               != std::string::npos,
             describe(as_new.error()));
  auto reproposal = ledger::make_proposal(*built, 2, 0, lock, cc.key_of(proposer2));
  auto reproposed = cc.ask(*cc.c, target, "block_generator", reproposal);
  BOOST_TEST(static_cast<bool>(reproposed), (reproposed ? std::string{} : describe(reproposed.error())));
  for (size_t i = 0; i < 3; ++i)
    if (i != target)
      (void) cc.ask(*cc.c, i, "block_generator", reproposal);
  // And the chain goes on with it: the locked block is final everywhere.
  auto final2 = cc.wait_agreed(more.height + 1, 30s);
  BOOST_TEST(final2.hash == ledger::hex(built_hash));
}

BOOST_AUTO_TEST_CASE(an_idle_chain_commits_transfers_at_the_target_rate) {
  // No one trains: no work receipt ever arrives. A transfer is still final
  // on every host within a few target intervals (500 ms here), in an idle
  // block that claims no work; no block is made while nothing waits, and
  // idle blocks never come faster than the target interval.
  chain_cluster cc;
  auto block_at = [&](uint64_t height) {
    auto reply = cc.ask(*cc.c, 0, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                          q.setBlockAt(height);
                        }));
    BOOST_REQUIRE_MESSAGE(reply, why(reply));
    return *reply;
  };
  auto final_within = [&](uint64_t nonce, uint64_t bob_wants) {
    auto sent = std::chrono::steady_clock::now();
    auto ack = cc.ask(*cc.c, nonce % 3, "block_generator", cc.transfer(nonce, 25));
    BOOST_REQUIRE_MESSAGE(ack, why(ack));
    auto deadline = sent + 10s;
    for (;;) {
      bool everywhere = true;
      for (size_t i = 0; i < 3; ++i)
        everywhere = everywhere && cc.balance(i, cc.bob.id()) == bob_wants;
      if (everywhere)
        break;
      BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                            "transfer " << nonce << " not final on every host within 10 s\n"
                                        << cc.logs());
      std::this_thread::sleep_for(50ms);
    }
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - sent);
    BOOST_TEST_MESSAGE("transfer " << nonce << " final everywhere after " << took.count() << " ms");
  };
  std::this_thread::sleep_for(1500ms); // three intervals with nothing waiting
  BOOST_TEST(cc.tip(*cc.c, 0)->height == 0u);
  final_within(1, 25);
  final_within(2, 50);
  auto tip = cc.wait_agreed(2, 10s);
  BOOST_TEST(tip.height == 2u);
  uint64_t prev_time = 0;
  for (uint64_t h = 1; h <= 2; ++h) {
    opened<schema::Block> b{block_at(h)};
    BOOST_REQUIRE(b);
    BOOST_TEST(b->getReceipts().size() == 0u);
    BOOST_TEST(b->getHeader().getWorkUnits() == 0u);
    BOOST_TEST(b->getTransactions().size() == 1u);
    if (prev_time)
      BOOST_TEST(b->getHeader().getTimeMs() >= prev_time + 500, "idle blocks " << h - 1 << " and "
                                                               << h << " closer than 500 ms");
    prev_time = b->getHeader().getTimeMs();
  }
  // Nothing waits: no more blocks.
  std::this_thread::sleep_for(1500ms);
  BOOST_TEST(cc.tip(*cc.c, 0)->height == 2u);
  // An idle block that comes too soon, claims work, or carries nothing is
  // refused by every ledger.
  auto scratch = ledger::chain::open(cc.root / "idle-scratch", cc.g);
  BOOST_REQUIRE_MESSAGE(scratch, why(scratch));
  for (uint64_t h = 1; h <= 2; ++h)
    BOOST_REQUIRE(!(*scratch)->append(block_at(h)));
  ledger::block_draft d;
  d.transactions = {cc.transfer(3, 1)};
  d.time_ms = prev_time + 1;
  auto keys = std::vector<aicon::identity>{};
  for (auto& n : cc.nodes)
    keys.push_back(cc.key_of(n.id));
  auto proposed = (*scratch)->propose(keys[0], d);
  BOOST_REQUIRE_MESSAGE(proposed, why(proposed));
  opened<schema::Block> p{*proposed};
  BOOST_TEST(p->getHeader().getTimeMs() >= prev_time + 500); // propose keeps the rate itself
  auto too_soon = ledger::rebuild_block(*proposed, [&](schema::Block::Builder b) {
    b.getHeader().setTimeMs(prev_time + 100);
  });
  auto claims_work = ledger::rebuild_block(*proposed, [&](schema::Block::Builder b) {
    b.getHeader().setWorkUnits(1000);
  });
  auto with_votes = [&](envelope blk) {
    opened<schema::Block> o{blk};
    auto hash = ledger::header_hash(o->getHeader());
    auto sig = keys[0].sign(ledger::block_signing_bytes(hash));
    auto b = ledger::rebuild_block(blk, [&](schema::Block::Builder nb) {
      nb.setGeneratorSignature(kj::arrayPtr(sig.data(), sig.size()));
      nb.initVotes(0);
    });
    for (auto& k : keys)
      b = ledger::chain::add_vote(b, k);
    return b;
  };
  auto r1 = refusal(cc, 1, with_votes(too_soon));
  BOOST_TEST(r1.find("an idle block comes at most every target_interval_ms") != std::string::npos, r1);
  auto r2 = refusal(cc, 1, with_votes(claims_work));
  BOOST_TEST(r2.find("must claim no work units") != std::string::npos, r2);
  BOOST_TEST(cc.tip(*cc.c, 1)->height == 2u);
}

BOOST_AUTO_TEST_CASE(a_vote_lock_survives_a_kill_and_a_double_vote_costs_stake) {
  // Locks that outlast the test (10 min): whatever a validator promised
  // holds across SIGKILL and restart.
  chain_cluster cc{true};
  auto sent = cc.ask(*cc.c, 0, "block_generator", cc.transfer(1, 10));
  BOOST_REQUIRE_MESSAGE(sent, why(sent));
  auto agreed = cc.wait_agreed(1, 30s);
  auto scratch = ledger::chain::open(cc.root / "scratch", cc.g);
  BOOST_REQUIRE_MESSAGE(scratch, why(scratch));
  for (uint64_t h = 1; h <= agreed.height; ++h) {
    auto blk = cc.ask(*cc.c, 0, "ledger",
                      make_envelope<schema::LedgerQuery>([h](auto q) { q.setBlockAt(h); }));
    BOOST_REQUIRE_MESSAGE(blk, why(blk));
    BOOST_REQUIRE(!(*scratch)->append(*blk));
  }
  auto tip = (*scratch)->tip();
  auto committee = ledger::select_committee(tip->hash, cc.g.candidates, cc.g.committee_size);
  auto proposer = cc.key_of(committee[0]);
  ledger::block_draft d;
  d.receipts = {cc.receipt(1000)};
  d.time_ms = chain_cluster::now_ms();
  auto first = (*scratch)->propose(proposer, d);
  BOOST_REQUIRE_MESSAGE(first, why(first));
  d.time_ms += 1;
  auto second = (*scratch)->propose(proposer, d);
  BOOST_REQUIRE_MESSAGE(second, why(second));
  auto vote = cc.ask(*cc.c, 0, "block_generator", ledger::make_proposal(*first, 0, -1, {}, proposer));
  BOOST_REQUIRE_MESSAGE(vote, why(vote));
  // Killed and restarted, host a still will not vote for the other block.
  BOOST_TEST(cc.hosts[0].proc->stop(SIGKILL, 10s) == 128 + SIGKILL);
  cc.start(0);
  BOOST_REQUIRE_MESSAGE(cc.hosts[0].proc->wait_for_log("restored from the store", 20s),
                        cc.hosts[0].proc->log_text());
  auto relinked = cc.make_client();
  auto again = cc.ask(*relinked, 0, "block_generator", ledger::make_proposal(*second, 0, -1, {}, proposer));
  BOOST_REQUIRE_MESSAGE(!again, "host a voted for a second block at one height after a restart");
  BOOST_TEST(describe(again.error()).find("already voted") != std::string::npos,
             describe(again.error()));

  // A validator that signs both (its key used outside its host): anyone may
  // submit the two votes as evidence; the chain cuts half its stake, once.
  auto cheat = cc.key_of(committee[1]);
  auto evidence = [&](uint64_t nonce) {
    auto va = ledger::chain::make_vote(*first, cheat);
    auto vb = ledger::chain::make_vote(*second, cheat);
    return ledger::make_signed_transaction(cc.alice, ledger::chain_id(cc.g), nonce,
                                           [&](schema::Transaction::Body::Builder b) {
                                             auto dv = b.initDoubleVote();
                                             dv.setA(opened<schema::Vote>{va}.root());
                                             dv.setB(opened<schema::Vote>{vb}.root());
                                           });
  };
  auto stake_of = [&](size_t i, const node_id& who) {
    auto r = cc.ask(*relinked, i, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                      q.setAccount(kj::arrayPtr(who.bytes.data(), 32));
                    }));
    return r ? opened<schema::AccountInfo>{*r}->getStake() : uint64_t{0};
  };
  BOOST_TEST(stake_of(1, committee[1]) == chain_cluster::validator_stake);
  auto ack = cc.ask(*relinked, 1, "block_generator", evidence(2));
  BOOST_REQUIRE_MESSAGE(ack, why(ack));
  auto deadline = std::chrono::steady_clock::now() + 30s;
  while (stake_of(1, committee[1]) == chain_cluster::validator_stake
         && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(100ms);
  for (size_t i = 1; i < 3; ++i)
    BOOST_TEST(stake_of(i, committee[1]) == chain_cluster::validator_stake / 2, "host " << i);
  auto twice = cc.ask(*relinked, 2, "block_generator", evidence(3));
  BOOST_REQUIRE(!twice);
  BOOST_TEST(describe(twice.error()).find("already_punished") != std::string::npos,
             describe(twice.error()));
}

BOOST_AUTO_TEST_CASE(a_host_killed_twenty_times_verifies_and_catches_up) {
  chain_cluster cc;
  uint64_t seed = std::random_device{}();
  BOOST_TEST_MESSAGE("chain crash test seed " << seed);
  std::mt19937_64 rng{seed};
  // Work (and a transfer now and then) keeps arriving at the live hosts from
  // a client of its own while the test kills and restarts hosts.
  std::atomic<bool> feeding{true};
  std::atomic<int> down{-1};
  std::thread feeder{[&] {
    auto fc = cc.make_client();
    uint64_t k = 0, nonce = 0;
    while (feeding) {
      size_t target = k++ % 3;
      if (static_cast<int>(target) == down.load()) {
        continue;
      }
      if (!cc.ask(*fc, target, "block_generator", cc.receipt(100))) {
        // The link died with a killed host: dial the restarted one.
        (void) fc->connect(fmt::format("127.0.0.1:{}", cc.ports[target]), cc.nodes[target].id);
        continue;
      }
      if (k % 4 == 0) {
        auto n = nonce + 1;
        if (cc.ask(*fc, target, "block_generator", cc.transfer(n, 1)))
          nonce = n;
      }
      std::this_thread::sleep_for(120ms);
    }
  }};
  auto stop_feeding = [&] {
    feeding = false;
    if (feeder.joinable())
      feeder.join();
  };
  try {
    for (int round = 0; round < 20; ++round) {
      auto victim = static_cast<size_t>(rng() % 3);
      std::this_thread::sleep_for(std::chrono::milliseconds(300 + rng() % 900));
      down = static_cast<int>(victim);
      BOOST_REQUIRE(cc.hosts[victim].proc->running());
      cc.hosts[victim].proc->stop(SIGKILL, 5s);
      auto v = run_command({aicon_binary(), "chain", "verify", "--data-dir",
                            cc.nodes[victim].dir.string(), "--genesis", cc.genesis.string()},
                           60s);
      BOOST_REQUIRE_MESSAGE(v.exit_code == 0, "round " << round << " (seed " << seed
                                                       << "): verify failed:\n" << v.output);
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 800));
      cc.start(victim);
      // Its own client link died with it.
      auto id = cc.connect(*cc.c, victim);
      BOOST_REQUIRE_MESSAGE(id, why(id));
      down = -1;
      // It catches up to where the others were when it came back.
      auto others = cc.tip(*cc.c, (victim + 1) % 3);
      BOOST_REQUIRE_MESSAGE(others, why(others));
      auto deadline = std::chrono::steady_clock::now() + 30s;
      uint64_t mine = 0;
      while (std::chrono::steady_clock::now() < deadline) {
        auto t = cc.tip(*cc.c, victim);
        if (t && (mine = t->height) >= others->height)
          break;
        std::this_thread::sleep_for(100ms);
      }
      BOOST_REQUIRE_MESSAGE(mine >= others->height,
                            "round " << round << ": host " << victim << " stuck at " << mine
                                     << " < " << others->height << "\n" << cc.logs());
      // And the chain moves on with it: a block made after the restart
      // reaches the restarted host. The bound covers the worst stall the
      // round rules allow (a round per missing proposer, each waiting 1 s
      // for its proposal and 0.5 s more per round for votes), with
      // room for a loaded machine; a round's own length (random, as short
      // as 0.3 s) is no measure, as work arrives in bursts.
      auto target = std::max(mine, others->height) + 1;
      deadline = std::chrono::steady_clock::now() + 20s;
      while (std::chrono::steady_clock::now() < deadline) {
        auto t = cc.tip(*cc.c, victim);
        if (t && (mine = t->height) >= target)
          break;
        std::this_thread::sleep_for(100ms);
      }
      BOOST_REQUIRE_MESSAGE(mine >= target, "round " << round << " (seed " << seed << "): no block "
                                                     << target << " within 20 s of host "
                                                     << victim << " restarting\n"
                                                     << cc.logs());
      BOOST_TEST_MESSAGE("round " << round << ": killed host " << victim
                                  << ", caught up, then saw block " << mine);
    }
  } catch (...) {
    stop_feeding();
    throw;
  }
  stop_feeding();
  // Receipts still pending may earn a block after the tips first agree:
  // wait until the agreed tip stays the same for a while.
  auto final_tip = cc.wait_agreed(0, 60s);
  for (int i = 0; i < 20; ++i) {
    std::this_thread::sleep_for(1500ms);
    auto again = cc.wait_agreed(0, 60s);
    if (again == final_tip)
      break;
    final_tip = again;
  }
  BOOST_TEST_MESSAGE("final tip " << final_tip.height);
  for (size_t i = 0; i < 3; ++i) {
    auto v = run_command({aicon_binary(), "chain", "verify", "--data-dir",
                          cc.nodes[i].dir.string(), "--genesis", cc.genesis.string()},
                         60s);
    BOOST_REQUIRE_MESSAGE(v.exit_code == 0, v.output);
    BOOST_TEST(v.output.find(final_tip.root) != std::string::npos, v.output);
  }
}

BOOST_AUTO_TEST_SUITE_END()
