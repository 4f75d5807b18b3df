// The ring allreduce over direct TCP streams (stream_ring), on 127.0.0.1
// in one process: for 1..8 ranks and sizes that do and do not divide by
// the rank count, sums are exact for integers and bit-identical to the
// ring-order fold (the actor transport's result) for random floats; a
// wrong link key, a replayed handshake, a flipped byte on the wire, a
// neighbour that dies and a neighbour with another buffer length each fail
// with an error that names them, within the timeout.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "actors/trainer/model.hpp"
#include "actors/trainer/work.hpp"
#include "transport/stream_ring.hpp"
#include "runtime/error.hpp"

using namespace aicon;
using namespace aicon::train;

namespace {

link_key key_of(uint8_t b) {
  link_key k;
  k.fill(b);
  return k;
}

/// N stream ranks on 127.0.0.1, each dialled to its right neighbour.
std::vector<std::unique_ptr<stream_ring>> make_ring(uint32_t n, const ring_options& opts,
                                                    uint8_t id = 1) {
  ring_id ring{};
  ring[0] = id;
  std::vector<std::unique_ptr<stream_ring>> ranks;
  for (uint32_t r = 0; r < n; ++r) {
    auto s = stream_ring::listen(ring, r, n, key_of(7), "127.0.0.1", opts);
    BOOST_REQUIRE(s);
    ranks.push_back(std::move(*s));
  }
  for (uint32_t r = 0; r < n && n > 1; ++r) {
    auto err = ranks[r]->connect("127.0.0.1", ranks[(r + 1) % n]->port());
    BOOST_REQUIRE_MESSAGE(!err, "connect");
  }
  return ranks;
}

std::vector<std::string> run(std::vector<std::unique_ptr<stream_ring>>& ranks,
                             std::vector<std::vector<float>>& bufs,
                             gpu::reduce_op op = gpu::reduce_op::sum) {
  std::vector<std::string> status(ranks.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < ranks.size(); ++r)
    threads.emplace_back([&, r] { status[r] = ranks[r]->allreduce(bufs[r], op); });
  for (auto& t : threads)
    t.join();
  return status;
}

/// Forwards one connection to `target`, calling `tamper(offset, byte)` on
/// every byte from the dialler to the listener.
struct proxy {
  int lfd = -1;
  uint16_t port = 0;
  std::thread th;
  std::function<void(size_t, uint8_t&)> tamper;

  explicit proxy(uint16_t target, std::function<void(size_t, uint8_t&)> f) : tamper(std::move(f)) {
    lfd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    ::listen(lfd, 1);
    socklen_t len = sizeof a;
    ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
    th = std::thread([this, target] {
      int in = ::accept(lfd, nullptr, nullptr);
      int out = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in t{};
      t.sin_family = AF_INET;
      t.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      t.sin_port = htons(target);
      if (in < 0 || ::connect(out, reinterpret_cast<sockaddr*>(&t), sizeof t) != 0)
        return;
      std::thread back([in, out] {
        uint8_t b[65536];
        for (ssize_t r; (r = ::recv(out, b, sizeof b, 0)) > 0;)
          if (::send(in, b, static_cast<size_t>(r), MSG_NOSIGNAL) != r)
            break;
        ::shutdown(in, SHUT_RDWR);
      });
      uint8_t b[65536];
      size_t off = 0;
      for (ssize_t r; (r = ::recv(in, b, sizeof b, 0)) > 0;) {
        for (ssize_t i = 0; i < r; ++i)
          tamper(off + static_cast<size_t>(i), b[i]);
        off += static_cast<size_t>(r);
        if (::send(out, b, static_cast<size_t>(r), MSG_NOSIGNAL) != r)
          break;
      }
      ::shutdown(out, SHUT_RDWR);
      back.join();
      ::close(in);
      ::close(out);
    });
  }
  ~proxy() {
    ::shutdown(lfd, SHUT_RDWR);
    ::close(lfd);
    th.join();
  }
};

} // namespace

BOOST_AUTO_TEST_SUITE(ring_stream)

BOOST_AUTO_TEST_CASE(sums_are_exact_and_equal_the_ring_order_fold) {
  ring_options opts;
  opts.chunk_bytes = 64; // 16 floats: many frames
  opts.timeout_ms = 5000;
  for (uint32_t n = 1; n <= 8; ++n) {
    auto ranks = make_ring(n, opts, static_cast<uint8_t>(n));
    for (size_t len : {size_t{0}, size_t{1}, size_t{n - 1}, size_t{n}, size_t{n + 1}, size_t{17},
                       size_t{1000}, size_t{4099}}) {
      std::vector<std::vector<float>> bufs(n, std::vector<float>(len));
      rng gen{len * 31 + n};
      for (auto& b : bufs)
        for (auto& v : b)
          v = (gen.uniform() * 2 - 1) * 1000;
      // The reference: segment s summed left to right from rank s.
      ring_schedule sched{0, n, len, 16};
      std::vector<float> want(len);
      for (uint32_t s = 0; s < n; ++s)
        for (size_t i = sched.seg_begin(s); i < sched.seg_begin(s) + sched.seg_len(s); ++i) {
          float p = bufs[s][i];
          for (uint32_t k = 1; k < n; ++k)
            p = p + bufs[(s + k) % n][i];
          want[i] = p;
        }
      auto status = run(ranks, bufs);
      for (uint32_t r = 0; r < n; ++r) {
        BOOST_TEST(status[r].empty(), "n=" << n << " len=" << len << " rank " << r << ": "
                                            << status[r]);
        BOOST_TEST(std::memcmp(bufs[r].data(), want.data(), len * 4) == 0,
                   "n=" << n << " len=" << len << " rank " << r);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(a_ring_of_two_hashes_what_the_partner_sent_and_carries_its_signed_block) {
  // Each rank of a pair hashes the leading floats its partner sent as they
  // come, chunk by chunk, to the hash the partner computed over them; a
  // contribution block (hash and signature as whole numbers) in the rank's
  // own place comes through the sum unchanged (the other rank adds zeros).
  ring_options opts;
  opts.chunk_bytes = 64; // the 1000 floats come in many chunks
  opts.timeout_ms = 5000;
  auto ranks = make_ring(2, opts, 9);
  const size_t n = 1000;
  for (auto& r : ranks)
    r->hash_peer_prefix(n, contribution_key);
  std::vector<std::vector<float>> bufs(2, std::vector<float>(n + 2 + 2 * contribution_floats, 0));
  std::array<digest, 2> hash;
  std::array<std::array<uint8_t, 64>, 2> sig;
  rng gen{5};
  for (uint32_t r = 0; r < 2; ++r) {
    for (size_t i = 0; i < n; ++i)
      bufs[r][i] = static_cast<float>(gen.uniform() - 0.5);
    bufs[r][n] = static_cast<float>(r); // a control word: summed, not hashed
    hash[r] = contribution_hash({bufs[r].data(), n});
    for (size_t i = 0; i < 64; ++i)
      sig[r][i] = static_cast<uint8_t>(gen.next());
    put_contribution({bufs[r].data() + n + 2 + r * contribution_floats, contribution_floats},
                     hash[r], sig[r]);
  }
  auto status = run(ranks, bufs);
  for (uint32_t r = 0; r < 2; ++r) {
    BOOST_REQUIRE_MESSAGE(status[r].empty(), status[r]);
    auto other = 1 - r;
    auto got = ranks[r]->peer_prefix_hash();
    BOOST_REQUIRE(got.has_value());
    BOOST_TEST((*got == hash[other]), "rank " << r);
    digest h;
    std::array<uint8_t, 64> s;
    BOOST_REQUIRE(get_contribution(
      {bufs[r].data() + n + 2 + other * contribution_floats, contribution_floats}, h, s));
    BOOST_TEST((h == hash[other]));
    BOOST_TEST((s == sig[other]));
    BOOST_TEST(bufs[r][n] == 1.0f);
  }
  // A block that is not whole numbers in range is not taken for one.
  std::vector<float> bad(contribution_floats, 0.5f);
  digest h;
  std::array<uint8_t, 64> s;
  BOOST_TEST(!get_contribution(bad, h, s));
  // Off: nothing is hashed.
  for (auto& r : ranks)
    r->hash_peer_prefix(0, {});
  status = run(ranks, bufs);
  BOOST_REQUIRE_MESSAGE(status[0].empty(), status[0]);
  BOOST_TEST(!ranks[0]->peer_prefix_hash().has_value());
}

BOOST_AUTO_TEST_CASE(many_collectives_in_a_row_and_average) {
  ring_options opts;
  opts.chunk_bytes = 4096;
  auto ranks = make_ring(3, opts);
  for (int round = 0; round < 20; ++round) {
    std::vector<std::vector<float>> bufs(3, std::vector<float>(50000 + round));
    for (uint32_t r = 0; r < 3; ++r)
      std::fill(bufs[r].begin(), bufs[r].end(), static_cast<float>(r + round));
    auto status = run(ranks, bufs, gpu::reduce_op::average);
    for (uint32_t r = 0; r < 3; ++r) {
      BOOST_REQUIRE_MESSAGE(status[r].empty(), status[r]);
      BOOST_TEST(bufs[r].front() == static_cast<float>(1 + round));
      BOOST_TEST(bufs[r].back() == static_cast<float>(1 + round));
    }
  }
}

BOOST_AUTO_TEST_CASE(a_wrong_link_key_is_refused_both_ways) {
  ring_options opts;
  ring_id ring{};
  auto right = stream_ring::listen(ring, 1, 2, key_of(7), "127.0.0.1", opts);
  auto left = stream_ring::listen(ring, 0, 2, key_of(8), "127.0.0.1", opts);
  BOOST_REQUIRE(right && left);
  auto err = (*left)->connect("127.0.0.1", (*right)->port());
  BOOST_REQUIRE(err);
  BOOST_TEST_MESSAGE(aicon::describe(err));
  BOOST_TEST(aicon::describe(err).find("refused our proof") != std::string::npos);
  for (int i = 0; i < 50 && (*right)->refused() == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  BOOST_TEST((*right)->refused() == 1u);
  // Another ring's id, right key: refused too.
  ring_id other{};
  other[0] = 9;
  auto stranger = stream_ring::listen(other, 0, 2, key_of(7), "127.0.0.1", opts);
  BOOST_TEST(!!(*stranger)->connect("127.0.0.1", (*right)->port()));
  // The right ring and key still get in afterwards.
  auto good = stream_ring::listen(ring, 0, 2, key_of(7), "127.0.0.1", opts);
  BOOST_TEST(!(*good)->connect("127.0.0.1", (*right)->port()));
}

BOOST_AUTO_TEST_CASE(a_replayed_handshake_is_refused) {
  ring_options opts;
  ring_id ring{};
  auto right = stream_ring::listen(ring, 1, 2, key_of(7), "127.0.0.1", opts);
  auto left = stream_ring::listen(ring, 0, 2, key_of(7), "127.0.0.1", opts);
  std::vector<uint8_t> recorded;
  {
    proxy p{(*right)->port(), [&](size_t off, uint8_t& b) {
              if (off < 92)
                recorded.push_back(b);
            }};
    BOOST_REQUIRE(!(*left)->connect("127.0.0.1", p.port));
    (*left).reset();
  }
  BOOST_REQUIRE(recorded.size() == 92u);
  // The recorded answer sent to a fresh listener of the same ring and key.
  auto fresh = stream_ring::listen(ring, 1, 2, key_of(7), "127.0.0.1", opts);
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((*fresh)->port());
  BOOST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  uint8_t hello[32];
  BOOST_REQUIRE(::recv(fd, hello, sizeof hello, MSG_WAITALL) == 32);
  BOOST_REQUIRE(::send(fd, recorded.data(), recorded.size(), 0) == 92);
  uint8_t proof[32];
  BOOST_TEST(::recv(fd, proof, sizeof proof, MSG_WAITALL) <= 0); // closed, no proof
  ::close(fd);
  BOOST_TEST((*fresh)->refused() == 1u);
}

BOOST_AUTO_TEST_CASE(a_flipped_byte_on_the_wire_fails_the_collective) {
  ring_options opts;
  opts.chunk_bytes = 1024;
  opts.timeout_ms = 2000;
  ring_id ring{};
  std::vector<std::unique_ptr<stream_ring>> ranks;
  for (uint32_t r = 0; r < 2; ++r)
    ranks.push_back(std::move(*stream_ring::listen(ring, r, 2, key_of(7), "127.0.0.1", opts)));
  // 92 handshake bytes, then frames of 40 + 1024 + 16: flip a value byte
  // of the third frame.
  proxy p{ranks[1]->port(), [](size_t off, uint8_t& b) {
            if (off == 92 + 2 * 1080 + 40 + 100)
              b ^= 0x01;
          }};
  BOOST_REQUIRE(!ranks[0]->connect("127.0.0.1", p.port));
  BOOST_REQUIRE(!ranks[1]->connect("127.0.0.1", ranks[0]->port()));
  std::vector<std::vector<float>> bufs(2, std::vector<float>(4096, 1.0f));
  auto t0 = std::chrono::steady_clock::now();
  auto status = run(ranks, bufs);
  BOOST_TEST_MESSAGE("rank 0: " << status[0] << "\nrank 1: " << status[1]);
  BOOST_TEST(status[1].find("fails authentication") != std::string::npos);
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)));
  // The links stay closed: the next collective fails at once, by name, on
  // both ranks (rank 0 may have had every frame it needed before rank 1
  // found the flipped one: a ring of two exchanges whole vectors in one
  // round, so it learns at its next collective).
  auto again = run(ranks, bufs);
  BOOST_TEST_MESSAGE("again, rank 0: " << again[0] << "\nrank 1: " << again[1]);
  BOOST_TEST(again[1].find("earlier collective failed") != std::string::npos);
  BOOST_TEST((!status[0].empty() || !again[0].empty()));
}

BOOST_AUTO_TEST_CASE(a_dead_neighbour_and_a_length_mismatch_fail_by_name) {
  ring_options opts;
  opts.timeout_ms = 800;
  {
    auto ranks = make_ring(3, opts, 3);
    ranks[2]->shutdown_links();
    std::vector<std::vector<float>> bufs(3, std::vector<float>(100000, 1.0f));
    std::vector<std::string> status(2);
    auto t0 = std::chrono::steady_clock::now();
    std::thread a([&] { status[0] = ranks[0]->allreduce(bufs[0], gpu::reduce_op::sum); });
    std::thread b([&] { status[1] = ranks[1]->allreduce(bufs[1], gpu::reduce_op::sum); });
    a.join();
    b.join();
    BOOST_TEST_MESSAGE("rank 0: " << status[0] << "\nrank 1: " << status[1]);
    BOOST_TEST(status[0].find("rank 2") != std::string::npos);
    BOOST_TEST(!status[1].empty());
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5)));
  }
  {
    auto ranks = make_ring(2, opts, 4);
    std::vector<std::vector<float>> bufs{std::vector<float>(100, 1.0f),
                                         std::vector<float>(200, 1.0f)};
    auto status = run(ranks, bufs);
    BOOST_TEST_MESSAGE("rank 0: " << status[0] << "\nrank 1: " << status[1]);
    BOOST_TEST((status[0].find("floats") != std::string::npos
                || status[1].find("floats") != std::string::npos));
    BOOST_TEST(!status[0].empty());
    BOOST_TEST(!status[1].empty());
  }
}

BOOST_AUTO_TEST_SUITE_END()
