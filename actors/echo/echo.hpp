// The echo role: answers EchoRequest with EchoResponse (same seq, same
// payload, this host's NodeId). With forwardTo set it asks that directory
// name instead and relays the answer, which lets tests make an actor on one
// host talk to a role on another; with delayMs it answers later.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "runtime/access.hpp"
#include "runtime/envelope.hpp"
#include "runtime/system.hpp"
#include "schemas/echo.capnp.h"

namespace aicon {

caf::actor spawn_echo(caf::actor_system& sys, const role_context& ctx);

/// The EchoResponse to `req`: same seq, same payload (copied once; large
/// payloads are referenced, not copied into the builder), and the answering
/// NodeId when given.
envelope make_echo_response(schema::EchoRequest::Reader req, const node_id* answered_by);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row echo_access[] = {
  {"EchoRequest", "any admitted peer", "(public)", "-"},
};

} // namespace aicon
