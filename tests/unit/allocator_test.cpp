// The allocator's book (actors/allocator/pool): gang semantics under
// contention, locality against price, offer and lease expiry with
// replacement, preemption by priority, every refusal by reason, the index
// agreeing with a full scan on random pools, and a restore keeping leases.
#include <boost/test/unit_test.hpp>

#include "actors/allocator/pool.hpp"
#include "actors/trainer/model.hpp"

using namespace aicon;
using namespace aicon::alloc;

namespace {

node_id node(uint8_t b) {
  node_id n;
  n.bytes.fill(b);
  return n;
}

job_id job(uint8_t b) {
  job_id j;
  j.fill(b);
  return j;
}

offer make_offer(uint8_t id, uint32_t slots, uint64_t price, const std::string& site,
                 int64_t expires = 1'000'000) {
  offer o;
  o.trainer = node(id);
  o.slots = slots;
  o.price = price;
  o.site = site;
  o.memory = 8ull << 30;
  o.expires_ms = expires;
  return o;
}

ask make_ask(uint8_t j, uint32_t k, uint32_t priority = 0) {
  ask a;
  a.job = job(j);
  a.k = k;
  a.priority = priority;
  a.lease_ms = 10'000;
  return a;
}

uint32_t slots_of(const decision& d) {
  uint32_t n = 0;
  for (auto& l : d.leases)
    n += l.count;
  return n;
}

} // namespace

BOOST_AUTO_TEST_SUITE(allocator)

BOOST_AUTO_TEST_CASE(gang_allocation_all_or_nothing_under_contention) {
  pool p;
  for (uint8_t i = 1; i <= 3; ++i)
    BOOST_REQUIRE(p.put_offer(make_offer(i, 2, 10, "a")).empty());
  auto a = p.allocate(make_ask(1, 4), 0);
  BOOST_TEST((a.what == decision::kind::granted));
  BOOST_TEST(slots_of(a) == 4u);
  auto b = p.allocate(make_ask(2, 4), 0);
  BOOST_TEST((b.what == decision::kind::waiting));
  BOOST_TEST(b.leases.empty()); // nobody gets a partial set
  BOOST_TEST(p.free_slots() == 2u);
  BOOST_TEST_MESSAGE(b.why);
  BOOST_TEST(b.why.find("2 free") != std::string::npos);
  // A small ask that would fit the 2 free slots does not jump the queue.
  auto c = p.allocate(make_ask(3, 2), 0);
  BOOST_TEST((c.what == decision::kind::waiting));
  BOOST_TEST(c.why.find("behind 1 earlier") != std::string::npos);
  auto ev = p.release(job(1), 1);
  BOOST_REQUIRE(ev.granted.size() == 2u);
  BOOST_TEST((ev.granted[0].first == job(2)));
  BOOST_TEST(slots_of(ev.granted[0].second) == 4u);
  BOOST_TEST((ev.granted[1].first == job(3)));
  BOOST_TEST(slots_of(ev.granted[1].second) == 2u);
  BOOST_TEST(p.free_slots() == 0u);
}

BOOST_AUTO_TEST_CASE(nearest_to_the_data_wins_at_equal_price_and_price_can_outweigh) {
  pool p;
  p.set_rtt("near", "data", 1);
  p.set_rtt("far", "data", 50);
  for (uint8_t i = 1; i <= 4; ++i)
    p.put_offer(make_offer(i, 1, 100, i <= 2 ? "far" : "near"));
  auto a = make_ask(1, 2);
  a.data_site = "data";
  auto d = p.allocate(a, 0);
  BOOST_REQUIRE((d.what == decision::kind::granted));
  for (auto& l : d.leases)
    BOOST_TEST((l.trainer == node(3) || l.trainer == node(4)));
  p.release(job(1), 0);
  // Far and much cheaper: 10 + 50 ms beats 100 + 1 ms.
  p.put_offer(make_offer(1, 1, 10, "far"));
  p.put_offer(make_offer(2, 1, 10, "far"));
  d = p.allocate(a, 0);
  for (auto& l : d.leases)
    BOOST_TEST((l.trainer == node(1) || l.trainer == node(2)));
  // A better rating breaks an otherwise equal score.
  p.release(job(1), 0);
  auto rated = make_offer(4, 1, 100, "near");
  rated.rating = 0.9;
  p.put_offer(rated);
  auto one = make_ask(2, 1);
  one.data_site = "data";
  one.max_price = 100; // rules out nothing here
  p.put_offer(make_offer(1, 1, 100, "far"));
  p.put_offer(make_offer(2, 1, 100, "far"));
  d = p.allocate(one, 0);
  BOOST_REQUIRE(d.leases.size() == 1u);
  BOOST_TEST((d.leases[0].trainer == node(4)));
}

BOOST_AUTO_TEST_CASE(silent_trainers_lose_leases_and_a_replacement_is_offered) {
  pool p;
  p.put_offer(make_offer(1, 1, 10, "a", 5'000));
  p.put_offer(make_offer(2, 1, 10, "a", 5'000));
  p.put_offer(make_offer(3, 1, 20, "a", 5'000));
  auto d = p.allocate(make_ask(1, 2), 0);
  BOOST_REQUIRE(slots_of(d) == 2u);
  // Trainers 2 and 3 heartbeat; 1 goes silent.
  p.put_offer(make_offer(2, 1, 10, "a", 20'000));
  p.put_offer(make_offer(3, 1, 20, "a", 20'000));
  p.renew(job(1), 4'000, 10'000);
  auto ev = p.tick(6'000);
  BOOST_REQUIRE(ev.lost.size() == 1u);
  BOOST_TEST((ev.lost[0].first == job(1)));
  BOOST_TEST((ev.lost[0].second == node(1)));
  BOOST_TEST(p.offer_count() == 2u);
  auto r = p.replace(job(1), node(1), 6'000);
  BOOST_REQUIRE((r.what == decision::kind::granted));
  BOOST_TEST((r.leases[0].trainer == node(3)));
  // A job that stops renewing loses its leases; the slots come back.
  ev = p.tick(17'000);
  BOOST_TEST(ev.expired.size() == 1u);
  BOOST_TEST(p.free_slots() == 2u);
  // No replacement when nothing fits.
  auto none = p.replace(job(9), node(1), 15'000);
  BOOST_TEST((none.what == decision::kind::refused));
  BOOST_TEST(none.why.find("holds no trainers") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_higher_priority_job_preempts_and_the_lower_one_resumes) {
  pool p;
  for (uint8_t i = 1; i <= 4; ++i)
    p.put_offer(make_offer(i, 1, 10, "a"));
  auto low = p.allocate(make_ask(1, 4, 1), 0);
  BOOST_REQUIRE(slots_of(low) == 4u);
  auto high = p.allocate(make_ask(2, 3, 5), 1);
  BOOST_REQUIRE((high.what == decision::kind::waiting));
  BOOST_REQUIRE(high.preempt.size() == 1u);
  BOOST_TEST((high.preempt[0] == job(1)));
  // The low job checkpoints, releases and asks again (it waits now).
  auto ev = p.release(job(1), 2);
  BOOST_REQUIRE(ev.granted.size() == 1u);
  BOOST_TEST((ev.granted[0].first == job(2)));
  auto again = p.allocate(make_ask(1, 4, 1), 3);
  BOOST_TEST((again.what == decision::kind::waiting));
  BOOST_TEST(again.preempt.empty()); // never preempts a higher priority
  ev = p.release(job(2), 4);
  BOOST_REQUIRE(ev.granted.size() == 1u);
  BOOST_TEST((ev.granted[0].first == job(1)));
  BOOST_TEST(slots_of(ev.granted[0].second) == 4u);
}

BOOST_AUTO_TEST_CASE(refusals_say_why) {
  pool p;
  BOOST_TEST(p.put_offer(make_offer(1, 0, 10, "a")).find("at least one slot") != std::string::npos);
  auto bad = make_offer(1, 1, 10, "a");
  bad.rating = 2;
  BOOST_TEST(p.put_offer(bad).find("outside 0..1") != std::string::npos);
  p.put_offer(make_offer(1, 2, 10, "a"));
  p.put_offer(make_offer(2, 2, 50, "a"));
  auto zero = p.allocate(make_ask(1, 0), 0);
  BOOST_TEST(zero.why.find("k >= 1") != std::string::npos);
  auto cheap = make_ask(1, 3);
  cheap.max_price = 20;
  auto d = p.allocate(cheap, 0);
  BOOST_TEST((d.what == decision::kind::refused));
  BOOST_TEST(d.why.find("only 2 trainers in all") != std::string::npos);
  auto gpu = make_ask(1, 1);
  gpu.device = "gpu:h100";
  BOOST_TEST(p.allocate(gpu, 0).why.find("only 0 trainers") != std::string::npos);
  BOOST_REQUIRE((p.allocate(make_ask(1, 2), 0).what == decision::kind::granted));
  BOOST_TEST(p.allocate(make_ask(1, 1), 0).why.find("already holds") != std::string::npos);
  // Shrinking an offer below what is leased is refused.
  auto shrink = make_offer(1, 1, 10, "a");
  BOOST_TEST(p.put_offer(shrink).find("2 are leased") != std::string::npos);
  // A waiting ask past its deadline is refused on tick.
  auto late = make_ask(2, 4);
  late.deadline_ms = 100;
  BOOST_TEST((p.allocate(late, 0).what == decision::kind::waiting));
  auto ev = p.tick(200);
  BOOST_REQUIRE(ev.refused.size() == 1u);
  BOOST_TEST(ev.refused[0].second.find("deadline") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(the_index_chooses_what_a_full_scan_chooses) {
  train::rng gen{7};
  for (int round = 0; round < 20; ++round) {
    pool p;
    std::vector<std::string> sites{"s0", "s1", "s2", "s3", "s4"};
    for (auto& s : sites)
      p.set_rtt(s, "data", gen.uniform() * 100);
    for (int i = 0; i < 300; ++i) {
      offer o;
      o.trainer.bytes[0] = static_cast<uint8_t>(i);
      o.trainer.bytes[1] = static_cast<uint8_t>(i >> 8);
      o.slots = 1 + static_cast<uint32_t>(gen.uniform() * 4);
      o.price = static_cast<uint64_t>(gen.uniform() * 100);
      o.rating = gen.uniform();
      o.memory = static_cast<uint64_t>(gen.uniform() * 16) << 30;
      o.device = gen.uniform() < 0.8 ? "cpu" : "gpu:h100";
      o.site = sites[static_cast<size_t>(gen.uniform() * sites.size())];
      o.expires_ms = gen.uniform() < 0.95 ? 1'000'000 : 10; // a few are stale
      p.put_offer(o);
    }
    for (int q = 0; q < 50; ++q) {
      ask a;
      a.job[0] = static_cast<uint8_t>(q);
      a.job[1] = static_cast<uint8_t>(round);
      a.k = 1 + static_cast<uint32_t>(gen.uniform() * 8);
      a.memory = static_cast<uint64_t>(gen.uniform() * 12) << 30;
      a.max_price = 20 + static_cast<uint64_t>(gen.uniform() * 100);
      a.device = gen.uniform() < 0.8 ? "cpu" : "gpu:h100";
      a.data_site = gen.uniform() < 0.5 ? "data" : "s2";
      auto want = p.choose_by_scan(a, 100);
      auto d = p.allocate(a, 100);
      if (want.empty()) {
        BOOST_TEST((d.what != decision::kind::granted));
        p.release(a.job, 100); // withdraw it, so nothing waits ahead of the next
        continue;
      }
      BOOST_REQUIRE((d.what == decision::kind::granted));
      BOOST_REQUIRE(d.leases.size() == want.size());
      for (size_t i = 0; i < want.size(); ++i) {
        BOOST_TEST((d.leases[i].trainer == want[i].first));
        BOOST_TEST(d.leases[i].count == want[i].second);
      }
      if (gen.uniform() < 0.5)
        p.release(a.job, 100);
    }
  }
}

BOOST_AUTO_TEST_CASE(restore_keeps_leases_and_free_slots) {
  pool p;
  for (uint8_t i = 1; i <= 3; ++i)
    p.put_offer(make_offer(i, 2, 10 * i, "a"));
  p.allocate(make_ask(1, 3), 0);
  pool q;
  q.restore(p.offers(), p.leases(), p.asks_held());
  BOOST_TEST(q.free_slots() == p.free_slots());
  BOOST_TEST(q.leases().size() == p.leases().size());
  // The same next choice, and replacements still know the job's ask.
  BOOST_TEST((q.allocate(make_ask(2, 3), 0).leases[0].trainer
              == p.allocate(make_ask(2, 3), 0).leases[0].trainer));
  BOOST_TEST((q.replace(job(1), node(1), 0).what == decision::kind::refused)); // all taken
  BOOST_TEST(q.release(job(2), 0).granted.empty());
  BOOST_TEST((q.replace(job(1), node(1), 0).what == decision::kind::granted));
}

BOOST_AUTO_TEST_SUITE_END()
