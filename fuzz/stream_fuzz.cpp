// The ring stream (transport/stream_ring.hpp) as its left neighbour's
// bytes reach it: a rank-1 listener of a 2-rank ring on 127.0.0.1 takes the
// input either as the handshake answer (first byte even: whatever it
// says, no link may come up without the link key) or, after an honest
// handshake, as the frame stream of one allreduce (first byte odd, plain
// frames so the parser, not AES-GCM, sees every byte). The harness plays
// rank 0 on both of rank 1's links and closes its side once the input is
// written, so every execution ends at once: the collective either fails
// with a reason or, for inputs that are valid frames, completes. Neither
// may crash, hang or corrupt memory.
//
// The handshake proofs are recomputed here from the protocol as
// stream_ring.hpp states it (keyed BLAKE2b over label, rank, ring and both
// nonces): a second implementation of that rule.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstring>
#include <thread>

#include <sodium.h>

#include "transport/stream_ring.hpp"
#include "fuzz/fuzz.hpp"

using namespace aicon;

namespace {

constexpr size_t nonce_len = 24, mac_len = 32;
constexpr char hello_magic[8] = {'A', 'I', 'C', 'O', 'N', 'R', 'G', '1'};

std::array<uint8_t, 32> mac(const train::link_key& key, char label, const train::ring_id& ring,
                            uint32_t rank, const uint8_t* ns, const uint8_t* nc) {
  crypto_generichash_state h;
  crypto_generichash_init(&h, key.data(), key.size(), 32);
  uint8_t head[5] = {static_cast<uint8_t>(label), static_cast<uint8_t>(rank),
                     static_cast<uint8_t>(rank >> 8), static_cast<uint8_t>(rank >> 16),
                     static_cast<uint8_t>(rank >> 24)};
  crypto_generichash_update(&h, head, sizeof head);
  crypto_generichash_update(&h, ring.data(), ring.size());
  crypto_generichash_update(&h, ns, nonce_len);
  crypto_generichash_update(&h, nc, nonce_len);
  std::array<uint8_t, 32> out;
  crypto_generichash_final(&h, out.data(), out.size());
  return out;
}

bool io(int fd, void* buf, size_t n, bool write) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    pollfd pf{fd, static_cast<short>(write ? POLLOUT : POLLIN), 0};
    if (::poll(&pf, 1, 2000) <= 0)
      return false;
    auto k = write ? ::send(fd, p, n, MSG_NOSIGNAL) : ::recv(fd, p, n, 0);
    if (k <= 0)
      return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

int dial(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

/// A listening socket on 127.0.0.1 (port chosen by the OS).
int listen_loopback(uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0
      || ::listen(fd, 1) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0)
      ::close(fd);
    return -1;
  }
  port = ntohs(a.sin_port);
  return fd;
}

/// The client side of the handshake toward `fd` (rank 1's listener).
bool answer_hello(int fd, const train::link_key& key, const train::ring_id& ring) {
  uint8_t hello[8 + nonce_len];
  if (!io(fd, hello, sizeof hello, false) || std::memcmp(hello, hello_magic, 8) != 0)
    return false;
  uint8_t answer[32 + 4 + nonce_len + mac_len] = {};
  std::memcpy(answer, ring.data(), 32);
  answer[32] = 1; // rank 1, little-endian
  randombytes_buf(answer + 36, nonce_len);
  auto proof = mac(key, 'c', ring, 1, hello + 8, answer + 36);
  std::memcpy(answer + 36 + nonce_len, proof.data(), mac_len);
  uint8_t theirs[mac_len];
  return io(fd, answer, sizeof answer, true) && io(fd, theirs, sizeof theirs, false);
}

/// The server side toward rank 1 dialing its right neighbour (rank 0).
bool greet(int fd, const train::link_key& key, const train::ring_id& ring) {
  uint8_t hello[8 + nonce_len];
  std::memcpy(hello, hello_magic, 8);
  randombytes_buf(hello + 8, nonce_len);
  uint8_t answer[32 + 4 + nonce_len + mac_len];
  if (!io(fd, hello, sizeof hello, true) || !io(fd, answer, sizeof answer, false))
    return false;
  auto proof = mac(key, 's', ring, 0, hello + 8, answer + 36);
  return io(fd, proof.data(), proof.size(), true);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  bool frames = data[0] & 1;
  ++data;
  --size;
  train::ring_id ring{};
  ring[0] = 0xa1;
  train::link_key key{};
  key[0] = 0x5e;
  train::ring_options opts;
  opts.plain = true;
  opts.timeout_ms = 2000;
  opts.chunk_bytes = 64;
  auto r1 = train::stream_ring::listen(ring, 1, 2, key, "127.0.0.1", opts);
  if (!r1)
    return 0;
  int left = dial((*r1)->port());
  if (left < 0)
    return 0;
  if (!frames) {
    // The input as the handshake's answer: it cannot know the proof.
    uint8_t hello[8 + nonce_len];
    if (io(left, hello, sizeof hello, false))
      (void) io(left, const_cast<uint8_t*>(data), size, true);
    ::shutdown(left, SHUT_WR);
    uint8_t proof[mac_len];
    if (io(left, proof, sizeof proof, false) && size >= 32 + 4 + nonce_len + mac_len)
      __builtin_trap(); // admitted without the link key
    ::close(left);
    return 0;
  }
  if (!answer_hello(left, key, ring)) {
    ::close(left);
    return 0;
  }
  uint16_t port = 0;
  int lfd = listen_loopback(port);
  if (lfd < 0) {
    ::close(left);
    return 0;
  }
  std::thread dialer([&] { (void) (*r1)->connect("127.0.0.1", port); });
  int right = -1;
  pollfd pf{lfd, POLLIN, 0};
  if (::poll(&pf, 1, 2000) > 0)
    right = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  bool linked = right >= 0 && greet(right, key, ring);
  dialer.join();
  ::close(lfd);
  if (linked) {
    std::vector<float> values(40, 1.0f);
    std::atomic<bool> done{false};
    std::thread reducer([&] {
      (void) (*r1)->allreduce(values, gpu::reduce_op::sum);
      done = true;
    });
    (void) io(left, const_cast<uint8_t*>(data), size, true);
    ::shutdown(left, SHUT_WR); // the input is all there is
    // Drain what rank 1 sends its right neighbour until its collective ends
    // (it fails at the end of the input, or completes); bounded by its
    // timeout_ms without progress.
    char sink[4096];
    while (!done) {
      pollfd p{right, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0 && ::recv(right, sink, sizeof sink, 0) <= 0)
        break;
    }
    reducer.join();
  }
  if (right >= 0)
    ::close(right);
  ::close(left);
  return 0;
}

std::vector<std::string> aicon_fuzz_seeds() {
  // A handshake answer of the right length, and the headers of frames.
  std::vector<std::string> out;
  out.push_back(std::string(1, '\0') + std::string(32 + 4 + nonce_len + mac_len, 'x'));
  std::string frame(1, '\1');
  const uint8_t header[40] = {0x41, 0x52, 0x46, 0x31};
  frame.append(reinterpret_cast<const char*>(header), sizeof header);
  frame.append(std::string(64, '\0'));
  out.push_back(frame);
  return out;
}
