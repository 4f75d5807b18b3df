// The echo role: answers EchoRequest with EchoResponse (same seq, same
// payload, this host's NodeId). With forwardTo set it asks that directory
// name instead and relays the answer, which lets tests make an actor on one
// host talk to a role on another; with delayMs it answers later.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "runtime/system.hpp"

namespace aicon {

caf::actor spawn_echo(caf::actor_system& sys, const role_context& ctx);

} // namespace aicon
