#include <boost/test/unit_test.hpp>

#include <fstream>
#include <sys/stat.h>

#include "runtime/error.hpp"
#include "runtime/identity.hpp"
#include "runtime/tls.hpp"
#include "test_util.hpp"

using namespace aicon;

namespace {

std::string read_all(const std::filesystem::path& p) {
  std::ifstream in{p, std::ios::binary};
  return {std::istreambuf_iterator<char>(in), {}};
}

unsigned mode_of(const std::filesystem::path& p) {
  struct stat st;
  BOOST_REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_mode & 0777;
}

} // namespace

BOOST_AUTO_TEST_SUITE(identity)

BOOST_AUTO_TEST_CASE(keygen_writes_0600_and_never_overwrites) {
  test::temp_dir dir;
  auto id = create_identity(dir / "node");
  BOOST_REQUIRE_MESSAGE(id, test::why(id));
  BOOST_TEST(mode_of(dir / "node" / node_key_file) == 0600u);
  auto before = read_all(dir / "node" / node_key_file);
  auto again = create_identity(dir / "node");
  BOOST_REQUIRE(!again);
  BOOST_TEST(code_of(again.error()) == errc::already_exists);
  BOOST_TEST(describe(again.error()).find("node.key") != std::string::npos);
  BOOST_TEST(read_all(dir / "node" / node_key_file) == before);
  auto loaded = load_identity(dir / "node");
  BOOST_REQUIRE(loaded);
  BOOST_TEST(loaded->id().hex() == id->id().hex());
}

BOOST_AUTO_TEST_CASE(load_refuses_a_key_readable_by_others) {
  test::temp_dir dir;
  BOOST_REQUIRE(create_identity(dir.path()));
  ::chmod((dir / node_key_file).c_str(), 0644);
  auto loaded = load_identity(dir.path());
  BOOST_REQUIRE(!loaded);
  BOOST_TEST(code_of(loaded.error()) == errc::config_invalid);
  BOOST_TEST(describe(loaded.error()).find("0600") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(load_reports_missing_and_corrupt_keys) {
  test::temp_dir dir;
  auto missing = load_identity(dir.path());
  BOOST_REQUIRE(!missing);
  BOOST_TEST(code_of(missing.error()) == errc::not_found);
  BOOST_TEST(describe(missing.error()).find("aicon keygen") != std::string::npos);
  BOOST_REQUIRE(!write_file_atomic(dir / node_key_file, "not a key\n", 0600));
  auto corrupt = load_identity(dir.path());
  BOOST_REQUIRE(!corrupt);
  BOOST_TEST(code_of(corrupt.error()) == errc::config_invalid);
}

BOOST_AUTO_TEST_CASE(signatures_verify_and_forgeries_do_not) {
  auto a = aicon::identity::generate();
  auto b = aicon::identity::generate();
  std::vector<uint8_t> msg{1, 2, 3, 4};
  auto sig = a.sign(msg);
  BOOST_TEST(verify_signature(a.id(), msg, sig));
  BOOST_TEST(!verify_signature(b.id(), msg, sig));
  msg[0] ^= 1;
  BOOST_TEST(!verify_signature(a.id(), msg, sig));
  msg[0] ^= 1;
  sig[10] ^= 1;
  BOOST_TEST(!verify_signature(a.id(), msg, sig));
  BOOST_TEST(!verify_signature(a.id(), msg, std::span<const uint8_t>(sig.data(), 63)));
}

BOOST_AUTO_TEST_CASE(node_id_hex_parsing_names_the_problem) {
  auto id = aicon::identity::generate().id();
  auto back = node_id::from_hex(id.hex());
  BOOST_REQUIRE(back);
  BOOST_TEST(*back == id);
  auto short_id = node_id::from_hex("abc");
  BOOST_REQUIRE(!short_id);
  BOOST_TEST(what_of(short_id.error()).find("64 hex digits") != std::string::npos);
  auto bad = id.hex();
  bad[10] = 'x';
  auto non_hex = node_id::from_hex(bad);
  BOOST_REQUIRE(!non_hex);
  BOOST_TEST(what_of(non_hex.error()).find("position 10") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(certificate_is_deterministic_and_bound_to_the_key) {
  auto id = aicon::identity::generate();
  auto c1 = make_node_certificate(id);
  auto c2 = make_node_certificate(id);
  BOOST_REQUIRE(c1 && c2);
  BOOST_TEST(*c1 == *c2);
  auto owner = verify_node_certificate(*c1);
  BOOST_REQUIRE_MESSAGE(owner, test::why(owner));
  BOOST_TEST(*owner == id.id());
  auto other = make_node_certificate(aicon::identity::generate());
  BOOST_TEST(*other != *c1);
}

BOOST_AUTO_TEST_CASE(tampered_or_foreign_certificates_are_refused) {
  test::temp_dir dir;
  auto self = create_identity(dir / "self");
  auto peer = create_identity(dir / "peer");
  BOOST_REQUIRE(self && peer);
  auto pem = read_all(dir / "peer" / node_cert_file);
  // Flip one base64 character inside the body.
  auto tampered = pem;
  auto pos = tampered.find('\n', 30) + 20;
  tampered[pos] = tampered[pos] == 'A' ? 'B' : 'A';
  auto bad = verify_node_certificate(tampered);
  BOOST_TEST(!bad);
  BOOST_TEST(!verify_node_certificate("garbage"));
  // The peer's certificate saved under another NodeId's name.
  auto third = aicon::identity::generate();
  std::filesystem::create_directories(dir / "self" / peer_cert_dir);
  BOOST_REQUIRE(!write_file_atomic(dir / "self" / peer_cert_dir / (third.id().hex() + ".crt"),
                                   pem, 0644));
  auto files = prepare_tls_files(*self, dir / "self", {third.id()}, dir / "self" / "tls");
  BOOST_REQUIRE(!files);
  BOOST_TEST(code_of(files.error()) == errc::bad_signature);
}

BOOST_AUTO_TEST_CASE(allowlist_needs_every_allowed_certificate) {
  test::temp_dir dir;
  auto self = create_identity(dir / "self");
  auto peer = create_identity(dir / "peer");
  BOOST_REQUIRE(self && peer);
  auto missing = prepare_tls_files(*self, dir / "self", {peer->id()}, dir / "self" / "tls");
  BOOST_REQUIRE(!missing);
  BOOST_TEST(code_of(missing.error()) == errc::not_found);
  BOOST_TEST(describe(missing.error()).find(peer->id().hex()) != std::string::npos);
  auto trusted = trust_certificate(dir / "self", dir / "peer" / node_cert_file);
  BOOST_REQUIRE(trusted);
  BOOST_TEST(*trusted == peer->id());
  auto files = prepare_tls_files(*self, dir / "self", {peer->id()}, dir / "self" / "tls");
  BOOST_REQUIRE_MESSAGE(files, test::why(files));
  auto cafile = read_all(files->cafile);
  BOOST_TEST(cafile.find(read_all(dir / "peer" / node_cert_file)) != std::string::npos);
  BOOST_TEST(cafile.find(read_all(dir / "self" / node_cert_file)) != std::string::npos);
  BOOST_TEST(mode_of(files->private_key) == 0600u);
  auto peers = trusted_peers(dir / "self");
  BOOST_REQUIRE(peers.size() == 1u);
  BOOST_TEST(peers[0] == peer->id());
}

BOOST_AUTO_TEST_SUITE_END()
