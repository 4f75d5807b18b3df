#include "runtime/tls.hpp"

#include <fstream>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "runtime/error.hpp"

namespace aicon {

namespace {

struct bio_free {
  void operator()(BIO* p) const {
    BIO_free(p);
  }
};
struct pkey_free {
  void operator()(EVP_PKEY* p) const {
    EVP_PKEY_free(p);
  }
};
struct x509_free {
  void operator()(X509* p) const {
    X509_free(p);
  }
};
using bio_ptr = std::unique_ptr<BIO, bio_free>;
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;

std::string openssl_error() {
  auto code = ERR_get_error();
  if (code == 0)
    return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

std::string bio_string(BIO* bio) {
  char* data = nullptr;
  auto len = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(len));
}

caf::expected<pkey_ptr> private_key_of(const identity& id) {
  pkey_ptr key{EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, id.seed().data(),
                                            id.seed().size())};
  if (!key)
    return make_error(errc::internal, "cannot import ed25519 key: " + openssl_error());
  return key;
}

bool add_extension(X509* cert, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
  if (!ext)
    return false;
  bool ok = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return ok;
}

caf::expected<std::string> read_text(const std::filesystem::path& path) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(errc::not_found, fmt::format("cannot read {}", path.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

caf::expected<std::string> make_node_certificate(const identity& id) {
  auto key = private_key_of(id);
  if (!key)
    return key.error();
  x509_ptr cert{X509_new()};
  X509_set_version(cert.get(), 2); // X.509 v3
  // Serial and validity are fixed so the certificate is a function of the key.
  uint64_t serial = 0;
  for (int i = 0; i < 8; ++i)
    serial = serial << 8 | id.id().bytes[i];
  serial &= 0x7fffffffffffffffull; // positive INTEGER
  ASN1_INTEGER_set_uint64(X509_get_serialNumber(cert.get()), serial);
  ASN1_TIME_set_string(X509_getm_notBefore(cert.get()), "20200101000000Z");
  // RFC 5280: 99991231235959Z means "no well-defined expiration date".
  ASN1_TIME_set_string(X509_getm_notAfter(cert.get()), "99991231235959Z");
  X509_set_pubkey(cert.get(), key->get());
  auto cn = id.id().hex(); // 64 characters: the longest CN X.509 allows
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("aicon"), -1, -1, 0);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  // CA:FALSE: an allowed host must not be able to mint further identities
  // that this cafile would accept.
  if (!add_extension(cert.get(), NID_basic_constraints, "critical,CA:FALSE")
      || !add_extension(cert.get(), NID_key_usage, "critical,digitalSignature")
      || !add_extension(cert.get(), NID_ext_key_usage, "serverAuth,clientAuth"))
    return make_error(errc::internal, "cannot add certificate extension: " + openssl_error());
  // Ed25519 takes no digest; its signatures are deterministic.
  if (X509_sign(cert.get(), key->get(), nullptr) <= 0)
    return make_error(errc::internal, "cannot sign certificate: " + openssl_error());
  bio_ptr bio{BIO_new(BIO_s_mem())};
  if (PEM_write_bio_X509(bio.get(), cert.get()) != 1)
    return make_error(errc::internal, "cannot encode certificate: " + openssl_error());
  return bio_string(bio.get());
}

caf::expected<std::string> make_tls_private_key(const identity& id) {
  auto key = private_key_of(id);
  if (!key)
    return key.error();
  bio_ptr bio{BIO_new(BIO_s_mem())};
  if (PEM_write_bio_PrivateKey(bio.get(), key->get(), nullptr, nullptr, 0, nullptr, nullptr)
      != 1)
    return make_error(errc::internal, "cannot encode private key: " + openssl_error());
  return bio_string(bio.get());
}

caf::expected<node_id> verify_node_certificate(std::string_view pem) {
  bio_ptr bio{BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))};
  x509_ptr cert{PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)};
  if (!cert) {
    ERR_clear_error();
    return make_error(errc::invalid_argument, "not a PEM X.509 certificate");
  }
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  if (!key || EVP_PKEY_id(key) != EVP_PKEY_ED25519)
    return make_error(errc::invalid_argument, "certificate key is not Ed25519");
  if (X509_verify(cert.get(), key) != 1) {
    ERR_clear_error();
    return make_error(errc::bad_signature, "certificate is not validly self-signed");
  }
  // X509_check_ca: 0 means "not a CA", which is what a node certificate must be.
  if (X509_check_ca(cert.get()) != 0)
    return make_error(errc::invalid_argument,
                      "certificate may act as a CA (needs basicConstraints CA:FALSE)");
  node_id id;
  size_t len = id.bytes.size();
  if (EVP_PKEY_get_raw_public_key(key, id.bytes.data(), &len) != 1 || len != 32)
    return make_error(errc::invalid_argument, "cannot read the Ed25519 public key");
  return id;
}

caf::expected<node_id> trust_certificate(const std::filesystem::path& data_dir,
                                         const std::filesystem::path& cert_file) {
  auto pem = read_text(cert_file);
  if (!pem)
    return pem.error();
  auto id = verify_node_certificate(*pem);
  if (!id)
    return make_error(code_of(id.error()),
                      fmt::format("{}: {}", cert_file.string(), describe(id.error())));
  std::error_code ec;
  std::filesystem::create_directories(data_dir / peer_cert_dir, ec);
  if (ec)
    return make_error(errc::io_error, fmt::format("cannot create {}: {}",
                                                  (data_dir / peer_cert_dir).string(),
                                                  ec.message()));
  if (auto err = write_file_atomic(data_dir / peer_cert_dir / (id->hex() + ".crt"), *pem,
                                   0644))
    return err;
  return *id;
}

caf::expected<tls_files> prepare_tls_files(const identity& self,
                                           const std::filesystem::path& data_dir,
                                           const std::vector<node_id>& allowed,
                                           const std::filesystem::path& out_dir) {
  auto dir = out_dir;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    return make_error(errc::io_error,
                      fmt::format("cannot create {}: {}", dir.string(), ec.message()));
  auto cert = make_node_certificate(self);
  if (!cert)
    return cert.error();
  auto key = make_tls_private_key(self);
  if (!key)
    return key.error();
  std::string cafile = *cert;
  std::vector<std::string> missing;
  for (auto& peer : allowed) {
    if (peer == self.id())
      continue;
    auto path = data_dir / peer_cert_dir / (peer.hex() + ".crt");
    auto pem = read_text(path);
    if (!pem) {
      missing.push_back(peer.hex());
      continue;
    }
    auto owner = verify_node_certificate(*pem);
    if (!owner)
      return make_error(errc::bad_signature,
                        fmt::format("{}: {}", path.string(), describe(owner.error())));
    if (*owner != peer)
      return make_error(errc::bad_signature,
                        fmt::format("{} holds the certificate of {}, not of {}",
                                    path.string(), owner->hex(), peer.hex()));
    cafile += *pem;
  }
  if (!missing.empty()) {
    std::string list;
    for (auto& m : missing)
      list += "\n  " + m;
    return make_error(errc::not_found,
                      fmt::format("no certificate for {} allowed peer(s):{}\nget each "
                                  "peer's node.crt and run `aicon trust FILE --data-dir {}`",
                                  missing.size(), list, data_dir.string()));
  }
  tls_files files{dir / "node.crt", dir / "node.key", dir / "allowed.pem"};
  if (auto err = write_file_atomic(files.certificate, *cert, 0644))
    return err;
  if (auto err = write_file_atomic(files.private_key, *key, 0600))
    return err;
  if (auto err = write_file_atomic(files.cafile, cafile, 0644))
    return err;
  return files;
}

std::vector<node_id> trusted_peers(const std::filesystem::path& data_dir) {
  std::vector<node_id> out;
  std::error_code ec;
  for (auto& ent : std::filesystem::directory_iterator(data_dir / peer_cert_dir, ec)) {
    auto name = ent.path().filename().string();
    if (name.size() != 68 || ent.path().extension() != ".crt")
      continue;
    if (auto id = node_id::from_hex(name.substr(0, 64)))
      out.push_back(*id);
  }
  return out;
}

} // namespace aicon
