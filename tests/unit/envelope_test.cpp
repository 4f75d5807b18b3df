#include <boost/test/unit_test.hpp>

#include <cstring>
#include <random>

#include <caf/binary_deserializer.hpp>
#include <fmt/format.h>
#include <caf/binary_serializer.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "runtime/envelope.hpp"
#include "runtime/system.hpp"
#include "schemas/common.capnp.h"
#include "schemas/echo.capnp.h"
#include "schemas/chain.capnp.h"
#include "schemas/host.capnp.h"
#include "schemas/script.capnp.h"
#include "test_util.hpp"

using namespace aicon;

namespace {

/// Serializes through CAF's binary serializer and back: the bytes a remote
/// send really puts on the wire.
envelope wire_round_trip(caf::actor_system& sys, aicon::envelope env) {
  std::vector<char> buf;
  caf::binary_serializer sink{sys, buf};
  BOOST_REQUIRE(!sink(env));
  aicon::envelope out;
  caf::binary_deserializer source{sys, buf};
  BOOST_REQUIRE(!source(out));
  return out;
}

struct fixture {
  caf::actor_system_config cfg;
  std::unique_ptr<caf::actor_system> sys;
  fixture() {
    configure_system(cfg, system_options{});
    sys = std::make_unique<caf::actor_system>(cfg);
  }
};

std::vector<uint8_t> bytes_of(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i)
    v[i] = static_cast<uint8_t>(i * 7 + seed);
  return v;
}

aicon::envelope sample_echo_request(size_t payload = 100) {
  auto data = bytes_of(payload, 3);
  return make_envelope<schema::EchoRequest>([&](schema::EchoRequest::Builder b) {
    b.setSeq(42);
    b.setPayload(kj::arrayPtr(data.data(), data.size()));
    b.setForwardTo("echo@abc");
    b.setDelayMs(7);
  });
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(envelope, fixture)

BOOST_AUTO_TEST_CASE(echo_request_round_trips_over_the_wire_format) {
  auto env = wire_round_trip(*sys, sample_echo_request());
  opened<schema::EchoRequest> msg{env};
  BOOST_REQUIRE_MESSAGE(msg.ok(), describe(msg.error()));
  BOOST_TEST(msg->getSeq() == 42u);
  BOOST_TEST(msg->getPayload().size() == 100u);
  auto expected = bytes_of(100, 3);
  BOOST_TEST(std::equal(msg->getPayload().begin(), msg->getPayload().end(), expected.begin()));
  BOOST_TEST(std::string{msg->getForwardTo().cStr()} == "echo@abc");
  BOOST_TEST(msg->getDelayMs() == 7u);
}

BOOST_AUTO_TEST_CASE(every_schema_round_trips) {
  auto node = bytes_of(32, 9);
  auto sig = bytes_of(64, 1);
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::EchoResponse>([&](auto b) {
      b.setSeq(7);
      b.setPayload(kj::arrayPtr(sig.data(), sig.size()));
      b.setNode(kj::arrayPtr(node.data(), node.size()));
    }));
    opened<schema::EchoResponse> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(m->getSeq() == 7u);
    BOOST_TEST(m->getNode().size() == 32u);
    BOOST_TEST(m->getPayload()[63] == sig[63]);
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::HelloRequest>([&](auto b) {
      b.setNonce(kj::arrayPtr(node.data(), node.size()));
    }));
    opened<schema::HelloRequest> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(m->getNonce()[5] == node[5]);
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::HelloResponse>([&](auto b) {
      b.setNode(kj::arrayPtr(node.data(), node.size()));
      b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
      auto roles = b.initRoles(2);
      roles.set(0, "directory");
      roles.set(1, "echo");
      b.setSite("lab");
      b.setVersion("0.1.0");
    }));
    opened<schema::HelloResponse> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(m->getRoles().size() == 2u);
    BOOST_TEST(std::string{m->getRoles()[1].cStr()} == "echo");
    BOOST_TEST(std::string{m->getSite().cStr()} == "lab");
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::StatusRequest>([](auto) {}));
    opened<schema::StatusRequest> m{env};
    BOOST_REQUIRE(m.ok());
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::StatusResponse>([&](auto b) {
      b.setNode(kj::arrayPtr(node.data(), node.size()));
      auto peers = b.initPeers(1);
      peers[0].setAddress("127.0.0.1:1");
      peers[0].setUp(true);
      b.setRunningActors(5);
      b.setMalformedDropped(3);
      b.setListenPort(4242);
    }));
    opened<schema::StatusResponse> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(m->getPeers()[0].getUp());
    BOOST_TEST(m->getRunningActors() == 5u);
    BOOST_TEST(m->getListenPort() == 4242u);
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::ErrorReply>([&](auto b) {
      b.setCode(schema::ErrorCode::PEER_DOWN);
      b.setMessage("gone");
      b.setRetry(schema::RetryAdvice::BACK_OFF);
    }));
    opened<schema::ErrorReply> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(std::string{m->getMessage().cStr()} == "gone");
  }
}

BOOST_AUTO_TEST_CASE(chain_schemas_round_trip) {
  auto key = bytes_of(32, 4);
  auto sig = bytes_of(64, 8);
  auto data = [](const std::vector<uint8_t>& v) { return kj::arrayPtr(v.data(), v.size()); };
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::SignedTransaction>([&](auto b) {
      auto tx = b.initTx();
      tx.setAuthor(data(key));
      tx.setNonce(9);
      auto s = tx.initBody().initSettle();
      s.setJobId(data(key));
      auto p = s.initPayouts(2);
      p[1].setTo(data(key));
      p[1].setAmount(77);
      b.setSignature(data(sig));
    }));
    opened<schema::SignedTransaction> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(m->getTx().getNonce() == 9u);
    BOOST_TEST((m->getTx().getBody().which() == schema::Transaction::Body::SETTLE));
    BOOST_TEST(m->getTx().getBody().getSettle().getPayouts()[1].getAmount() == 77u);
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::Block>([&](auto b) {
      auto h = b.initHeader();
      h.setHeight(12);
      h.setSessionId(data(key));
      h.setWorkUnits(500);
      b.initTransactions(3)[2].initTx().setNonce(4);
      auto v = b.initVotes(1)[0];
      v.setHeight(12);
      v.setVoter(data(key));
      v.setSignature(data(sig));
    }));
    opened<schema::Block> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(m->getHeader().getHeight() == 12u);
    BOOST_TEST(m->getHeader().getWorkUnits() == 500u);
    BOOST_TEST(m->getTransactions()[2].getTx().getNonce() == 4u);
    BOOST_TEST(m->getVotes()[0].getSignature().size() == 64u);
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::LedgerQuery>([&](auto b) {
      b.setBlockAt(33);
    }));
    opened<schema::LedgerQuery> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(m->getBlockAt() == 33u);
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::TipInfo>([&](auto b) {
      b.setHeight(5);
      b.setHash(data(key));
    }));
    BOOST_TEST(opened<schema::TipInfo>{env}->getHeight() == 5u);
    auto acct = wire_round_trip(*sys, make_envelope<schema::AccountInfo>([&](auto b) {
      b.setWallet(data(key));
      b.setBalance(1234);
    }));
    BOOST_TEST(opened<schema::AccountInfo>{acct}->getBalance() == 1234u);
    auto asset = wire_round_trip(*sys, make_envelope<schema::AssetInfo>([&](auto b) {
      b.setKind("dataset");
      b.setOwner(data(key));
    }));
    BOOST_TEST(std::string{opened<schema::AssetInfo>{asset}->getKind().cStr()} == "dataset");
  }
}

BOOST_AUTO_TEST_CASE(script_schemas_round_trip) {
  auto key = bytes_of(16, 5);
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::ScriptHandler>([&](auto b) {
      b.setSession(kj::arrayPtr(key.data(), key.size()));
      b.setEvent("block");
      b.setSource("function(h) print(h) end");
      b.setChunk("=console");
      b.setLine(3);
    }));
    opened<schema::ScriptHandler> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(m->getSession().size() == 16u);
    BOOST_TEST(std::string{m->getSource().cStr()} == "function(h) print(h) end");
    BOOST_TEST(m->getLine() == 3u);
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::ScriptPoll>([&](auto b) {
      b.setSession(kj::arrayPtr(key.data(), key.size()));
      auto p = b.initProgress(1);
      p[0].setJob("local-1");
      p[0].setStep(30);
      p[0].setLoss(0.25);
      p[0].setTrainers(2);
    }));
    opened<schema::ScriptPoll> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(m->getProgress()[0].getStep() == 30u);
    BOOST_TEST(m->getProgress()[0].getLoss() == 0.25);
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::ScriptOutput>([&](auto b) {
      b.initLines(1).set(0, "hello");
      b.initReplies(1).set(0, "block\t{[\"h\"]=7,}");
      b.setDropped(4);
      b.setEvents(9);
    }));
    opened<schema::ScriptOutput> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(std::string{m->getLines()[0].cStr()} == "hello");
    BOOST_TEST(m->getDropped() == 4u);
    // Read as another type, it is refused by name.
    opened<schema::ScriptPoll> wrong{env};
    BOOST_TEST(!wrong.ok());
  }
  {
    auto env = wire_round_trip(*sys, make_envelope<schema::ScriptSessions>([&](auto b) {
      auto e = b.initSessions(1)[0];
      e.setId("0a1b2c3d");
      e.initEvents(2).set(1, "peer");
      e.setHandled(12);
      e.setMemoryBytes(40960);
      e.setIdleMs(120);
    }));
    opened<schema::ScriptSessions> m{env};
    BOOST_REQUIRE(m.ok());
    BOOST_TEST(std::string{m->getSessions()[0].getEvents()[1].cStr()} == "peer");
    BOOST_TEST(m->getSessions()[0].getMemoryBytes() == 40960u);
  }
}

BOOST_AUTO_TEST_CASE(large_payload_is_referenced_and_copied_once) {
  auto data = bytes_of(1 << 20, 5);
  auto env = make_envelope<schema::EchoRequest>([&](schema::EchoRequest::Builder b,
                                                    envelope_builder& eb) {
    b.adoptPayload(eb.orphanage().referenceExternalData(kj::arrayPtr(data.data(), data.size())));
  });
  data[12345] ^= 0xff; // the envelope owns its own copy
  opened<schema::EchoRequest> m{env};
  BOOST_REQUIRE(m.ok());
  BOOST_TEST(m->getPayload().size() == data.size());
  BOOST_TEST(m->getPayload()[12345] != data[12345]);
  BOOST_TEST(m->getPayload()[777] == data[777]);
}

BOOST_AUTO_TEST_CASE(wrong_type_id_names_both_types) {
  auto env = sample_echo_request();
  opened<schema::HelloRequest> m{env};
  BOOST_REQUIRE(!m.ok());
  BOOST_TEST(code_of(m.error()) == errc::unexpected_type);
  auto text = describe(m.error());
  BOOST_TEST(text.find("HelloRequest") != std::string::npos, text);
  BOOST_TEST(text.find("EchoRequest") != std::string::npos, text);
}

BOOST_AUTO_TEST_CASE(truncated_messages_are_errors_not_crashes) {
  auto full = sample_echo_request(300);
  for (size_t words = 0; words < full.words.size(); ++words) {
    aicon::envelope cut;
    cut.type_id = full.type_id;
    cut.words.assign(full.words.begin(), full.words.begin() + static_cast<long>(words));
    opened<schema::EchoRequest> m{cut};
    BOOST_TEST(!m.ok(), "truncated to " << words << " words was accepted");
    BOOST_TEST(code_of(m.error()) == errc::malformed_message);
  }
}

BOOST_AUTO_TEST_CASE(random_bytes_never_crash) {
  std::mt19937_64 rng{1234};
  size_t rejected = 0;
  for (int i = 0; i < 5000; ++i) {
    aicon::envelope env;
    env.type_id = capnp::typeId<schema::EchoRequest>();
    env.words.resize(1 + rng() % 64);
    for (auto& w : env.words) {
      uint64_t x = rng();
      std::memcpy(static_cast<void*>(&w), &x, sizeof(x));
    }
    // Half the time, a plausible one-segment table so decoding goes deeper.
    if (i % 2 == 0) {
      uint32_t table[2] = {0, static_cast<uint32_t>(env.words.size() - 1)};
      std::memcpy(static_cast<void*>(&env.words[0]), table, sizeof(table));
    }
    opened<schema::EchoRequest> m{env};
    if (!m.ok()) {
      ++rejected;
      BOOST_TEST(code_of(m.error()) == errc::malformed_message);
    } else {
      // Whatever decoded must be readable without throwing.
      (void) m->getPayload().size();
      (void) m->getForwardTo().size();
    }
  }
  BOOST_TEST(rejected > 1000u);
}

BOOST_AUTO_TEST_CASE(oversized_message_is_refused) {
  auto env = sample_echo_request(4096);
  auto lim = current_reader_limits();
  lim.envelope_bytes_max = 1024;
  opened<schema::EchoRequest> m{env, lim};
  BOOST_REQUIRE(!m.ok());
  BOOST_TEST(code_of(m.error()) == errc::message_too_large);
}

BOOST_AUTO_TEST_CASE(traversal_limit_is_enforced) {
  auto env = sample_echo_request(4096);
  auto lim = current_reader_limits();
  lim.traversal_words_max = 16; // far less than the 512-word payload
  opened<schema::EchoRequest> m{env, lim};
  BOOST_REQUIRE(!m.ok());
  BOOST_TEST(code_of(m.error()) == errc::malformed_message);
}

BOOST_AUTO_TEST_CASE(a_tiny_message_cannot_claim_millions_of_empty_structs) {
  // ScriptPoll { session = null, progress = a list of 2^24 structs of zero
  // words }: 40 bytes that a handler's loop would otherwise walk 16 M
  // times (the envelope fuzzer's find). The traversal bound scales with
  // the message, so reading the list throws (a role's dispatch answers it
  // as malformed_message) instead of handing a loop 16 M elements.
  auto poll = [](uint64_t count) {
    aicon::envelope env;
    env.type_id = capnp::typeId<schema::ScriptPoll>();
    env.words.resize(5);
    uint64_t w[5] = {
      uint64_t{4} << 32,           // segment table: one segment of 4 words
      uint64_t{2} << 48,           // root: struct, 0 data words, 2 pointers
      0,                           // session: null
      (uint64_t{7} << 32) | 1,     // progress: list, inline composite, 0 words
      (count << 2),                // tag: `count` elements of 0 data, 0 pointers
    };
    std::memcpy(static_cast<void*>(env.words.data()), w, sizeof w);
    return env;
  };
  opened<schema::ScriptPoll> huge{poll(uint64_t{1} << 24)};
  BOOST_REQUIRE(huge.ok()); // its words are all there
  BOOST_CHECK_THROW(huge->getProgress(), kj::Exception);
  // Under the old bound (the largest envelope's) it was read whole.
  auto lim = current_reader_limits();
  BOOST_TEST(traversal_words_for(5, lim) < (uint64_t{1} << 24));
  BOOST_TEST(traversal_words_for(size_t{1} << 30, lim) == lim.traversal_words_max);
  opened<schema::ScriptPoll> few{poll(100)};
  BOOST_REQUIRE_MESSAGE(few.ok(), describe(few.error()));
  BOOST_TEST(few->getProgress().size() == 100u);
  // An honest message as large as a console ever sends still opens.
  auto big = make_envelope<schema::ScriptPoll>([](auto b) {
    auto l = b.initProgress(10000);
    for (unsigned i = 0; i < l.size(); ++i)
      l[i].setJob("job-with-a-name");
  });
  opened<schema::ScriptPoll> honest{big};
  BOOST_REQUIRE_MESSAGE(honest.ok(), describe(honest.error()));
  size_t n = 0;
  for (auto e : honest->getProgress())
    n += e.getJob().size();
  BOOST_TEST(n == 150000u);
}

BOOST_AUTO_TEST_CASE(deserializer_refuses_huge_declared_length_before_allocating) {
  // type id, then a sequence length far over envelope_bytes_max, then nothing.
  std::vector<char> buf;
  caf::binary_serializer sink{*sys, buf};
  uint64_t type_id = capnp::typeId<schema::EchoRequest>();
  size_t huge = size_t{1} << 30; // CAF 0.17 encodes lengths as 32-bit varbytes
  BOOST_REQUIRE(!sink(type_id));
  BOOST_REQUIRE(!sink.begin_sequence(huge));
  aicon::envelope out;
  caf::binary_deserializer source{*sys, buf};
  auto err = source(out);
  BOOST_REQUIRE(err);
  BOOST_TEST(code_of(err) == errc::message_too_large);
  BOOST_TEST(out.words.empty());
}

BOOST_AUTO_TEST_CASE(an_oversize_envelope_that_arrived_whole_becomes_an_answerable_marker) {
  // Over envelope_bytes_max with every byte there: read past unread, kept as
  // a marker so the role answers "message_too_large" (it once vanished).
  auto saved = current_reader_limits();
  auto small = saved;
  small.envelope_bytes_max = 1024;
  set_current_reader_limits(small);
  auto big = sample_echo_request(4096);
  std::vector<char> buf;
  caf::binary_serializer sink{*sys, buf};
  BOOST_REQUIRE(!sink(big));
  aicon::envelope out;
  caf::binary_deserializer source{*sys, buf};
  auto err = source(out);
  set_current_reader_limits(saved);
  BOOST_REQUIRE_MESSAGE(!err, describe(err));
  BOOST_TEST(out.type_id == oversize_type_id);
  auto why = oversize_error(out);
  BOOST_REQUIRE(why);
  BOOST_TEST((code_of(why) == errc::message_too_large));
  BOOST_TEST(describe(why).find(fmt::format("an envelope of {} bytes", big.size_bytes()))
               != std::string::npos,
             describe(why));
  BOOST_TEST(!oversize_error(big)); // an ordinary envelope is no marker
}

BOOST_AUTO_TEST_CASE(deserializer_refuses_unaligned_length_and_short_input) {
  std::vector<char> buf;
  caf::binary_serializer sink{*sys, buf};
  uint64_t type_id = 1;
  size_t odd = 13;
  BOOST_REQUIRE(!sink(type_id));
  BOOST_REQUIRE(!sink.begin_sequence(odd));
  aicon::envelope out;
  {
    caf::binary_deserializer source{*sys, buf};
    auto err = source(out);
    BOOST_REQUIRE(err);
    BOOST_TEST(code_of(err) == errc::malformed_message);
  }
  // A whole-word length with fewer bytes behind it than it claims.
  std::vector<char> buf2;
  caf::binary_serializer sink2{*sys, buf2};
  size_t claims = 64;
  BOOST_REQUIRE(!sink2(type_id));
  BOOST_REQUIRE(!sink2.begin_sequence(claims));
  buf2.resize(buf2.size() + 8);
  caf::binary_deserializer source2{*sys, buf2};
  BOOST_TEST(static_cast<bool>(source2(out)));
}

BOOST_AUTO_TEST_CASE(an_error_reply_with_fields_of_the_wrong_kind_is_malformed_not_thrown) {
  // Found by fuzz/envelope_fuzz.cpp: an answer labelled ErrorReply whose
  // message pointer is a struct made reading it throw in the requester.
  auto stx = make_envelope<schema::SignedTransaction>([](auto b) { b.initTx().setNonce(1); });
  auto fake = envelope_from_bytes(stx.bytes(), capnp::typeId<schema::ErrorReply>());
  auto err = error_of_reply(fake);
  BOOST_REQUIRE(err);
  BOOST_TEST((code_of(err) == errc::malformed_message), describe(err));
}

BOOST_AUTO_TEST_CASE(error_reply_carries_code_and_sentence) {
  auto reply = make_error_reply(make_error(errc::peer_down, "link to abcd lost"));
  auto err = error_of_reply(reply);
  BOOST_TEST(code_of(err) == errc::peer_down);
  BOOST_TEST(what_of(err) == "link to abcd lost");
  BOOST_TEST(!error_of_reply(sample_echo_request()));
  opened<schema::ErrorReply> m{reply};
  BOOST_REQUIRE(m.ok());
  BOOST_TEST((m->getRetry() == schema::RetryAdvice::BACK_OFF));
}

BOOST_AUTO_TEST_SUITE_END()
