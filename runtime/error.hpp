// aicon's one error enum, carried as CAF error values (category "aicon").
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include <caf/atom.hpp>
#include <caf/error.hpp>
#include <caf/make_message.hpp>

namespace aicon {

/// Every error a caller might react to differently. Mirrors
/// schema::ErrorCode in schemas/common.capnp; values are only ever appended.
enum class errc : uint8_t {
  none = 0,
  malformed_message = 1, ///< bytes that are not a valid Cap'n Proto message
  unexpected_type = 2,   ///< a valid message of a type the receiver does not take
  message_too_large = 3, ///< over envelope_bytes_max
  unknown_role = 4,      ///< no such role on that host
  unknown_node = 5,      ///< no such peer known to the directory
  peer_down = 6,         ///< the link to the peer is down
  timeout = 7,           ///< no answer within the request timeout
  forbidden = 8,         ///< the author is not allowed to do this
  bad_signature = 9,     ///< a signature that does not verify
  invalid_argument = 10, ///< a well-formed request with a value out of range
  internal = 11,         ///< a bug on the answering side
  config_invalid = 12,   ///< a host or genesis config that cannot be used
  io_error = 13,         ///< a file or socket operation failed
  already_exists = 14,   ///< refusing to overwrite
  not_found = 15,        ///< a file or record that is not there
  busy = 16,             ///< out of capacity for now (a full pool, every slot taken): back off
  cancelled = 17,        ///< stopped on purpose (a cancelled job): do not retry as is
};

/// What a caller should do about an error.
enum class retry_advice : uint8_t { give_up = 0, retry = 1, back_off = 2 };

/// The CAF error category of aicon errors.
constexpr caf::atom_value error_category = caf::atom("aicon");

/// Name of an error code, e.g. "peer_down".
const char* to_string(errc code);

/// Prints the code name (for test frameworks and logs).
std::ostream& operator<<(std::ostream& os, errc code);

/// Whether retrying can help.
retry_advice advice_for(errc code);

/// Makes a CAF error value of category "aicon" whose context is `what`.
caf::error make_error(errc code, std::string what);

/// Code of an aicon error, or errc::internal for errors of other categories
/// (CAF's own `sec` errors are mapped: timeouts, unreachable peers).
errc code_of(const caf::error& err);

/// "peer_down: link to 3f2a... lost" for aicon errors; CAF's rendering
/// otherwise.
std::string describe(const caf::error& err);

/// Only the context sentence of an aicon error ("NodeId 'x' must be ..."),
/// without the code prefix; describe() for other errors.
std::string what_of(const caf::error& err);

/// Renderer registered with actor_system_config::add_error_category.
std::string render_error(uint8_t code, caf::atom_value, const caf::message& ctx);

} // namespace aicon
