#include <boost/test/unit_test.hpp>

#include <caf/sec.hpp>

#include "runtime/error.hpp"

#include "test_util.hpp"

using namespace aicon;

BOOST_AUTO_TEST_SUITE(error)

BOOST_AUTO_TEST_CASE(aicon_errors_render_code_and_sentence) {
  auto err = make_error(errc::unknown_role, "host abcd runs no role 'x'");
  BOOST_TEST(code_of(err) == errc::unknown_role);
  BOOST_TEST(describe(err) == "unknown_role: host abcd runs no role 'x'");
  BOOST_TEST(what_of(err) == "host abcd runs no role 'x'");
  BOOST_TEST(describe(caf::error{}) == "no error");
}

BOOST_AUTO_TEST_CASE(caf_errors_map_to_what_a_caller_does) {
  BOOST_TEST(code_of(caf::make_error(caf::sec::request_timeout)) == errc::timeout);
  BOOST_TEST(code_of(caf::make_error(caf::sec::request_receiver_down)) == errc::peer_down);
  BOOST_TEST(code_of(caf::make_error(caf::sec::unexpected_message)) == errc::internal);
  BOOST_TEST(advice_for(errc::peer_down) == retry_advice::back_off);
  BOOST_TEST(advice_for(errc::bad_signature) == retry_advice::give_up);
}

BOOST_AUTO_TEST_SUITE_END()
