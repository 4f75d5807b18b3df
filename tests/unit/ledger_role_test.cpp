// The ledger role inside real hosts: queries and block submission, locally
// and from another host, through the directory.
#include <boost/test/unit_test.hpp>

#include <thread>

#include <caf/all.hpp>

#include "actors/ledger/chain.hpp"
#include "actors/ledger/work.hpp"
#include "actors/roles.hpp"
#include "runtime/directory.hpp"
#include "runtime/host.hpp"
#include "runtime/tls.hpp"
#include "host_pair.hpp"

using namespace aicon;
using namespace std::chrono_literals;
using aicon::test::ask;

namespace {

aicon::identity key(uint8_t n) {
  return test::seeded_key(n, 0x3d);
}

aicon::envelope query(std::function<void(schema::LedgerQuery::Builder)> fill) {
  return make_envelope<schema::LedgerQuery>([&](schema::LedgerQuery::Builder q) { fill(q); });
}

struct ledger_hosts : test::host_pair {
  aicon::identity generator = key(1), alice = key(2), bob = key(3);
  ledger::genesis_config g;

  ledger_hosts() {
    g.time_ms = 5000;
    g.candidates = {{generator.id(), 1}};
    g.authorities = {generator.id()}; // also countersigns the test's work receipt
    g.committee_size = 1;
    g.initial_difficulty = 1;
    g.allocations = {{alice.id(), 100, 0}};
    auto genesis = dir / "genesis.toml";
    BOOST_REQUIRE(!write_file_atomic(genesis, ledger::to_toml(g), 0644));
    start(
      [&](host_config& c) {
        c.roles = {"directory", "ledger"};
        c.genesis = genesis;
      },
      [&](host_config& c) {
        c.roles = {"directory", "ledger"};
        c.genesis = genesis;
      },
      "ledger");
  }

  /// Block 1 (alice pays bob 40), built on a scratch store with the same genesis.
  aicon::envelope block_one() {
    auto scratch = ledger::chain::open(dir / "scratch", g);
    BOOST_REQUIRE(scratch);
    ledger::block_draft d;
    d.transactions = {ledger::make_signed_transaction(alice, ledger::chain_id(g), 1, [&](auto body) {
      auto t = body.initTransfer();
      t.setTo(kj::arrayPtr(bob.id().bytes.data(), 32));
      t.setAmount(40);
    })};
    d.time_ms = 7000;
    d.receipts = {ledger::make_work_receipt(generator, generator, ledger::work_facts{.units = 1})};
    auto blk = (*scratch)->propose(generator, d);
    BOOST_REQUIRE(blk);
    return ledger::chain::add_vote(*blk, generator);
  }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(ledger_role, ledger_hosts)

BOOST_AUTO_TEST_CASE(blocks_submitted_locally_or_remotely_apply_once) {
  auto blk = block_one();
  for (std::string target : {std::string{"ledger"}, "ledger@" + b->id().hex()}) {
    auto tip0 = ask(*a, target, query([](auto q) { q.setTip(); }));
    BOOST_REQUIRE_MESSAGE(tip0, test::why(tip0));
    BOOST_TEST(opened<schema::TipInfo>{*tip0}->getHeight() == 0u);
    auto tip1 = ask(*a, target, blk);
    BOOST_REQUIRE_MESSAGE(tip1, test::why(tip1));
    BOOST_TEST(opened<schema::TipInfo>{*tip1}->getHeight() == 1u);
    auto again = ask(*a, target, blk);
    BOOST_REQUIRE(!again);
    BOOST_TEST(describe(again.error()).find("does not follow the tip") != std::string::npos,
               describe(again.error()));
    auto bal = ask(*a, target, query([&](auto q) {
      q.setAccount(kj::arrayPtr(bob.id().bytes.data(), 32));
    }));
    BOOST_REQUIRE(bal);
    BOOST_TEST(opened<schema::AccountInfo>{*bal}->getBalance() == 40u);
    auto stored = ask(*a, target, query([](auto q) { q.setBlockAt(1); }));
    BOOST_REQUIRE(stored);
    BOOST_TEST(opened<schema::Block>{*stored}->getTransactions().size() == 1u);
  }
}

BOOST_AUTO_TEST_CASE(bad_queries_name_the_problem) {
  auto none = ask(*a, "ledger", query([](auto q) { q.initAsset(32); }));
  BOOST_REQUIRE(!none);
  BOOST_TEST(code_of(none.error()) == errc::not_found, describe(none.error()));
  auto short_id = ask(*a, "ledger", query([](auto q) { q.initAccount(5); }));
  BOOST_REQUIRE(!short_id);
  BOOST_TEST(code_of(short_id.error()) == errc::invalid_argument);
  auto missing = ask(*a, "ledger", query([](auto q) { q.setBlockAt(99); }));
  BOOST_REQUIRE(!missing);
  BOOST_TEST(code_of(missing.error()) == errc::not_found);
}

BOOST_AUTO_TEST_CASE(a_ledger_without_genesis_refuses_to_start) {
  auto id = create_identity(dir / "c");
  BOOST_REQUIRE(id);
  host_config cc;
  cc.data_dir = dir / "c";
  cc.roles = {"directory", "ledger"};
  auto hc = host::start(cc, role_table());
  BOOST_REQUIRE(!hc);
  BOOST_TEST(describe(hc.error()).find("genesis") != std::string::npos, describe(hc.error()));
}

BOOST_AUTO_TEST_SUITE_END()
