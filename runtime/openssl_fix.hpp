// Works around a bug in CAF 0.17.6's OpenSSL module: it never empties the
// thread's OpenSSL error queue after a session fails, so when one peer
// disconnects, the next SSL_read on another, healthy link in the same
// multiplexer thread sees the stale error and CAF closes that link too
// (seen here: a short `aicon ping` to host B dropped B's link to host A).
// OpenSSL requires the queue to be empty before every I/O call; this file
// interposes SSL_read/SSL_write/SSL_accept/SSL_connect with versions that
// clear it first and then call the real functions (found via RTLD_NEXT).
#pragma once

namespace aicon {

/// Referenced by configure_system so the interposers are always linked in.
/// Returns true when the real OpenSSL functions were found.
bool openssl_fix_installed();

} // namespace aicon
