// CAF atoms of the runtime's local control messages. Messages between roles
// are envelopes; these only travel inside one host, except route_atom (to a
// peer's gatekeeper).
#pragma once

#include <caf/atom.hpp>

namespace aicon {

using route_atom = caf::atom_constant<caf::atom("route")>;       ///< to a gatekeeper
using lookup_atom = caf::atom_constant<caf::atom("lookup")>;     ///< directory lookup
using register_atom = caf::atom_constant<caf::atom("register")>; ///< directory register
using peer_up_atom = caf::atom_constant<caf::atom("peer_up")>;
using peer_down_atom = caf::atom_constant<caf::atom("peer_down")>;
using dial_atom = caf::atom_constant<caf::atom("dial")>;         ///< peer manager
using retry_atom = caf::atom_constant<caf::atom("retry")>;
using deliver_atom = caf::atom_constant<caf::atom("deliver")>;
using port_atom = caf::atom_constant<caf::atom("port")>;
using peers_atom = caf::atom_constant<caf::atom("peers")>;     ///< up peers running a role
using tick_atom = caf::atom_constant<caf::atom("tick")>;       ///< a role's own timer
using gossip_atom = caf::atom_constant<caf::atom("gossip")>;   ///< directory: a gossip round
using ping_atom = caf::atom_constant<caf::atom("ping")>;       ///< directory: ping the peers
using round_timer_atom = caf::atom_constant<caf::atom("rtimer")>; ///< block generator: a consensus timeout
using rtt_atom = caf::atom_constant<caf::atom("rtt")>;         ///< directory: site round trips

} // namespace aicon
