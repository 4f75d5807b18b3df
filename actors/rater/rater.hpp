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
// and model ids); failing ones are slashed (the genesis slash_percent of
// their stake, computed by the chain) and earn nothing; the reward (the
// genesis reward_percent of the job's escrow, once per job) is minted to
// passing trainers by verified units, none to a trainer paid by itself.
//
// Who may ask: only the payer its escrow names, by a signature bound to this
// chain; each job is rated once (kept in LMDB, rated_jobs). A trainer is
// slashed only for work it signed: a log under its key and a receipt naming
// this job whose steps fail re-execution or whose evidence it withholds.
// A log that is not the trainer's fails the rank without slashing anyone.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "runtime/access.hpp"
#include "runtime/envelope.hpp"
#include "runtime/identity.hpp"
#include "runtime/system.hpp"
#include "schemas/rater.capnp.h"

namespace aicon {

caf::expected<caf::actor> spawn_rater(caf::actor_system& sys, const role_context& ctx);

/// "aicon-rate-v1" ‖ chain ‖ canonical(req with its signature unset): what
/// the payer signs.
std::vector<uint8_t> rate_request_signing_bytes(const std::array<uint8_t, 32>& chain,
                                                schema::RateRequest::Reader req);

/// `req` with payer = `payer`'s key and its signature for `chain`.
envelope sign_rate_request(const identity& payer, const std::array<uint8_t, 32>& chain,
                           schema::RateRequest::Reader req);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row rater_access[] = {
  {"RateRequest", "the payer the job's escrow names, or the agent its terms name, once per job (the same session again gets the verdict given, nothing moves twice)", "ed25519 over chain id + request; the escrow on the rater's chain; `rated_jobs`", "refused by name, nothing rated"},
};

} // namespace aicon
