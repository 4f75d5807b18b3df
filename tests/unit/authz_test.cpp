// The authorization table: every role declares who may send each message
// it accepts, the table refuses a handler without a row, a row's guard runs
// before the handler and words its refusal by the row, and the README's
// table is the one in the code.
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <sstream>

#include <caf/all.hpp>

#include "actors/roles.hpp"
#include "runtime/envelope.hpp"
#include "runtime/error.hpp"
#include "runtime/role.hpp"
#include "runtime/system.hpp"
#include "schemas/echo.capnp.h"
#include "schemas/host.capnp.h"
#include "test_util.hpp"

using namespace aicon;

namespace {

constexpr access_row test_rows[] = {
  {"EchoRequest", "the test's friend", "a payload of \"friend\"", "`forbidden`"},
};

struct guarded_state {
  std::unique_ptr<message_table> table;
  int handled = 0;
};

caf::behavior guarded(caf::stateful_actor<guarded_state>* self) {
  self->state.table = std::make_unique<message_table>("test", test_rows);
  self->state.table->on<schema::EchoRequest>(
    [](schema::EchoRequest::Reader r) -> caf::error {
      auto p = r.getPayload();
      if (std::string(p.begin(), p.end()) != "friend")
        return make_error(errc::forbidden, "the payload is not \"friend\"");
      return {};
    },
    [self](schema::EchoRequest::Reader r) -> caf::result<envelope> {
      ++self->state.handled;
      return make_envelope<schema::EchoResponse>([&](auto b) {
        b.setSeq(static_cast<uint64_t>(self->state.handled));
        b.setPayload(r.getPayload());
      });
    });
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, nullptr);
    },
  };
}

std::string readme() {
  std::ifstream in{std::string{AICON_SOURCE_DIR} + "/README.md"};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

} // namespace

BOOST_AUTO_TEST_SUITE(authz)

BOOST_AUTO_TEST_CASE(every_role_has_a_table_and_the_readme_prints_it) {
  auto roles = access_table();
  std::set<std::string> declared;
  for (auto& r : roles) {
    declared.insert(std::string{r.role});
    BOOST_TEST(!r.rows.empty(), r.role);
    for (auto& row : r.rows) {
      BOOST_TEST(!row.who.empty(), r.role << " " << row.message);
      BOOST_TEST(!row.proof.empty(), r.role << " " << row.message);
    }
  }
  BOOST_TEST((declared == known_roles()));
  auto table = access_table_markdown(roles);
  BOOST_TEST(readme().find(table) != std::string::npos,
             "README.md must hold `aicon authz`'s table verbatim:\n" << table);
}

BOOST_AUTO_TEST_CASE(a_handler_without_a_row_is_a_bug_found_at_start) {
  message_table t{"test", test_rows};
  BOOST_CHECK_THROW(t.on<schema::StatusRequest>([](schema::StatusRequest::Reader) {
    return caf::result<envelope>{make_envelope<schema::EchoResponse>([](auto) {})};
  }),
                    std::logic_error);
  BOOST_CHECK_NO_THROW(t.on<schema::EchoRequest>([](schema::EchoRequest::Reader) {
    return caf::result<envelope>{make_envelope<schema::EchoResponse>([](auto) {})};
  }));
}

BOOST_AUTO_TEST_CASE(a_guard_refuses_by_the_row_before_the_handler_runs) {
  caf::actor_system_config cfg;
  configure_system(cfg, system_options{});
  caf::actor_system sys{cfg};
  auto a = sys.spawn(guarded);
  auto ask = [&](std::string payload) -> caf::expected<envelope> {
    caf::scoped_actor self{sys};
    caf::expected<envelope> out = make_error(errc::timeout, "no answer");
    self->request(a, std::chrono::seconds(5), make_envelope<schema::EchoRequest>([&](auto b) {
            b.setPayload(kj::arrayPtr(reinterpret_cast<const kj::byte*>(payload.data()),
                                      payload.size()));
          }))
      .receive(
        [&](envelope& reply) {
          if (auto err = error_of_reply(reply))
            out = std::move(err);
          else
            out = std::move(reply);
        },
        [&](caf::error& err) { out = std::move(err); });
    return out;
  };
  auto stranger = ask("stranger");
  BOOST_REQUIRE(!stranger);
  BOOST_TEST(code_of(stranger.error()) == errc::forbidden);
  BOOST_TEST(what_of(stranger.error())
               == "test: EchoRequest may be sent only by the test's friend: the payload is "
                  "not \"friend\"",
             what_of(stranger.error()));
  auto friendly = ask("friend");
  BOOST_REQUIRE_MESSAGE(friendly, test::why(friendly));
  // Only the friend's request reached the handler.
  BOOST_TEST(opened<schema::EchoResponse>{*friendly}->getSeq() == 1u);
  caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
}

BOOST_AUTO_TEST_SUITE_END()
