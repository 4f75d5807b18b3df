#include "runtime/identity.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <sodium.h>

#include "runtime/error.hpp"
#include "runtime/tls.hpp"

namespace aicon {

namespace {

void init_sodium() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) {
    fprintf(stderr, "aicon: libsodium failed to initialize\n");
    std::abort();
  }
}

caf::error errno_error(const std::string& what, const std::filesystem::path& path) {
  return make_error(errc::io_error,
                    fmt::format("{} {}: {}", what, path.string(), std::strerror(errno)));
}

} // namespace

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * bytes.size());
  for (auto b : bytes) {
    out.push_back(digits[b >> 4]);
    out.push_back(digits[b & 0xf]);
  }
  return out;
}

std::string node_id::hex() const {
  return to_hex(bytes);
}

std::string node_id::short_hex() const {
  return hex().substr(0, 8);
}

caf::expected<node_id> node_id::from_hex(std::string_view text) {
  if (text.size() != 64)
    return make_error(errc::invalid_argument,
                      fmt::format("NodeId '{}' must be 64 hex digits, has {}", text,
                                  text.size()));
  node_id result;
  for (size_t i = 0; i < 32; ++i) {
    auto nibble = [&](char c) -> int {
      if (c >= '0' && c <= '9')
        return c - '0';
      if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
      if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
      return -1;
    };
    int hi = nibble(text[2 * i]);
    int lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return make_error(errc::invalid_argument,
                        fmt::format("NodeId '{}' has a non-hex digit at position {}", text,
                                    2 * i + (hi < 0 ? 0 : 1)));
    result.bytes[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return result;
}

caf::expected<node_id> node_id::from_bytes(std::span<const uint8_t> raw) {
  if (raw.size() != 32)
    return make_error(errc::invalid_argument,
                      fmt::format("NodeId must be 32 bytes, got {}", raw.size()));
  node_id result;
  std::memcpy(result.bytes.data(), raw.data(), 32);
  return result;
}

identity identity::generate() {
  init_sodium();
  identity result;
  crypto_sign_keypair(result.id_.bytes.data(), result.secret_.data());
  return result;
}

identity identity::from_seed(std::span<const uint8_t, 32> seed) {
  init_sodium();
  identity result;
  crypto_sign_seed_keypair(result.id_.bytes.data(), result.secret_.data(), seed.data());
  return result;
}

signature identity::sign(std::span<const uint8_t> msg) const {
  signature sig;
  crypto_sign_detached(sig.data(), nullptr, msg.data(), msg.size(), secret_.data());
  return sig;
}

caf::expected<std::vector<uint8_t>> seal_to(const node_id& to, std::span<const uint8_t> msg) {
  init_sodium();
  std::array<uint8_t, crypto_box_PUBLICKEYBYTES> pk;
  if (crypto_sign_ed25519_pk_to_curve25519(pk.data(), to.bytes.data()) != 0)
    return make_error(errc::invalid_argument,
                      "seal: " + to.short_hex() + " is not a valid ed25519 public key");
  std::vector<uint8_t> out(msg.size() + crypto_box_SEALBYTES);
  crypto_box_seal(out.data(), msg.data(), msg.size(), pk.data());
  return out;
}

caf::expected<std::vector<uint8_t>> identity::unseal(std::span<const uint8_t> sealed) const {
  std::array<uint8_t, crypto_box_PUBLICKEYBYTES> pk;
  std::array<uint8_t, crypto_box_SECRETKEYBYTES> sk;
  if (sealed.size() < crypto_box_SEALBYTES
      || crypto_sign_ed25519_pk_to_curve25519(pk.data(), id_.bytes.data()) != 0
      || crypto_sign_ed25519_sk_to_curve25519(sk.data(), secret_.data()) != 0)
    return make_error(errc::bad_signature, "unseal: the sealed box is too short");
  std::vector<uint8_t> out(sealed.size() - crypto_box_SEALBYTES);
  int rc = crypto_box_seal_open(out.data(), sealed.data(), sealed.size(), pk.data(), sk.data());
  sodium_memzero(sk.data(), sk.size());
  if (rc != 0)
    return make_error(errc::bad_signature,
                      "unseal: the box was sealed to another key or altered");
  return out;
}

bool verify_signature(const node_id& author, std::span<const uint8_t> msg,
                      std::span<const uint8_t> sig) {
  init_sodium();
  if (sig.size() != crypto_sign_BYTES)
    return false;
  return crypto_sign_verify_detached(sig.data(), msg.data(), msg.size(),
                                     author.bytes.data())
         == 0;
}

caf::error write_file_atomic(const std::filesystem::path& path, std::string_view bytes,
                             unsigned mode) {
  auto tmp = path;
  // A name of its own: two threads of one process may write the same file
  // at once (two trainers of a host fetching one model).
  tmp += fmt::format(".tmp.{}.{:08x}", getpid(), randombytes_random());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return errno_error("cannot create", tmp);
  ::fchmod(fd, mode);
  size_t done = 0;
  while (done < bytes.size()) {
    auto n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      auto err = errno_error("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return err;
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    auto err = errno_error("cannot sync", tmp);
    ::unlink(tmp.c_str());
    return err;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    auto err = errno_error("cannot rename into", path);
    ::unlink(tmp.c_str());
    return err;
  }
  return caf::none;
}

caf::expected<identity> create_key_file(const std::filesystem::path& key_path) {
  // O_EXCL: never overwrite, even if two keygens race.
  int fd = ::open(key_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST)
      return make_error(errc::already_exists,
                        fmt::format("{} already exists; refusing to overwrite a key",
                                    key_path.string()));
    return errno_error("cannot create", key_path);
  }
  auto id = identity::generate();
  // The file holds the 32-byte seed as hex: small, and readable by `xxd`.
  std::string text;
  static constexpr char digits[] = "0123456789abcdef";
  for (auto b : id.seed()) {
    text.push_back(digits[b >> 4]);
    text.push_back(digits[b & 0xf]);
  }
  text.push_back('\n');
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size())
            && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) {
    ::unlink(key_path.c_str());
    return errno_error("cannot write", key_path);
  }
  return id;
}

caf::expected<identity> create_identity(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(errc::io_error,
                      fmt::format("cannot create data dir {}: {}", dir.string(), ec.message()));
  auto created = create_key_file(dir / node_key_file);
  if (!created)
    return created.error();
  auto& id = *created;
  auto cert = make_node_certificate(id);
  if (!cert)
    return cert.error();
  if (auto err = write_file_atomic(dir / node_cert_file, *cert, 0644))
    return err;
  return id;
}

caf::expected<identity> load_identity(const std::filesystem::path& dir) {
  auto key = load_key_file(dir / node_key_file);
  if (!key && code_of(key.error()) == errc::not_found)
    return make_error(errc::not_found, fmt::format("no node key at {}; run `aicon keygen "
                                                   "--data-dir {}`",
                                                   (dir / node_key_file).string(), dir.string()));
  return key;
}

caf::expected<identity> load_key_file(const std::filesystem::path& key_path) {
  int fd = ::open(key_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT)
      return make_error(errc::not_found, fmt::format("no key file {}", key_path.string()));
    return errno_error("cannot open", key_path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return errno_error("cannot stat", key_path);
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    return make_error(errc::config_invalid,
                      fmt::format("{} has mode {:o}; a key file must be 0600 "
                                  "(chmod 600 {})",
                                  key_path.string(), st.st_mode & 0777, key_path.string()));
  }
  char buf[130];
  auto n = ::read(fd, buf, sizeof(buf));
  ::close(fd);
  if (n < 0)
    return errno_error("cannot read", key_path);
  std::string_view text(buf, static_cast<size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
    text.remove_suffix(1);
  auto seed = node_id::from_hex(text); // same format: 32 bytes as hex
  if (!seed)
    return make_error(errc::config_invalid,
                      fmt::format("{} is not a key file (expected 64 hex digits)",
                                  key_path.string()));
  return identity::from_seed(std::span<const uint8_t, 32>(seed->bytes.data(), 32));
}

} // namespace aicon
