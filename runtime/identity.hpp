// Host and wallet identities: libsodium ed25519 key pairs. NodeId = the
// 32-byte public key, printed as lowercase hex.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

namespace aicon {

/// Lowercase hex of any bytes (keys, hashes, ids).
std::string to_hex(std::span<const uint8_t> bytes);

/// A NodeId: an ed25519 public key.
struct node_id {
  std::array<uint8_t, 32> bytes{};

  auto operator<=>(const node_id&) const = default;

  /// 64 lowercase hex digits.
  std::string hex() const;

  /// First 8 hex digits, for log lines.
  std::string short_hex() const;

  /// Parses 64 hex digits; errc::invalid_argument names what was wrong.
  static caf::expected<node_id> from_hex(std::string_view text);

  /// From 32 raw bytes; errc::invalid_argument if the size is wrong.
  static caf::expected<node_id> from_bytes(std::span<const uint8_t> raw);
};

using signature = std::array<uint8_t, 64>;

/// A key pair. The secret key never leaves the process except into the
/// 0600 files written by `create_identity`.
class identity {
public:
  /// A fresh random key pair (libsodium).
  static identity generate();

  /// The key pair whose 32-byte seed is `seed` (tests, deterministic tools).
  static identity from_seed(std::span<const uint8_t, 32> seed);

  const node_id& id() const {
    return id_;
  }

  /// The 32-byte seed (first half of libsodium's secret key): what OpenSSL
  /// imports as the TLS private key.
  std::span<const uint8_t, 32> seed() const {
    return std::span<const uint8_t, 32>(secret_.data(), 32);
  }

  /// Detached ed25519 signature of `msg`.
  signature sign(std::span<const uint8_t> msg) const;

  /// Opens what `seal_to(id(), ...)` sealed. Errors: bad_signature when it
  /// was sealed to another key or altered.
  caf::expected<std::vector<uint8_t>> unseal(std::span<const uint8_t> sealed) const;

private:
  node_id id_;
  std::array<uint8_t, 64> secret_{};
};

/// Verifies a detached ed25519 signature by `author` over `msg`.
bool verify_signature(const node_id& author, std::span<const uint8_t> msg,
                      std::span<const uint8_t> sig);

/// Anonymous public-key encryption to `to` (libsodium crypto_box_seal to
/// the X25519 key derived from its ed25519 key): only the holder of `to`'s
/// secret key can open it. Errors: invalid_argument for a key that is not a
/// valid ed25519 point.
caf::expected<std::vector<uint8_t>> seal_to(const node_id& to, std::span<const uint8_t> msg);

/// File names inside a data dir.
inline constexpr const char* node_key_file = "node.key";
inline constexpr const char* node_cert_file = "node.crt";

/// Creates DIR (0700) if needed, writes a new key to DIR/node.key with mode
/// 0600 and its certificate to DIR/node.crt. Errors: already_exists (never
/// overwrites an existing key), io_error (naming the path).
caf::expected<identity> create_identity(const std::filesystem::path& dir);

/// Loads DIR/node.key. Errors: not_found, io_error, config_invalid when the
/// file is readable by group or others (like ssh) or has the wrong size.
caf::expected<identity> load_identity(const std::filesystem::path& dir);

/// A fresh key written to `path` (mode 0600, the seed as 64 hex digits),
/// e.g. a wallet. Errors: already_exists (never overwrites), io_error.
caf::expected<identity> create_key_file(const std::filesystem::path& path);

/// Loads a key file written by create_key_file (node.key has the same
/// format). Errors: not_found, io_error, config_invalid (mode not 0600,
/// wrong content).
caf::expected<identity> load_key_file(const std::filesystem::path& path);

/// Writes `bytes` to `path` atomically (a temporary file of this call's
/// own, fsync, rename) with `mode`. Errors: io_error naming the path.
caf::error write_file_atomic(const std::filesystem::path& path, std::string_view bytes,
                             unsigned mode);

} // namespace aicon
