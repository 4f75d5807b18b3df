#include <boost/test/unit_test.hpp>

#include "actors/block_generator/mempool.hpp"
#include "chain_util.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace aicon::pov;

namespace {

aicon::identity wallet(uint8_t n) {
  return test::seeded_key(n, 0x77);
}

aicon::envelope pay(const aicon::identity& from, uint64_t nonce, uint64_t amount = 1) {
  auto to = wallet(50);
  return ledger::make_signed_transaction(from, ledger::hash256{}, nonce, [&](auto body) {
    auto t = body.initTransfer();
    t.setTo(kj::arrayPtr(to.id().bytes.data(), 32));
    t.setAmount(amount);
  });
}

uint64_t nonce_of(const aicon::envelope& e) {
  return opened<schema::SignedTransaction>{e}->getTx().getNonce();
}

std::map<node_id, uint64_t> committed;
uint64_t lookup(const node_id& who) {
  auto i = committed.find(who);
  return i == committed.end() ? 0 : i->second;
}

} // namespace

BOOST_AUTO_TEST_SUITE(mempool_rules)

BOOST_AUTO_TEST_CASE(entry_checks_name_what_is_wrong) {
  committed.clear();
  mempool pool;
  auto alice = wallet(1);
  BOOST_TEST(!static_cast<bool>(pool.add(pay(alice, 1), lookup)));
  auto dup = pool.add(pay(alice, 1), lookup);
  BOOST_REQUIRE(dup);
  BOOST_TEST(describe(dup).find("duplicate") != std::string::npos, describe(dup));
  auto same_nonce = pool.add(pay(alice, 1, 2), lookup); // different tx, same nonce
  BOOST_REQUIRE(same_nonce);
  BOOST_TEST(describe(same_nonce).find("duplicate") != std::string::npos);
  committed[alice.id()] = 5;
  auto old = pool.add(pay(alice, 3), lookup);
  BOOST_REQUIRE(old);
  BOOST_TEST(describe(old).find("replayed_nonce") != std::string::npos);
  // A forged signature.
  auto good = pay(alice, 9);
  auto forged = test::with_forged_signature(good);
  auto bad = pool.add(forged, lookup);
  BOOST_REQUIRE(bad);
  BOOST_TEST(describe(bad).find("bad_signature") != std::string::npos);
  BOOST_TEST(pool.size() == 1u);
}

BOOST_AUTO_TEST_CASE(balance_is_checked_on_entry_across_pending_transactions) {
  committed.clear();
  mempool pool;
  auto alice = wallet(2);
  auto balance = [](const node_id&) -> uint64_t { return 100; };
  BOOST_TEST(!static_cast<bool>(pool.add(pay(alice, 1, 60), lookup, balance)));
  // 60 pending + 50 > 100: the second spend of the same funds is refused.
  auto over = pool.add(pay(alice, 2, 50), lookup, balance);
  BOOST_REQUIRE(over);
  BOOST_TEST(describe(over).find("rule overdraft") != std::string::npos, describe(over));
  BOOST_TEST(!static_cast<bool>(pool.add(pay(alice, 2, 40), lookup, balance)));
  // An amount that would overflow the running sum is an overdraft too.
  auto huge = pool.add(pay(alice, 3, UINT64_MAX), lookup, balance);
  BOOST_REQUIRE(huge);
  BOOST_TEST(describe(huge).find("rule overdraft") != std::string::npos, describe(huge));
  BOOST_TEST(pool.size() == 2u);
}

BOOST_AUTO_TEST_CASE(bounds_hold_in_total_and_per_author) {
  committed.clear();
  mempool pool{mempool_limits{5, 2}};
  auto a = wallet(1), b = wallet(2), c = wallet(3);
  BOOST_TEST(!static_cast<bool>(pool.add(pay(a, 1), lookup)));
  BOOST_TEST(!static_cast<bool>(pool.add(pay(a, 2), lookup)));
  auto third = pool.add(pay(a, 3), lookup);
  BOOST_REQUIRE(third);
  BOOST_TEST(describe(third).find("full") != std::string::npos);
  BOOST_TEST(!static_cast<bool>(pool.add(pay(b, 1), lookup)));
  BOOST_TEST(!static_cast<bool>(pool.add(pay(b, 2), lookup)));
  BOOST_TEST(!static_cast<bool>(pool.add(pay(c, 1), lookup)));
  BOOST_TEST(static_cast<bool>(pool.add(pay(c, 2), lookup))); // 5 in total
  BOOST_TEST(pool.size() == 5u);
}

BOOST_AUTO_TEST_CASE(take_respects_nonce_order_and_gaps_and_prune_forgets) {
  committed.clear();
  mempool pool;
  auto a = wallet(1), b = wallet(2);
  BOOST_TEST(!static_cast<bool>(pool.add(pay(a, 2), lookup))); // out of order
  BOOST_TEST(!static_cast<bool>(pool.add(pay(b, 1), lookup)));
  BOOST_TEST(!static_cast<bool>(pool.add(pay(a, 1), lookup)));
  BOOST_TEST(!static_cast<bool>(pool.add(pay(a, 4), lookup))); // gap at 3
  auto picked = pool.take(10, lookup);
  BOOST_REQUIRE(picked.size() == 3u); // a1, a2, b1; a4 waits for a3
  BOOST_TEST(nonce_of(picked[0]) == 1u);
  BOOST_TEST(nonce_of(picked[1]) == 2u);
  BOOST_TEST(pool.take(1, lookup).size() == 1u);
  committed[a.id()] = 2;
  committed[b.id()] = 1;
  pool.prune(lookup);
  BOOST_TEST(pool.size() == 1u); // a4 stays
  BOOST_TEST(pool.take(10, lookup).empty());
  BOOST_TEST(!static_cast<bool>(pool.add(pay(a, 3), lookup)));
  BOOST_TEST(pool.take(10, lookup).size() == 2u);
  // A pruned transaction can be added again only if its nonce is not committed.
  BOOST_TEST(static_cast<bool>(pool.add(pay(a, 1), lookup)));
}

BOOST_AUTO_TEST_SUITE_END()
