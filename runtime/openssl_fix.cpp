#include "runtime/openssl_fix.hpp"

#include <dlfcn.h>
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

extern "C" int SSL_accept(SSL* ssl) {
  static auto real = real_function<handshake_fn>("SSL_accept");
  ERR_clear_error();
  return real(ssl);
}

extern "C" int SSL_connect(SSL* ssl) {
  static auto real = real_function<handshake_fn>("SSL_connect");
  ERR_clear_error();
  return real(ssl);
}

namespace aicon {

bool openssl_fix_installed() {
  return real_function<read_fn>("SSL_read") != nullptr
         && real_function<handshake_fn>("SSL_connect") != nullptr;
}

} // namespace aicon
