// The actor ring's allreduce in one process: for 1..8 ranks and sizes that
// do and do not divide by the rank count (empty and one element included),
// sums equal the serial sum (exact for integers in floats, 1e-6 relative for
// random floats), results are bit-identical run to run whatever the timing,
// early chunks from a faster neighbour wait within the credits, fusion
// gives the same sums, and a dead neighbour fails the collective instead of
// hanging it.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>

#include <caf/all.hpp>

#include "actors/trainer/model.hpp"
#include "transport/ring_reducer.hpp"
#include "runtime/envelope.hpp"
#include "runtime/error.hpp"
#include "runtime/system.hpp"
#include "schemas/trainer.capnp.h"
#include "test_util.hpp"

using namespace aicon;
using namespace aicon::train;

namespace {

struct ring_fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  std::vector<caf::actor> all; ///< stopped before the system (they hold each other)
  ring_fixture() {
    configure_system(cfg, system_options{});
    sys = std::make_unique<caf::actor_system>(cfg);
  }
  ~ring_fixture() {
    for (auto& m : all)
      caf::anon_send_exit(m, caf::exit_reason::user_shutdown);
    all.clear();
  }

  /// N members wired into a ring.
  std::vector<caf::actor> make_ring(uint32_t n, const ring_options& opts, uint8_t id = 1) {
    ring_id ring{};
    ring[0] = id;
    std::vector<caf::actor> members;
    for (uint32_t r = 0; r < n; ++r)
      members.push_back(spawn_ring_member(*sys, ring, r, n, opts));
    for (uint32_t r = 0; r < n; ++r)
      connect_ring(members[r], members[(r + 1) % n]);
    all.insert(all.end(), members.begin(), members.end());
    return members;
  }

  /// Runs one allreduce on every rank, each from its own thread (rank r
  /// starts after delay_ms[r]); returns each rank's status.
  std::vector<std::string> run(std::vector<caf::actor>& members, std::vector<std::vector<float>>& bufs,
                               const ring_options& opts, gpu::reduce_op op = gpu::reduce_op::sum,
                               std::vector<int> delay_ms = {}) {
    auto n = static_cast<uint32_t>(members.size());
    std::vector<std::string> status(n);
    std::vector<std::thread> threads;
    for (uint32_t r = 0; r < n; ++r)
      threads.emplace_back([&, r] {
        if (r < delay_ms.size())
          std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms[r]));
        ring_reducer red{*sys, members[r], r, n, opts};
        status[r] = red.allreduce(bufs[r], op);
      });
    for (auto& t : threads)
      t.join();
    return status;
  }
};

std::vector<std::vector<float>> integer_inputs(uint32_t ranks, size_t len) {
  std::vector<std::vector<float>> bufs(ranks, std::vector<float>(len));
  for (uint32_t r = 0; r < ranks; ++r)
    for (size_t i = 0; i < len; ++i)
      bufs[r][i] = static_cast<float>(static_cast<int>((i * 31 + r * 17) % 2001) - 1000);
  return bufs;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(ring, ring_fixture)

BOOST_AUTO_TEST_CASE(sums_are_exact_for_integers_for_every_ring_size) {
  ring_options opts;
  opts.chunk_bytes = 64; // 16 floats: many chunks, real pipelining
  opts.timeout_ms = 5000;
  for (uint32_t n = 1; n <= 8; ++n) {
    auto members = make_ring(n, opts, static_cast<uint8_t>(n));
    for (size_t len : {size_t{0}, size_t{1}, size_t{n - 1}, size_t{n}, size_t{n + 1}, size_t{17},
                       size_t{1000}, size_t{4099}}) {
      auto bufs = integer_inputs(n, len);
      std::vector<float> want(len, 0.0f);
      for (auto& b : bufs)
        for (size_t i = 0; i < len; ++i)
          want[i] += b[i];
      auto status = run(members, bufs, opts);
      for (uint32_t r = 0; r < n; ++r) {
        BOOST_TEST(status[r].empty(), "n=" << n << " len=" << len << " rank " << r << ": " << status[r]);
        BOOST_TEST((bufs[r] == want), "n=" << n << " len=" << len << " rank " << r);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(random_floats_within_1e6_and_bit_identical_run_to_run) {
  ring_options opts;
  opts.chunk_bytes = 1024;
  opts.credits = 2;
  const uint32_t n = 5;
  const size_t len = 100003;
  auto members = make_ring(n, opts);
  std::vector<std::vector<float>> inputs(n, std::vector<float>(len));
  rng gen{9};
  for (auto& b : inputs)
    for (auto& v : b)
      v = (gen.uniform() * 2 - 1) * 1000;
  std::vector<std::vector<float>> first;
  for (int run_no = 0; run_no < 3; ++run_no) {
    auto bufs = inputs;
    // Different start times each run: the sums must not depend on them.
    std::vector<int> delays{run_no * 7 % 20, 0, run_no * 13 % 20, 5, 0};
    auto status = run(members, bufs, opts, gpu::reduce_op::average, delays);
    for (auto& s : status)
      BOOST_REQUIRE_MESSAGE(s.empty(), s);
    size_t bad = 0;
    for (size_t i = 0; i < len; ++i) {
      double sum = 0, mag = 0;
      for (auto& b : inputs) {
        sum += b[i];
        mag += std::abs(b[i]);
      }
      double want = sum / n;
      bad += std::abs(bufs[0][i] - want) > 1e-6 * mag ? 1 : 0;
    }
    BOOST_TEST(bad == 0u);
    for (uint32_t r = 1; r < n; ++r)
      BOOST_TEST(std::memcmp(bufs[r].data(), bufs[0].data(), len * 4) == 0, "rank " << r);
    if (run_no == 0)
      first = bufs;
    else
      BOOST_TEST(std::memcmp(bufs[0].data(), first[0].data(), len * 4) == 0, "run " << run_no);
  }
}

BOOST_AUTO_TEST_CASE(collectives_follow_each_other_and_fusion_matches) {
  ring_options opts;
  opts.chunk_bytes = 256;
  const uint32_t n = 3;
  auto members = make_ring(n, opts);
  // Ten collectives back to back, each rank at its own pace.
  for (int round = 0; round < 10; ++round) {
    auto bufs = integer_inputs(n, 300 + round);
    auto want = bufs[0];
    for (size_t i = 0; i < want.size(); ++i)
      want[i] = bufs[0][i] + bufs[1][i] + bufs[2][i];
    auto status = run(members, bufs, opts, gpu::reduce_op::sum, {round % 3, 0, (round * 5) % 7});
    for (uint32_t r = 0; r < n; ++r) {
      BOOST_REQUIRE_MESSAGE(status[r].empty(), status[r]);
      BOOST_TEST((bufs[r] == want));
    }
  }
  // Fusion: small tensors share a bucket, a big one goes alone.
  std::vector<std::vector<std::vector<float>>> tensors(n);
  for (uint32_t r = 0; r < n; ++r)
    for (size_t len : {3, 5, 7, 400, 2})
      tensors[r].push_back(std::vector<float>(len, static_cast<float>(r + 1)));
  std::vector<std::string> status(n);
  std::vector<std::thread> threads;
  for (uint32_t r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      ring_reducer red{*sys, members[r], r, n, opts};
      std::vector<std::span<float>> spans;
      for (auto& t : tensors[r])
        spans.emplace_back(t);
      status[r] = red.allreduce_fused(spans, gpu::reduce_op::sum, 64);
    });
  for (auto& t : threads)
    t.join();
  for (uint32_t r = 0; r < n; ++r) {
    BOOST_TEST(status[r].empty(), status[r]);
    for (auto& t : tensors[r])
      for (auto v : t)
        BOOST_TEST(v == 6.0f);
  }
}

BOOST_AUTO_TEST_CASE(malformed_chunks_are_refused_by_name_and_change_nothing) {
  ring_options opts;
  opts.chunk_bytes = 64;
  opts.timeout_ms = 5000;
  const uint32_t n = 3;
  auto members = make_ring(n, opts, 7);
  ring_id ring{};
  ring[0] = 7;
  auto chunk = [&](uint8_t ring_byte, uint32_t rank, uint64_t coll, uint8_t phase, uint32_t step,
                   uint32_t index, size_t floats) {
    std::vector<float> v(floats, 1.0f);
    auto id = ring;
    id[0] = ring_byte;
    return aicon::make_envelope<aicon::schema::RingChunk>([&](schema::RingChunk::Builder b) {
      b.setRing(kj::arrayPtr(id.data(), 32));
      b.setRank(rank);
      b.setCollective(coll);
      b.setPhase(phase);
      b.setStep(step);
      b.setChunk(index);
      b.setValues(kj::arrayPtr(reinterpret_cast<const kj::byte*>(v.data()), v.size() * 4));
    });
  };
  auto refused = [&](aicon::envelope env) {
    caf::scoped_actor self{*sys};
    std::string why;
    self->request(members[1], std::chrono::seconds(5), std::move(env))
      .receive([&](aicon::envelope& reply) { why = aicon::describe(aicon::error_of_reply(reply)); },
               [&](caf::error& err) { why = describe(err); });
    return why;
  };
  BOOST_TEST(refused(chunk(9, 1, 1, 0, 0, 0, 16)).find("is not for rank 1 of this ring")
             != std::string::npos);
  BOOST_TEST(refused(chunk(7, 2, 1, 0, 0, 0, 16)).find("is not for rank 1 of this ring")
             != std::string::npos);
  BOOST_TEST(refused(chunk(7, 1, 5, 0, 0, 0, 16)).find("RingChunk of collective 5")
             != std::string::npos);
  BOOST_TEST(refused(aicon::make_envelope<aicon::schema::RingAck>([](auto b) { b.setCollective(1); }))
               .find("takes RingChunk only")
             != std::string::npos);
  // Chunks for the next collective that do not fit are refused once it starts:
  // a wrong phase, a step past the ring, a chunk index or size that does not exist.
  std::vector<std::string> early(4);
  std::thread senders[] = {
    std::thread{[&] { early[0] = refused(chunk(7, 1, 1, 2, 0, 0, 16)); }},
    std::thread{[&] { early[1] = refused(chunk(7, 1, 1, 0, 5, 0, 16)); }},
    std::thread{[&] { early[2] = refused(chunk(7, 1, 1, 0, 0, 99, 16)); }},
    std::thread{[&] { early[3] = refused(chunk(7, 1, 1, 0, 0, 0, 3)); }},
  };
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // The real collective still gives exact sums despite them.
  auto bufs = integer_inputs(n, 100);
  auto want = bufs[0];
  for (size_t i = 0; i < want.size(); ++i)
    want[i] = bufs[0][i] + bufs[1][i] + bufs[2][i];
  auto status = run(members, bufs, opts);
  for (auto& t : senders)
    t.join();
  BOOST_TEST(early[0].find("phase 2 step 0 does not exist") != std::string::npos, early[0]);
  BOOST_TEST(early[1].find("step 5 does not exist") != std::string::npos, early[1]);
  BOOST_TEST(early[2].find("has no chunk 99") != std::string::npos, early[2]);
  BOOST_TEST(early[3].find("12 bytes for a chunk of 16 floats") != std::string::npos, early[3]);
  for (uint32_t r = 0; r < n; ++r) {
    BOOST_TEST(status[r].empty(), status[r]);
    BOOST_TEST((bufs[r] == want), "rank " << r);
  }
}

BOOST_AUTO_TEST_CASE(a_dead_neighbour_fails_the_collective) {
  ring_options opts;
  opts.timeout_ms = 500;
  const uint32_t n = 3;
  auto members = make_ring(n, opts);
  caf::anon_send_exit(members[2], caf::exit_reason::kill);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto bufs = integer_inputs(n, 1000);
  std::vector<std::string> status(2);
  std::vector<std::thread> threads;
  auto t0 = std::chrono::steady_clock::now();
  for (uint32_t r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      ring_reducer red{*sys, members[r], r, n, opts};
      status[r] = red.allreduce(bufs[r], gpu::reduce_op::sum);
    });
  for (auto& t : threads)
    t.join();
  auto waited = std::chrono::steady_clock::now() - t0;
  BOOST_TEST(!status[0].empty());
  BOOST_TEST(!status[1].empty());
  BOOST_TEST_MESSAGE("rank 0: " << status[0] << "\nrank 1: " << status[1]);
  BOOST_TEST((status[1].find("right neighbour") != std::string::npos
              || status[1].find("no progress") != std::string::npos));
  BOOST_TEST(waited < std::chrono::seconds(5));
}

BOOST_AUTO_TEST_SUITE_END()
