// The gatekeeper: the only actor whose handle a host hands to peers. It takes
// exactly one message, (route_atom, role, envelope), forwards the envelope to
// the named local role and relays the answer as its own, so no role's handle
// ever leaves the process. Anything else is counted and dropped.
#pragma once

#include <map>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "runtime/system.hpp"

namespace aicon {

/// Spawns a gatekeeper routing to `roles` (name -> local actor).
caf::actor spawn_gatekeeper(caf::actor_system& sys, const role_context& ctx,
                            std::map<std::string, caf::actor> roles);

} // namespace aicon
