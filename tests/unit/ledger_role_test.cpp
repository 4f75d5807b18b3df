// The ledger role inside real hosts: queries and block submission, locally
// and from another host, through the directory.
#include <boost/test/unit_test.hpp>

#include <thread>

#include <caf/all.hpp>

#include "actors/ledger/chain.hpp"
#include "actors/roles.hpp"
#include "runtime/directory.hpp"
#include "runtime/host.hpp"
#include "runtime/tls.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace std::chrono_literals;

namespace {

aicon::identity key(uint8_t n) {
  std::array<uint8_t, 32> seed{};
  seed[0] = n;
  seed[2] = 0x3d;
  return aicon::identity::from_seed(seed);
}

caf::expected<aicon::envelope> ask(host& from, const std::string& name, aicon::envelope req) {
  auto dst = lookup_blocking(from.system(), from.directory(), name, 5s);
  if (!dst)
    return dst.error();
  caf::scoped_actor self{from.system()};
  caf::expected<aicon::envelope> result = make_error(errc::internal, "no answer");
  self->request(*dst, 10s, std::move(req))
    .receive(
      [&](aicon::envelope& e) {
        if (auto err = error_of_reply(e))
          result = err;
        else
          result = std::move(e);
      },
      [&](caf::error& e) { result = e; });
  return result;
}

aicon::envelope query(std::function<void(schema::LedgerQuery::Builder)> fill) {
  return make_envelope<schema::LedgerQuery>([&](schema::LedgerQuery::Builder q) { fill(q); });
}

struct ledger_hosts {
  test::temp_dir dir;
  aicon::identity generator = key(1), alice = key(2), bob = key(3);
  ledger::genesis_config g;
  std::unique_ptr<host> a, b;

  ledger_hosts() {
    g.time_ms = 5000;
    g.candidates = {{generator.id(), 1}};
    g.committee_size = 1;
    g.initial_difficulty = 1;
    g.allocations = {{alice.id(), 100, 0}};
    auto genesis = dir / "genesis.toml";
    BOOST_REQUIRE(!write_file_atomic(genesis, ledger::to_toml(g), 0644));
    auto ia = create_identity(dir / "a");
    auto ib = create_identity(dir / "b");
    BOOST_REQUIRE(ia && ib);
    BOOST_REQUIRE(trust_certificate(dir / "a", dir / "b" / node_cert_file));
    BOOST_REQUIRE(trust_certificate(dir / "b", dir / "a" / node_cert_file));
    host_config cb;
    cb.data_dir = dir / "b";
    cb.allow = {ia->id()};
    cb.roles = {"directory", "ledger"};
    cb.genesis = genesis;
    auto hb = host::start(cb, role_table());
    BOOST_REQUIRE_MESSAGE(hb, test::why(hb));
    b = std::move(*hb);
    host_config ca;
    ca.data_dir = dir / "a";
    ca.roles = {"directory", "ledger"};
    ca.genesis = genesis;
    ca.connect = {peer_entry{net_address{"127.0.0.1", b->port()}, ib->id()}};
    auto ha = host::start(ca, role_table());
    BOOST_REQUIRE_MESSAGE(ha, test::why(ha));
    a = std::move(*ha);
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!lookup_blocking(a->system(), a->directory(), "ledger@" + b->id().hex(), 5s)) {
      BOOST_REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(20ms);
    }
  }

  /// Block 1 (alice pays bob 40), built on a scratch store with the same genesis.
  aicon::envelope block_one() {
    auto scratch = ledger::chain::open(dir / "scratch", g);
    BOOST_REQUIRE(scratch);
    ledger::block_draft d;
    d.transactions = {ledger::make_signed_transaction(alice, 1, [&](auto body) {
      auto t = body.initTransfer();
      t.setTo(kj::arrayPtr(bob.id().bytes.data(), 32));
      t.setAmount(40);
    })};
    d.time_ms = 7000;
    d.work_units = 1;
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
