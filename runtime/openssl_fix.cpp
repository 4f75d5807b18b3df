#include "runtime/openssl_fix.hpp"

#include <dlfcn.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <openssl/err.h>
#include <openssl/ssl.h>

namespace {

template <class F>
F real_function(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

using read_fn = int (*)(SSL*, void*, int);
using write_fn = int (*)(SSL*, const void*, int);
using handshake_fn = int (*)(SSL*);

struct tls_link {
  std::array<uint8_t, 32> node{};
  sockaddr_storage peer{};
  socklen_t peer_len = 0;
};

std::mutex links_mtx;
std::map<int, tls_link>& links() {
  static std::map<int, tls_link> m;
  return m;
}

/// After a handshake: that it completed on this socket, and which key the
/// other end's certificate holds (zeros when it presented none).
void note_link(SSL* ssl) {
  int fd = SSL_get_fd(ssl);
  if (fd < 0)
    return;
  tls_link l;
  if (X509* cert = SSL_get0_peer_certificate(ssl)) {
    EVP_PKEY* key = X509_get0_pubkey(cert);
    size_t len = l.node.size();
    if (!key || EVP_PKEY_id(key) != EVP_PKEY_ED25519
        || EVP_PKEY_get_raw_public_key(key, l.node.data(), &len) != 1 || len != l.node.size()) {
      ERR_clear_error();
      l.node = {};
    }
  }
  l.peer_len = sizeof(l.peer);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&l.peer), &l.peer_len) != 0)
    return;
  std::lock_guard<std::mutex> lk{links_mtx};
  links()[fd] = l;
}

/// Whether `fd` is still the socket noted at its handshake.
bool same_socket(int fd, const tls_link& l) {
  sockaddr_storage now{};
  socklen_t len = sizeof(now);
  return getpeername(fd, reinterpret_cast<sockaddr*>(&now), &len) == 0 && len == l.peer_len
         && std::memcmp(&now, &l.peer, len) == 0;
}

} // namespace

// These definitions in the executable take precedence over libssl's for
// every caller, libcaf_openssl included (the dynamic linker searches the
// executable first).
extern "C" int SSL_read(SSL* ssl, void* buf, int num) {
  static auto real = real_function<read_fn>("SSL_read");
  ERR_clear_error();
  return real(ssl, buf, num);
}

extern "C" int SSL_write(SSL* ssl, const void* buf, int num) {
  static auto real = real_function<write_fn>("SSL_write");
  ERR_clear_error();
  return real(ssl, buf, num);
}

using new_fn = SSL* (*)(SSL_CTX*);

// Every authenticated TLS session of an aicon process is TLS 1.3 (CAF
// 0.17's context allows 1.2 too): the one place every session is made, for
// hosts and clients alike. A context without a certificate is dev mode's
// anonymous TLS (peers.dev_open), whose anonymous ciphers exist only in
// TLS 1.2; it is left as it is.
extern "C" SSL* SSL_new(SSL_CTX* ctx) {
  static auto real = real_function<new_fn>("SSL_new");
  if (ctx && SSL_CTX_get0_certificate(ctx))
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  return real(ctx);
}

extern "C" int SSL_accept(SSL* ssl) {
  static auto real = real_function<handshake_fn>("SSL_accept");
  ERR_clear_error();
  int rc = real(ssl);
  if (rc == 1)
    note_link(ssl);
  return rc;
}

namespace {

/// When each dialed session's handshake began (CAF calls SSL_connect again
/// on its non-blocking socket until it completes).
std::mutex dials_mtx;
std::map<const SSL*, std::chrono::steady_clock::time_point>& dials() {
  static std::map<const SSL*, std::chrono::steady_clock::time_point> m;
  return m;
}

} // namespace

using free_fn = void (*)(SSL*);

// A session freed mid-handshake leaves no entry behind (its address may be
// the next session's).
extern "C" void SSL_free(SSL* ssl) {
  static auto real = real_function<free_fn>("SSL_free");
  {
    std::lock_guard<std::mutex> lk{dials_mtx};
    dials().erase(ssl);
  }
  real(ssl);
}

extern "C" int SSL_connect(SSL* ssl) {
  static auto real = real_function<handshake_fn>("SSL_connect");
  ERR_clear_error();
  // CAF 0.17 retries the handshake of a dialed connection from its
  // multiplexer loop for as long as the other end stays silent (a stale
  // peer address now someone else's, a proxy whose upstream is gone), and
  // the actor system cannot stop while it does. A handshake older than
  // tls_handshake_timeout_s fails: its socket is shut down, CAF drops it.
  auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard<std::mutex> lk{dials_mtx};
    auto [it, fresh] = dials().try_emplace(ssl, now);
    if (!fresh && now - it->second > std::chrono::seconds(aicon::tls_handshake_timeout_s)) {
      dials().erase(it);
      if (int fd = SSL_get_fd(ssl); fd >= 0)
        ::shutdown(fd, SHUT_RDWR);
      return -1;
    }
  }
  int rc = real(ssl);
  if (rc == 1 || SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ) {
    std::lock_guard<std::mutex> lk{dials_mtx};
    if (SSL_get_error(ssl, rc) != SSL_ERROR_WANT_WRITE)
      dials().erase(ssl);
  }
  if (rc == 1)
    note_link(ssl);
  return rc;
}

namespace aicon {

size_t shutdown_tls_links_of(const std::array<uint8_t, 32>& node) {
  std::lock_guard<std::mutex> lk{links_mtx};
  size_t n = 0;
  for (auto i = links().begin(); i != links().end();) {
    if (i->second.node != node || node == std::array<uint8_t, 32>{}) {
      ++i;
      continue;
    }
    if (same_socket(i->first, i->second) && ::shutdown(i->first, SHUT_RDWR) == 0)
      ++n;
    i = links().erase(i);
  }
  return n;
}

bool tls_handshake_done(int fd) {
  std::lock_guard<std::mutex> lk{links_mtx};
  auto i = links().find(fd);
  return i != links().end() && same_socket(fd, i->second);
}

size_t tls_links_of(const std::array<uint8_t, 32>& node) {
  std::lock_guard<std::mutex> lk{links_mtx};
  size_t n = 0;
  for (auto& [fd, l] : links())
    if (l.node == node && same_socket(fd, l))
      ++n;
  return n;
}

bool openssl_fix_installed() {
  return real_function<read_fn>("SSL_read") != nullptr
         && real_function<handshake_fn>("SSL_connect") != nullptr;
}

} // namespace aicon
