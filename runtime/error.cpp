#include "runtime/error.hpp"

#include <ostream>

#include <caf/sec.hpp>
#include <caf/system_messages.hpp>

namespace aicon {

const char* to_string(errc code) {
  switch (code) {
    case errc::none: return "none";
    case errc::malformed_message: return "malformed_message";
    case errc::unexpected_type: return "unexpected_type";
    case errc::message_too_large: return "message_too_large";
    case errc::unknown_role: return "unknown_role";
    case errc::unknown_node: return "unknown_node";
    case errc::peer_down: return "peer_down";
    case errc::timeout: return "timeout";
    case errc::forbidden: return "forbidden";
    case errc::bad_signature: return "bad_signature";
    case errc::invalid_argument: return "invalid_argument";
    case errc::internal: return "internal";
    case errc::config_invalid: return "config_invalid";
    case errc::io_error: return "io_error";
    case errc::already_exists: return "already_exists";
    case errc::not_found: return "not_found";
    case errc::busy: return "busy";
    case errc::cancelled: return "cancelled";
  }
  return "unknown_error";
}

std::ostream& operator<<(std::ostream& os, errc code) {
  return os << to_string(code);
}

retry_advice advice_for(errc code) {
  switch (code) {
    case errc::peer_down:
    case errc::busy:
    case errc::timeout: return retry_advice::back_off;
    case errc::io_error: return retry_advice::retry;
    default: return retry_advice::give_up;
  }
}

caf::error make_error(errc code, std::string what) {
  return caf::error{static_cast<uint8_t>(code), error_category,
                    caf::make_message(std::move(what))};
}

errc code_of(const caf::error& err) {
  if (!err)
    return errc::none;
  if (err.category() == error_category)
    return static_cast<errc>(err.code());
  if (err.category() == caf::atom("system")) {
    switch (static_cast<caf::sec>(err.code())) {
      case caf::sec::request_timeout: return errc::timeout;
      case caf::sec::request_receiver_down:
      case caf::sec::remote_linking_failed:
      case caf::sec::cannot_connect_to_node:
      case caf::sec::connection_timeout:
      case caf::sec::no_route_to_receiving_node: return errc::peer_down;
      default: break;
    }
  }
  return errc::internal;
}

std::string render_error(uint8_t code, caf::atom_value, const caf::message& ctx) {
  std::string result = to_string(static_cast<errc>(code));
  if (ctx.match_elements<std::string>()) {
    result += ": ";
    result += ctx.get_as<std::string>(0);
  }
  return result;
}

std::string describe(const caf::error& err) {
  if (!err)
    return "no error";
  if (err.category() == error_category)
    return render_error(err.code(), err.category(), err.context());
  if (err.category() == caf::atom("system"))
    return caf::to_string(static_cast<caf::sec>(err.code()));
  return caf::to_string(err);
}

std::string what_of(const caf::error& err) {
  if (err && err.category() == error_category && err.context().match_elements<std::string>())
    return err.context().get_as<std::string>(0);
  return describe(err);
}

} // namespace aicon
