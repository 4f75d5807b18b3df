// The directory, gatekeeper and role dispatch, with two real hosts in one
// process talking over mutual TLS on 127.0.0.1.
#include <boost/test/unit_test.hpp>

#include <thread>

#include <caf/all.hpp>

#include "actors/roles.hpp"
#include "runtime/atoms.hpp"
#include "runtime/directory.hpp"
#include "runtime/envelope.hpp"
#include "runtime/host.hpp"
#include "runtime/tls.hpp"
#include "schemas/echo.capnp.h"
#include "schemas/host.capnp.h"
#include "host_pair.hpp"

using namespace aicon;
using aicon::test::ask;

namespace {

using namespace std::chrono_literals;

caf::expected<caf::actor> lookup(host& h, const std::string& name) {
  return lookup_blocking(h.system(), h.directory(), name, 5s);
}

envelope echo_request(uint64_t seq, const std::string& text) {
  return make_envelope<schema::EchoRequest>([&](schema::EchoRequest::Builder b) {
    b.setSeq(seq);
    b.setPayload(kj::arrayPtr(reinterpret_cast<const kj::byte*>(text.data()), text.size()));
  });
}

struct two_hosts : test::host_pair {
  two_hosts() {
    start([](host_config& c) { c.site = "site-a"; }, [](host_config& c) { c.site = "site-b"; },
          "echo");
  }
};

/// One test body for a local and a remote target: location transparency.
void check_echo(host& from, const std::string& target, const node_id& expected) {
  auto dst = lookup(from, target);
  BOOST_REQUIRE_MESSAGE(dst, test::why(dst));
  for (uint64_t seq = 0; seq < 5; ++seq) {
    auto reply = ask(from, *dst, echo_request(seq, "hello " + target));
    BOOST_REQUIRE_MESSAGE(reply, test::why(reply));
    opened<schema::EchoResponse> resp{*reply};
    BOOST_REQUIRE(resp.ok());
    BOOST_TEST(resp->getSeq() == seq);
    auto p = resp->getPayload();
    BOOST_TEST(std::string(reinterpret_cast<const char*>(p.begin()), p.size())
               == "hello " + target);
    auto node = node_id::from_bytes({resp->getNode().begin(), resp->getNode().size()});
    BOOST_REQUIRE(node);
    BOOST_TEST(node->hex() == expected.hex());
  }
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(directory, two_hosts)

BOOST_AUTO_TEST_CASE(same_body_local_and_remote) {
  check_echo(*a, "echo", a->id());
  check_echo(*a, "echo@" + b->id().hex(), b->id());
  check_echo(*a, "echo@" + b->id().hex().substr(0, 8), b->id()); // unique prefix
  check_echo(*a, "echo@" + a->id().hex(), a->id());              // own id = local
}

BOOST_AUTO_TEST_CASE(lookup_errors_name_what_is_missing) {
  auto no_role = lookup(*a, "trainer");
  BOOST_REQUIRE(!no_role);
  BOOST_TEST(code_of(no_role.error()) == errc::unknown_role);
  auto remote_no_role = lookup(*a, "trainer@" + b->id().hex());
  BOOST_REQUIRE(!remote_no_role);
  BOOST_TEST(code_of(remote_no_role.error()) == errc::unknown_role);
  auto stranger = aicon::identity::generate().id();
  auto no_node = lookup(*a, "echo@" + stranger.hex());
  BOOST_REQUIRE(!no_node);
  BOOST_TEST(code_of(no_node.error()) == errc::unknown_node);
  auto no_name = lookup(*a, "@" + b->id().hex());
  BOOST_REQUIRE(!no_name);
  BOOST_TEST(code_of(no_name.error()) == errc::invalid_argument);
}

BOOST_AUTO_TEST_CASE(bad_messages_get_error_replies_and_change_nothing) {
  for (std::string target : {std::string{"echo"}, "echo@" + b->id().hex()}) {
    auto dst = lookup(*a, target);
    BOOST_REQUIRE(dst);
    auto before = (target == "echo" ? a : b)->counters().malformed_dropped.load();
    // Garbage words under the right type id.
    envelope garbage;
    garbage.type_id = capnp::typeId<schema::EchoRequest>();
    garbage.words.resize(4);
    std::memset(static_cast<void*>(garbage.words.data()), 0xab, garbage.size_bytes());
    auto r1 = ask(*a, *dst, garbage);
    BOOST_REQUIRE(!r1);
    BOOST_TEST(code_of(r1.error()) == errc::malformed_message, describe(r1.error()));
    // A valid message of a type the echo role does not take.
    auto hello = make_envelope<schema::HelloRequest>([](auto b) { b.initNonce(32); });
    auto r2 = ask(*a, *dst, hello);
    BOOST_REQUIRE(!r2);
    BOOST_TEST(code_of(r2.error()) == errc::unexpected_type);
    BOOST_TEST(describe(r2.error()).find("EchoRequest") != std::string::npos);
    // A one-way bad message: dropped and counted, no answer.
    caf::anon_send(*dst, garbage);
    auto after = [&] { return (target == "echo" ? a : b)->counters().malformed_dropped.load(); };
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (after() < before + 3 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);
    BOOST_TEST(after() >= before + 3);
    // The role still works.
    auto ok = ask(*a, *dst, echo_request(1, "still alive"));
    BOOST_TEST(static_cast<bool>(ok));
  }
}

BOOST_AUTO_TEST_CASE(forwarding_from_a_role_reaches_the_peer) {
  auto dst = lookup(*a, "echo");
  BOOST_REQUIRE(dst);
  auto req = make_envelope<schema::EchoRequest>([&](schema::EchoRequest::Builder r) {
    r.setSeq(9);
    r.setForwardTo("echo@" + b->id().hex());
  });
  auto reply = ask(*a, *dst, req);
  BOOST_REQUIRE_MESSAGE(reply, test::why(reply));
  opened<schema::EchoResponse> resp{*reply};
  BOOST_REQUIRE(resp.ok());
  BOOST_TEST(node_id::from_bytes({resp->getNode().begin(), 32})->hex() == b->id().hex());
}

BOOST_AUTO_TEST_CASE(status_reports_peers_and_counters) {
  auto dst = lookup(*a, "directory");
  BOOST_REQUIRE(dst);
  auto reply = ask(*a, *dst, make_envelope<schema::StatusRequest>([](auto) {}));
  BOOST_REQUIRE(reply);
  opened<schema::StatusResponse> st{*reply};
  BOOST_REQUIRE(st.ok());
  BOOST_TEST(st->getPeers().size() == 1u);
  BOOST_TEST(st->getPeers()[0].getUp());
  BOOST_TEST(std::string{st->getPeers()[0].getSite().cStr()} == "site-b");
  BOOST_TEST(st->getListenPort() == a->port());
}

BOOST_AUTO_TEST_SUITE_END()
