// The trainer role: runs the trainers of training sessions on this host.
// A job coordinator sends TrainerJoin (rank, ring size, the host of the
// right neighbour, the training config, optionally a checkpoint); the role
// spawns a ring member and a trainer (a detached actor: a step is long
// compute and a blocking allreduce) and routes RingChunk, TrainStep and
// TrainQuery to them by (session, rank). A step: the rank's slice of the
// global batch, the gradient summed over it scaled by 1 / global batch, the
// ring's allreduce (sum), the optimizer step; every step's digest of
// (weights before, batch indices, local gradient) goes into the work log
// whose Merkle root the trainer signs at the end.
//
// One TrainStep runs a whole job's steps (TrainStep.count): the trainer
// sends itself a message per step, so between two steps it answers its
// coordinator's progress polls (TrainQuery.progress: the steps since the
// last poll and rank 0's latest checkpoint, in one batch) and a stop
// (TrainQuery.stop). Two control words ride after the gradient in every
// allreduce: a stop flag, so every rank stops after the same step, and
// the rank's loss, so rank 0 knows the whole batch's loss and alone
// reports progress. No coordinator message is on the step path.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "runtime/access.hpp"
#include "runtime/envelope.hpp"
#include "runtime/system.hpp"
#include "schemas/trainer.capnp.h"

namespace aicon {

caf::expected<caf::actor> spawn_trainer(caf::actor_system& sys, const role_context& ctx);

/// `join` (a TrainerJoin without a lease) signed by `client` at `now_ms`
/// (wall clock): taken by hosts whose [host] trainer_clients list `client`.
envelope sign_trainer_join(const identity& client, schema::TrainerJoin::Reader join,
                           uint64_t now_ms);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row trainer_access[] = {
  {"TrainerJoin", "the job holding a lease for this host from an allocator it offers to (at most the lease's count), or a client in its `[host] trainer_clients`; within `trainer_slots`, files only under `data_files`; replacing a running rank: its coordinator", "the allocator's signed lease (`TrainerJoin.lease`), or the client's dated signature (`TrainerJoin.auth`); the session token (for a replacement)", "`forbidden` / `bad_signature` / `busy`, nothing started"},
  {"RingChunk", "the ring's members", "the session token", "`forbidden`"},
  {"TrainStep", "the session's coordinator", "the session token", "`forbidden`"},
  {"RingLink", "the session's coordinator", "the session token", "`forbidden`"},
  {"RingRun", "the session's coordinator", "the session token", "`forbidden`"},
  {"TrainQuery", "the session's coordinator and the job's rater", "the session token", "`forbidden`, the trainer untouched"},
};

} // namespace aicon
