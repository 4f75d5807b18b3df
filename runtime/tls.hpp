// TLS identities for CAF's OpenSSL module: a node's ed25519 key is its TLS
// key; its certificate is self-signed, CA:FALSE and deterministic (same key,
// same bytes), so it can be handed around freely; the allowlist is a cafile
// of the allowed nodes' certificates.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "runtime/identity.hpp"

namespace aicon {

/// The node's self-signed X.509 certificate (PEM). Deterministic.
caf::expected<std::string> make_node_certificate(const identity& id);

/// The node's private key as PKCS#8 PEM for OpenSSL.
caf::expected<std::string> make_tls_private_key(const identity& id);

/// Checks that `pem` is one aicon node certificate: Ed25519, validly
/// self-signed, CA:FALSE. Returns its NodeId. Errors name what was wrong
/// (errc::bad_signature, errc::invalid_argument).
caf::expected<node_id> verify_node_certificate(std::string_view pem);

/// Files handed to CAF's OpenSSL module.
struct tls_files {
  std::filesystem::path certificate;
  std::filesystem::path private_key;
  std::filesystem::path cafile;
};

/// Directory (inside a data dir) where trusted peers' certificates live, one
/// file `<nodeid-hex>.crt` each.
inline constexpr const char* peer_cert_dir = "peers";

/// Imports a peer certificate file into DIR/peers/<nodeid>.crt after
/// verifying it. Returns the NodeId.
caf::expected<node_id> trust_certificate(const std::filesystem::path& data_dir,
                                         const std::filesystem::path& cert_file);

/// Writes OUT_DIR/{node.crt,node.key,allowed.pem} (a host uses DATA_DIR/tls;
/// a client process its own private directory, never the host's: CAF reads
/// the cafile again for every new connection). allowed.pem holds this
/// node's certificate (a host trusts its own key, e.g. for `aicon ping`)
/// plus DIR/peers/<id>.crt for every allowed id. Errors: not_found naming
/// every allowed NodeId whose certificate is missing, bad_signature for a
/// certificate that does not belong to its NodeId.
caf::expected<tls_files> prepare_tls_files(const identity& self,
                                           const std::filesystem::path& data_dir,
                                           const std::vector<node_id>& allowed,
                                           const std::filesystem::path& out_dir);

/// NodeIds of every certificate in DATA_DIR/peers (what a client trusts).
std::vector<node_id> trusted_peers(const std::filesystem::path& data_dir);

} // namespace aicon
