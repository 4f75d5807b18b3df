#include "transport/stream_ring.hpp"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <optional>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "runtime/error.hpp"
#include "runtime/log.hpp"

namespace aicon::train {

namespace {

constexpr char hello_magic[8] = {'A', 'I', 'C', 'O', 'N', 'R', 'G', '1'};
constexpr uint32_t frame_magic = 0x31465241; // "ARF1"
constexpr size_t nonce_len = 24, mac_len = 32, tag_len = 16;
constexpr size_t header_len = 40;
constexpr int handshake_ms = 5000;

using bytes32 = std::array<uint8_t, 32>;

void put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i)
    p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= uint32_t{p[i]} << (8 * i);
  return v;
}
uint64_t get64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i)
    v |= uint64_t{p[i]} << (8 * i);
  return v;
}

/// Keyed BLAKE2b over (label, ring, rank, server nonce, client nonce): the
/// client's proof ('c'), the server's ('s') and the connection key ('k').
bytes32 link_mac(const link_key& key, char label, const ring_id& ring, uint32_t rank,
                 const uint8_t* ns, const uint8_t* nc) {
  crypto_generichash_state h;
  crypto_generichash_init(&h, key.data(), key.size(), 32);
  uint8_t head[5];
  head[0] = static_cast<uint8_t>(label);
  put32(head + 1, rank);
  crypto_generichash_update(&h, head, sizeof head);
  crypto_generichash_update(&h, ring.data(), ring.size());
  crypto_generichash_update(&h, ns, nonce_len);
  crypto_generichash_update(&h, nc, nonce_len);
  bytes32 out;
  crypto_generichash_final(&h, out.data(), out.size());
  return out;
}

} // namespace

/// AES-128-GCM of one link direction: the key is the first half of the
/// connection key, the 96-bit nonce the frame's sequence number; the
/// header is authenticated data, the values are encrypted. The key schedule
/// is set up once per connection; each frame only sets its nonce.
class frame_cipher {
public:
  frame_cipher() : ctx_(EVP_CIPHER_CTX_new()) {
  }
  ~frame_cipher() {
    EVP_CIPHER_CTX_free(ctx_);
  }
  frame_cipher(const frame_cipher&) = delete;
  frame_cipher& operator=(const frame_cipher&) = delete;

  /// Keys this direction: `encrypt` for the sending side, else decrypt.
  bool rekey(const std::array<uint8_t, 32>& ck, bool encrypt) {
    encrypt_ = encrypt;
    auto* c = EVP_aes_128_gcm();
    keyed_ = (encrypt ? EVP_EncryptInit_ex(ctx_, c, nullptr, ck.data(), nullptr)
                      : EVP_DecryptInit_ex(ctx_, c, nullptr, ck.data(), nullptr))
             == 1;
    return keyed_;
  }
  /// Plain frames: values copied as they are, the tag left zero.
  void set_plain(bool p) {
    plain_ = p;
  }

  /// Encrypts `len` bytes of `in` into `out` and writes the tag.
  bool seal(uint64_t seq, const uint8_t* header, const uint8_t* in, size_t len, uint8_t* out,
            uint8_t* tag) {
    if (plain_) {
      std::memcpy(out, in, len);
      std::memset(tag, 0, tag_len);
      return true;
    }
    if (!keyed_ || !encrypt_)
      return false;
    uint8_t iv[12] = {};
    put64(iv, seq);
    int outl = 0;
    return EVP_EncryptInit_ex(ctx_, nullptr, nullptr, nullptr, iv) == 1
           && EVP_EncryptUpdate(ctx_, nullptr, &outl, header, header_len) == 1
           && EVP_EncryptUpdate(ctx_, out, &outl, in, static_cast<int>(len)) == 1
           && EVP_EncryptFinal_ex(ctx_, out + outl, &outl) == 1
           && EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, tag_len, tag) == 1;
  }

  /// Decrypts into `out` (may be `in`); false if the tag does not match.
  bool open(uint64_t seq, const uint8_t* header, const uint8_t* in, size_t len, uint8_t* out,
            const uint8_t* tag) {
    if (plain_) {
      if (out != in)
        std::memcpy(out, in, len);
      return true;
    }
    if (!keyed_ || encrypt_)
      return false;
    uint8_t iv[12] = {};
    put64(iv, seq);
    uint8_t t[tag_len];
    std::memcpy(t, tag, tag_len);
    int outl = 0;
    return EVP_DecryptInit_ex(ctx_, nullptr, nullptr, nullptr, iv) == 1
           && EVP_DecryptUpdate(ctx_, nullptr, &outl, header, header_len) == 1
           && EVP_DecryptUpdate(ctx_, out, &outl, in, static_cast<int>(len)) == 1
           && EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, tag_len, t) == 1
           && EVP_DecryptFinal_ex(ctx_, out + outl, &outl) == 1;
  }

private:
  EVP_CIPHER_CTX* ctx_;
  bool keyed_ = false, encrypt_ = false;
  bool plain_ = false;
};

namespace {

void set_timeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

void tune(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/// Reads exactly `len` bytes; "" or what failed (timeout, closed, errno).
std::string read_full(int fd, void* buf, size_t len) {
  auto* p = static_cast<uint8_t*>(buf);
  while (len > 0) {
    auto r = ::recv(fd, p, len, 0);
    if (r > 0) {
      p += r;
      len -= static_cast<size_t>(r);
      continue;
    }
    if (r == 0)
      return "the link was closed";
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
      return "timeout";
    return std::strerror(errno);
  }
  return {};
}

std::string write_all(int fd, iovec* iov, int count) {
  while (count > 0) {
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = static_cast<size_t>(count);
    auto w = ::sendmsg(fd, &m, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return "timeout";
      return std::strerror(errno);
    }
    auto left = static_cast<size_t>(w);
    while (count > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<uint8_t*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return {};
}

std::string write_bytes(int fd, const void* p, size_t len) {
  iovec v{const_cast<void*>(p), len};
  return write_all(fd, &v, 1);
}

caf::expected<sockaddr_in> resolve(const std::string& host, uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res); rc != 0 || !res)
    return make_error(errc::invalid_argument,
                      fmt::format("ring stream: cannot resolve '{}': {}", host, gai_strerror(rc)));
  sockaddr_in a;
  std::memcpy(&a, res->ai_addr, sizeof a);
  ::freeaddrinfo(res);
  a.sin_port = htons(port);
  return a;
}

void close_fd(int& fd) {
  if (fd >= 0) {
    ::shutdown(fd, SHUT_RDWR);
    ::close(fd);
    fd = -1;
  }
}

} // namespace

stream_ring::stream_ring(const ring_id& ring, uint32_t rank, uint32_t size, const link_key& key,
                         const ring_options& opts)
  : ring_(ring), rank_(rank), size_(size), key_(key), opts_(opts),
    left_cipher_(std::make_unique<frame_cipher>()),
    right_cipher_(std::make_unique<frame_cipher>()) {
  left_cipher_->set_plain(opts.plain);
  right_cipher_->set_plain(opts.plain);
}

caf::expected<std::unique_ptr<stream_ring>>
stream_ring::listen(const ring_id& ring, uint32_t rank, uint32_t size, const link_key& key,
                    const std::string& bind_host, const ring_options& opts) {
  if (size == 0 || rank >= size)
    return make_error(errc::invalid_argument, fmt::format("ring stream: rank {} of {}", rank, size));
  std::unique_ptr<stream_ring> r{new stream_ring(ring, rank, size, key, opts)};
  if (size == 1)
    return r;
  auto addr = resolve(bind_host, 0);
  if (!addr)
    return addr.error();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return make_error(errc::internal, fmt::format("ring stream: socket: {}", std::strerror(errno)));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) != 0
      || ::listen(fd, 8) != 0) {
    auto what = std::strerror(errno);
    ::close(fd);
    return make_error(errc::internal,
                      fmt::format("ring stream: cannot listen on {}: {}", bind_host, what));
  }
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  r->listen_fd_ = fd;
  r->port_ = ntohs(bound.sin_port);
  r->acceptor_ = std::thread([p = r.get()] { p->accept_loop(); });
  return r;
}

stream_ring::~stream_ring() {
  {
    std::lock_guard<std::mutex> g{mu_};
    stopping_ = true;
    if (left_fd_ >= 0)
      ::shutdown(left_fd_, SHUT_RDWR);
    if (right_fd_ >= 0)
      ::shutdown(right_fd_, SHUT_RDWR);
  }
  cv_.notify_all();
  if (acceptor_.joinable())
    acceptor_.join();
  close_fd(listen_fd_);
  close_fd(left_fd_);
  close_fd(right_fd_);
}

void stream_ring::shutdown_links() {
  std::lock_guard<std::mutex> g{mu_};
  if (left_fd_ >= 0)
    ::shutdown(left_fd_, SHUT_RDWR);
  if (right_fd_ >= 0)
    ::shutdown(right_fd_, SHUT_RDWR);
}

void stream_ring::accept_loop() {
  auto left_rank = (rank_ + size_ - 1) % size_;
  for (;;) {
    {
      std::lock_guard<std::mutex> g{mu_};
      if (stopping_ || left_fd_ >= 0)
        return;
    }
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0)
      continue;
    sockaddr_in peer{};
    socklen_t plen = sizeof peer;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &plen, SOCK_CLOEXEC);
    if (fd < 0)
      continue;
    char ip[INET_ADDRSTRLEN] = "?";
    ::inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
    auto from = fmt::format("{}:{}", ip, ntohs(peer.sin_port));
    set_timeouts(fd, handshake_ms);
    // Challenge: our nonce; answer: ring, rank, their nonce, their proof.
    uint8_t hello[8 + nonce_len];
    std::memcpy(hello, hello_magic, 8);
    randombytes_buf(hello + 8, nonce_len);
    uint8_t answer[32 + 4 + nonce_len + mac_len];
    std::string why = write_bytes(fd, hello, sizeof hello);
    if (why.empty())
      why = read_full(fd, answer, sizeof answer);
    if (why.empty()) {
      ring_id ring;
      std::memcpy(ring.data(), answer, 32);
      auto rank = get32(answer + 32);
      const uint8_t* nc = answer + 36;
      auto want = link_mac(key_, 'c', ring_, rank_, hello + 8, nc);
      if (ring != ring_)
        why = "it is for another ring";
      else if (rank != rank_)
        why = fmt::format("it is for rank {}, this is rank {}", rank, rank_);
      else if (sodium_memcmp(want.data(), answer + 36 + nonce_len, mac_len) != 0)
        why = "its proof of the session's link key is wrong";
      else {
        auto proof = link_mac(key_, 's', ring_, rank_, hello + 8, nc);
        why = write_bytes(fd, proof.data(), proof.size());
        if (why.empty()) {
          set_timeouts(fd, static_cast<int>(opts_.timeout_ms));
          tune(fd);
          std::lock_guard<std::mutex> g{mu_};
          left_cipher_->rekey(link_mac(key_, 'k', ring_, rank_, hello + 8, nc), false);
          left_seq_ = 0;
          left_fd_ = fd;
          cv_.notify_all();
          log_debug("ring stream: rank {} admitted its left neighbour (rank {}) from {}", rank_,
                    left_rank, from);
          continue;
        }
      }
    }
    ++refused_;
    log_warning("ring stream: rank {} refused a connection from {}: {}", rank_, from, why);
    ::close(fd);
  }
}

caf::error stream_ring::connect(const std::string& host, uint16_t port) {
  if (size_ == 1)
    return caf::none;
  auto right_rank = (rank_ + 1) % size_;
  auto where = fmt::format("{}:{}", host, port);
  auto fail = [&](const std::string& why) {
    return make_error(errc::peer_down,
                      fmt::format("ring stream: rank {} cannot link to its right neighbour (rank "
                                  "{}) at {}: {}",
                                  rank_, right_rank, where, why));
  };
  {
    std::lock_guard<std::mutex> g{mu_};
    if (right_fd_ >= 0)
      return make_error(errc::invalid_argument, "ring stream: the right link is already up");
  }
  auto addr = resolve(host, port);
  if (!addr)
    return addr.error();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return fail(std::strerror(errno));
  set_timeouts(fd, handshake_ms);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&*addr), sizeof *addr) != 0) {
    auto why = std::string{std::strerror(errno)};
    ::close(fd);
    return fail(why);
  }
  uint8_t hello[8 + nonce_len];
  auto why = read_full(fd, hello, sizeof hello);
  if (why.empty() && std::memcmp(hello, hello_magic, 8) != 0)
    why = "it is not a ring stream";
  uint8_t nc[nonce_len];
  randombytes_buf(nc, nonce_len);
  if (why.empty()) {
    uint8_t answer[32 + 4 + nonce_len + mac_len];
    std::memcpy(answer, ring_.data(), 32);
    put32(answer + 32, right_rank);
    std::memcpy(answer + 36, nc, nonce_len);
    auto proof = link_mac(key_, 'c', ring_, right_rank, hello + 8, nc);
    std::memcpy(answer + 36 + nonce_len, proof.data(), mac_len);
    why = write_bytes(fd, answer, sizeof answer);
  }
  uint8_t theirs[mac_len];
  if (why.empty()) {
    why = read_full(fd, theirs, sizeof theirs);
    if (why == "the link was closed")
      why = "it refused our proof of the link key";
  }
  if (why.empty()) {
    auto want = link_mac(key_, 's', ring_, right_rank, hello + 8, nc);
    if (sodium_memcmp(want.data(), theirs, mac_len) != 0)
      why = "its proof of the session's link key is wrong";
  }
  if (!why.empty()) {
    ::close(fd);
    return fail(why);
  }
  set_timeouts(fd, static_cast<int>(opts_.timeout_ms));
  tune(fd);
  {
    std::lock_guard<std::mutex> g{mu_};
    right_cipher_->rekey(link_mac(key_, 'k', ring_, right_rank, hello + 8, nc), true);
    right_seq_ = 0;
    right_fd_ = fd;
  }
  return caf::none;
}

bool stream_ring::wait_left(std::string& err) {
  std::unique_lock<std::mutex> lk{mu_};
  auto ok = cv_.wait_for(lk, std::chrono::milliseconds{opts_.timeout_ms},
                         [this] { return left_fd_ >= 0 || stopping_; });
  if (!ok || left_fd_ < 0) {
    err = fmt::format("rank {}: its left neighbour (rank {}) never linked within {} ms", rank_,
                      (rank_ + size_ - 1) % size_, opts_.timeout_ms);
    return false;
  }
  if (right_fd_ < 0) {
    err = fmt::format("rank {}: not linked to its right neighbour (RingLink missing)", rank_);
    return false;
  }
  return true;
}

std::string stream_ring::allreduce(std::span<float> data, gpu::reduce_op op) {
  if (size_ == 1)
    return {};
  std::string err;
  if (!wait_left(err))
    return err;
  if (!broken_.empty())
    return broken_;
  err = run(data.data(), data.size());
  if (!err.empty()) {
    // A failed collective leaves the links mid-frame: nothing more goes
    // over them (the coordinator re-forms the ring), and the neighbours
    // learn at once.
    shutdown_links();
    broken_ = "an earlier collective failed: " + err;
    return err;
  }
  if (op == gpu::reduce_op::average) {
    float inv = 1.0f / static_cast<float>(size_);
    for (auto& v : data)
      v *= inv;
  }
  return {};
}

std::string stream_ring::run(float* data, size_t n) {
  // One thread drives both links with non-blocking sockets: it reads and
  // applies whatever the left neighbour sent, and writes the next sealed
  // frame whenever the right one has room, so neither side ever waits on
  // the other (a ring of blocking writers could deadlock) and no frame
  // waits for a thread hand-off.
  auto left_rank = (rank_ + size_ - 1) % size_;
  auto right_rank = (rank_ + 1) % size_;
  ring_schedule sched{rank_, size_, n, std::max<size_t>(1, opts_.chunk_bytes / 4)};
  int lfd, rfd;
  {
    std::lock_guard<std::mutex> g{mu_};
    lfd = left_fd_;
    rfd = right_fd_;
  }
  auto coll = ++collective_;
  peer_hash_.reset();
  // A ring of two exchanges whole vectors in one round (phase 2) instead
  // of a reduce-scatter and an all-gather (two rounds, the second waiting
  // for the first): the same bytes each way, half the latency, and the
  // same sums bit for bit (each rank adds the other's value to its own,
  // and a + b == b + a in IEEE arithmetic).
  const bool pair = size_ == 2;
  const auto pair_chunks = static_cast<uint32_t>((n + sched.chunk_floats - 1) / sched.chunk_floats);
  auto pair_span = [&](uint32_t chunk) {
    size_t begin = static_cast<size_t>(chunk) * sched.chunk_floats;
    return std::pair<size_t, size_t>{begin, std::min(sched.chunk_floats, n - begin)};
  };
  std::deque<send_item> outbox;
  // A ring of two adds the other rank's chunk c into `data` as soon as
  // both its own chunk c is sealed (copied out) and the other's has come:
  // the sum runs beside the transfer, not after it.
  std::vector<uint8_t> sealed(pair ? pair_chunks : 0, 0);
  // hash_peer_prefix: the partner's leading values, hashed as they come.
  const bool hashing = pair && hash_prefix_ > 0;
  crypto_generichash_state peer_hash;
  uint32_t hashed_chunks = 0;
  if (hashing)
    crypto_generichash_init(&peer_hash, reinterpret_cast<const uint8_t*>(hash_key_.data()),
                            hash_key_.size(), 32);
  auto add_peer = [&](const float* v, uint32_t chunk) {
    auto [begin, len] = pair_span(chunk);
    for (size_t i = 0; i < len; ++i) {
      float x;
      std::memcpy(&x, v + i, 4);
      data[begin + i] = x + data[begin + i];
    }
  };
  if (pair) {
    peer_.resize(n);
    for (uint32_t c = 0; c < pair_chunks; ++c)
      outbox.push_back({2, 0, c});
  } else {
    for (uint32_t c = 0; c < sched.chunks(rank_); ++c)
      outbox.push_back({0, 0, c});
  }
  const uint64_t expected = pair ? pair_chunks : sched.expected();
  uint32_t max_chunks = 0;
  for (uint32_t s = 0; s < size_; ++s)
    max_chunks = std::max(max_chunks, sched.chunks(s));
  std::vector<uint8_t> seen(pair ? pair_chunks : 2 * (size_ - 1) * static_cast<size_t>(max_chunks),
                            0);
  const size_t frame_max = header_len + sched.chunk_floats * 4 + tag_len;
  rx_.resize(std::max(rx_.size(), frame_max));
  tx_.resize(std::max(tx_.size(), frame_max));
  size_t rx_have = 0, rx_need = header_len; // bytes of the frame being read
  size_t tx_off = 0, tx_len = 0;            // the frame being written
  uint64_t received = 0;
  auto bad = [&](const std::string& what) {
    return fmt::format("rank {}: a bad frame from its left neighbour (rank {}): {}", rank_,
                       left_rank, what);
  };

  // Checks a complete header; "" or why the frame is refused.
  auto check_header = [&](const uint8_t* h) -> std::string {
    if (get32(h) != frame_magic)
      return bad("not a ring frame");
    if (h[5] != (opts_.plain ? 0 : 1))
      return bad(opts_.plain ? "it is sealed (AES-GCM), this rank expects plain frames"
                             : "it is plain, this rank expects sealed (AES-GCM) frames");
    uint8_t phase = h[4];
    auto fcoll = get64(h + 8), total = get64(h + 16);
    auto step = get32(h + 24), chunk = get32(h + 28), bytes = get32(h + 32);
    if (fcoll != coll)
      return bad(fmt::format("collective {}, this rank is at {}", fcoll, coll));
    if (total != n)
      return bad(fmt::format("it reduces {} floats, this rank {}", total, n));
    if (pair) {
      if (phase != 2 || step != 0)
        return bad(fmt::format("phase {} step {} on a ring of two (which exchanges whole "
                               "vectors: phase 2, step 0)",
                               phase, step));
      if (chunk >= pair_chunks)
        return bad(fmt::format("the vector has no chunk {}", chunk));
      if (seen[chunk])
        return bad(fmt::format("chunk {} came twice", chunk));
      if (bytes != pair_span(chunk).second * 4)
        return bad(fmt::format("{} bytes for a chunk of {} floats", bytes,
                               pair_span(chunk).second));
      return {};
    }
    if (phase > 1 || step + 1 >= size_)
      return bad(fmt::format("phase {} step {} does not exist on a ring of {}", phase, step,
                             size_));
    auto seg = sched.seg_of(phase, step, false);
    if (chunk >= sched.chunks(seg))
      return bad(fmt::format("segment {} has no chunk {}", seg, chunk));
    if (seen[(static_cast<size_t>(phase) * (size_ - 1) + step) * max_chunks + chunk])
      return bad(fmt::format("chunk {} of phase {} step {} came twice", chunk, phase, step));
    auto [begin, len] = sched.span_of(seg, chunk);
    if (bytes != len * 4)
      return bad(fmt::format("{} bytes for a chunk of {} floats", bytes, len));
    return {};
  };

  // Opens and applies a complete frame; queues what it makes sendable.
  auto apply = [&]() -> std::string {
    const uint8_t* h = rx_.data();
    uint8_t phase = h[4];
    auto step = get32(h + 24), chunk = get32(h + 28), bytes = get32(h + 32);
    if (pair) {
      uint8_t* body = rx_.data() + header_len;
      // Added at once if this rank's own chunk is already sealed (opened in
      // place), else kept until it is.
      auto* out = sealed[chunk] ? body
                                : reinterpret_cast<uint8_t*>(peer_.data() + pair_span(chunk).first);
      if (!left_cipher_->open(left_seq_++, h, body, bytes, out, body + bytes))
        return bad(fmt::format("frame {} fails authentication (changed, dropped, reordered or "
                               "replayed on the wire)",
                               left_seq_ - 1));
      seen[chunk] = 1;
      if (hashing) {
        if (chunk != hashed_chunks)
          return bad(fmt::format("chunk {} came before chunk {} (a signed contribution is "
                                 "hashed in order)",
                                 chunk, hashed_chunks));
        ++hashed_chunks;
        auto begin = pair_span(chunk).first;
        if (begin < hash_prefix_)
          crypto_generichash_update(&peer_hash, out,
                                    std::min<size_t>(bytes / 4, hash_prefix_ - begin) * 4);
      }
      if (sealed[chunk])
        add_peer(reinterpret_cast<const float*>(body), chunk);
      ++received;
      return {};
    }
    auto seg = sched.seg_of(phase, step, false);
    auto [begin, len] = sched.span_of(seg, chunk);
    uint8_t* body = rx_.data() + header_len;
    float* dst = data + begin;
    // All-gather values are final: decrypted straight into place (a frame
    // that fails its tag fails the collective, whose buffer is then
    // undefined). Reduce-scatter values are decrypted in place, then added.
    auto* out = phase == 0 ? body : reinterpret_cast<uint8_t*>(dst);
    if (!left_cipher_->open(left_seq_++, h, body, bytes, out, body + bytes))
      return bad(fmt::format("frame {} fails authentication (changed, dropped, reordered or "
                             "replayed on the wire)",
                             left_seq_ - 1));
    seen[(static_cast<size_t>(phase) * (size_ - 1) + step) * max_chunks + chunk] = 1;
    if (phase == 0) {
      for (size_t i = 0; i < len; ++i) {
        float v;
        std::memcpy(&v, body + 4 * i, 4);
        dst[i] = v + dst[i];
      }
      outbox.push_back(step + 2 < size_ ? send_item{0, step + 1, chunk} : send_item{1, 0, chunk});
    } else if (step + 2 < size_) {
      outbox.push_back({1, step + 1, chunk});
    }
    ++received;
    return {};
  };

  // Seals the next queued chunk into tx_.
  auto seal_next = [&]() -> bool {
    auto item = outbox.front();
    outbox.pop_front();
    auto [begin, len] = item.phase == 2 ? pair_span(item.chunk)
                                        : sched.span_of(sched.seg_of(item.phase, item.step, true),
                                                        item.chunk);
    uint8_t* h = tx_.data();
    std::memset(h, 0, header_len);
    put32(h, frame_magic);
    h[4] = item.phase;
    h[5] = opts_.plain ? 0 : 1;
    put64(h + 8, coll);
    put64(h + 16, n);
    put32(h + 24, item.step);
    put32(h + 28, item.chunk);
    put32(h + 32, static_cast<uint32_t>(len * 4));
    uint8_t* body = h + header_len;
    if (!right_cipher_->seal(right_seq_++, h, reinterpret_cast<const uint8_t*>(data + begin),
                             len * 4, body, body + len * 4))
      return false;
    tx_off = 0;
    tx_len = header_len + len * 4 + tag_len;
    if (item.phase == 2) {
      sealed[item.chunk] = 1;
      if (seen[item.chunk]) // the other's came first
        add_peer(peer_.data() + begin, item.chunk);
    }
    return true;
  };

  // Before sleeping in poll() the loop spins a little: a neighbour's
  // frame is often microseconds away, and a wake-up from poll() costs tens
  // of them (more in a VM); MPI spins the same way. Bounded, so a rank
  // that waits long for a slower neighbour gives its core back.
  constexpr auto spin = std::chrono::microseconds(100);
  auto last_moved = std::chrono::steady_clock::now();
  while (received < expected || tx_len > 0 || !outbox.empty()) {
    bool moved = false;
    // Write while the right link takes it.
    for (;;) {
      if (tx_len == 0) {
        if (outbox.empty())
          break;
        if (!seal_next())
          return fmt::format("rank {}: AES-GCM failed sealing a frame", rank_);
      }
      auto w = ::send(rfd, tx_.data() + tx_off, tx_len - tx_off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        return fmt::format("rank {}: sending to its right neighbour (rank {}) failed: {}", rank_,
                           right_rank, std::strerror(errno));
      }
      moved = true;
      tx_off += static_cast<size_t>(w);
      if (tx_off == tx_len)
        tx_len = 0;
    }
    // Read while the left link has data.
    while (received < expected) {
      auto r = ::recv(lfd, rx_.data() + rx_have, rx_need - rx_have, MSG_DONTWAIT);
      if (r == 0)
        return fmt::format("rank {}: its left neighbour (rank {}) is gone: the link was closed "
                           "(received {} of {} chunks)",
                           rank_, left_rank, received, expected);
      if (r < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        return fmt::format("rank {}: its left neighbour (rank {}) is gone: {} (received {} of {} "
                           "chunks)",
                           rank_, left_rank, std::strerror(errno), received, expected);
      }
      moved = true;
      rx_have += static_cast<size_t>(r);
      if (rx_have < rx_need)
        continue;
      if (rx_need == header_len) {
        if (auto why = check_header(rx_.data()); !why.empty())
          return why;
        rx_need = header_len + get32(rx_.data() + 32) + tag_len;
        if (rx_need > rx_have)
          continue;
      }
      if (auto why = apply(); !why.empty())
        return why;
      rx_have = 0;
      rx_need = header_len;
      if (!outbox.empty() && tx_len == 0)
        break; // forward it at once
    }
    if (moved) {
      last_moved = std::chrono::steady_clock::now();
      continue;
    }
    if (std::chrono::steady_clock::now() - last_moved < spin)
      continue;
    pollfd p[2] = {{lfd, static_cast<short>(received < expected ? POLLIN : 0), 0},
                   {rfd, static_cast<short>(tx_len > 0 || !outbox.empty() ? POLLOUT : 0), 0}};
    int ready = ::poll(p, 2, static_cast<int>(opts_.timeout_ms));
    if (ready < 0 && errno == EINTR)
      continue;
    if (ready == 0)
      return fmt::format("rank {}: no progress for {} ms (received {} of {} chunks): a neighbour "
                         "(rank {} or {}) is dead or stuck",
                         rank_, opts_.timeout_ms, received, expected, left_rank, right_rank);
    if ((p[1].revents & (POLLERR | POLLHUP)) && !(p[1].revents & POLLOUT))
      return fmt::format("rank {}: its right neighbour (rank {}) is gone", rank_, right_rank);
  }
  if (hashing) {
    std::array<uint8_t, 32> h;
    crypto_generichash_final(&peer_hash, h.data(), h.size());
    peer_hash_ = h;
  }
  return {};
}

} // namespace aicon::train
