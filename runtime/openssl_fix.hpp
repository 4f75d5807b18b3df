// Works around a bug in CAF 0.17.6's OpenSSL module: it never empties the
// thread's OpenSSL error queue after a session fails, so when one peer
// disconnects, the next SSL_read on another, healthy link in the same
// multiplexer thread sees the stale error and CAF closes that link too
// (seen here: a short `aicon ping` to host B dropped B's link to host A).
// OpenSSL requires the queue to be empty before every I/O call; this file
// interposes SSL_read/SSL_write/SSL_accept/SSL_connect with versions that
// clear it first and then call the real functions (found via RTLD_NEXT).
//
// SSL_new is interposed too: it raises the minimum protocol of every
// context with a certificate to TLS 1.3 before a session is made (CAF's
// context would negotiate 1.2); dev mode's anonymous TLS has no 1.3 form.
//
// The handshake interposers also note, for every TLS connection that
// completes its handshake, the socket and the Ed25519 key of the
// certificate the other end presented (CAF never says which node is on a
// link). `aicon peer rm` uses that to cut a removed peer's connections at
// once, including ones it dialed to us.
//
// SSL_connect also bounds each read and write of a dialed handshake at
// tls_handshake_timeout_s (CAF dials with a blocking handshake: a listener
// that accepts and never answers would otherwise hold a host's or client's
// shutdown).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace aicon {

/// Referenced by configure_system so the interposers are always linked in.
/// Returns true when the real OpenSSL functions were found.
bool openssl_fix_installed();

/// The longest a dialed TLS handshake waits for any one read or write.
inline constexpr long tls_handshake_timeout_s = 10;

/// Shuts down (both ways) every TLS connection of this process whose other
/// end presented a certificate for `node` (its Ed25519 public key) and is
/// still the same socket (same remote address and port as at the
/// handshake). Returns how many.
size_t shutdown_tls_links_of(const std::array<uint8_t, 32>& node);

/// Whether the socket `fd` completed a TLS handshake in this process (and
/// is still the socket it was then). The connection watchdog cuts accepted
/// connections that have not by handshake_deadline_ms.
bool tls_handshake_done(int fd);

/// TLS connections of this process whose other end presented `node`'s
/// certificate and are still open.
size_t tls_links_of(const std::array<uint8_t, 32>& node);

} // namespace aicon
