// The data_node role: keeps encrypted dataset shares in the host's LMDB and
// serves them. It takes uploads (from a client's `aicon data put --connect`
// or a peer pushing a replica) and pushes each new dataset on to peer data
// nodes until data_replicas copies exist; answers FetchShares with at most
// stream_credits shares per request (a trainer pulls, so a slow trainer
// never makes it buffer); releases keys, sealed to the trainer, only for a
// lease on a job that escrowed the price; repairs a copy a trainer reports
// corrupt from a peer replica; answers storage challenges and challenges
// its peers' copies every storage_challenge_ms, recording each outcome.
// It runs detached: every request is an LMDB transaction.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "runtime/system.hpp"

namespace aicon {

caf::expected<caf::actor> spawn_data_node(caf::actor_system& sys, const role_context& ctx);

} // namespace aicon
