// The rater role (Contribution Rating System). Its host's key must be a
// genesis authority: it countersigns work receipts, slashes and mints.
//   RateRequest -> RateResult
// For every rank of a finished session: the signed log must be the rank
// host's and its step digests (fetched from the trainer) must hash to the
// signed root; then k steps per trainer (verify.hpp), drawn from a seed of
// the chain tip, the session, every log root and fresh randomness, are
// re-executed from the trainer's evidence on the rater's own copy of the
// data. Passing trainers' receipts are countersigned and sent to this
// host's block generator (they earn PoV blocks carrying the session, job
// and model ids); failing ones are slashed (slashPercent of their stake)
// and earn nothing; the reward is minted to passing trainers by verified
// units, none to a trainer paid by itself.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "runtime/system.hpp"

namespace aicon {

caf::expected<caf::actor> spawn_rater(caf::actor_system& sys, const role_context& ctx);

} // namespace aicon
