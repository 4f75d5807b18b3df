// The job role: a job host runs researchers' jobs for them, with the
// researcher offline. A client submits a signed JobSpec (JobSubmit); the
// host checks every field, and with a budget the escrow that names this
// host its agent (EscrowTerms), keeps the job in its LMDB (db jobs) and runs
// the whole lifecycle on a thread of its own: allocation (asks signed by the
// agent, within the payer's terms), training with checkpoints, verification
// by the rater, settlement within the terms (refund on failure or cancel).
// A host restarted with jobs unfinished resumes each from its last
// checkpoint, with the same allocation token.
#pragma once

#include <array>
#include <vector>
#include <cstdint>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "runtime/access.hpp"
#include "runtime/envelope.hpp"
#include "runtime/identity.hpp"
#include "runtime/system.hpp"
#include "schemas/job.capnp.h"

namespace aicon::train {
struct job_options;
}

namespace aicon {

caf::expected<caf::actor> spawn_job_role(caf::actor_system& sys, const role_context& ctx);

/// A JobSubmit of `spec` for job `job` signed by `payer` at `now_ms`;
/// `grants`: an unpaid job on the payer's own dataset, its DataGrants (one
/// per trainer host the job may use).
envelope sign_job_submit(const identity& payer, schema::JobSpec::Reader spec,
                         const std::array<uint8_t, 32>& job, uint64_t now_ms,
                         const std::vector<envelope>& grants = {});

/// A JobQuery for `job`'s trained weights (JobWeights), signed by its payer at `now_ms`.
envelope sign_job_weights(const identity& payer, const std::array<uint8_t, 32>& job,
                          uint64_t now_ms);
/// A JobQuery cancelling `job`, signed by its payer at `now_ms`.
envelope sign_job_cancel(const identity& payer, const std::array<uint8_t, 32>& job,
                         uint64_t now_ms);

/// A JobWeights answer (`weights`) against the trained-model asset the
/// chain holds for it (`asset`: the AssetInfo a ledger answered for
/// weights.modelAsset): kind "trained-model", owned by `payer`, and the
/// files hash to it (the TorchScript to the id and the checkpoint to its
/// metadataHash, or without a TorchScript the checkpoint to the id).
/// Errors name what differs.
caf::error check_job_weights(const envelope& weights, const envelope& asset, const node_id& payer);

/// The JobSpec of job `o` with K = `trainers`: the model, its data
/// (o.dataset, 64 hex digits, or o.data_file), the training's
/// hyperparameters, transport, checkpoint interval, ring chunk and timeout.
/// Budget, priority, verification, hosts, spares and stored leases are the
/// caller's to set.
void fill_job_spec(schema::JobSpec::Builder b, const train::job_options& o, uint32_t trainers);

/// Every field of a spec, checked: the first bad one refused by its name
/// (invalid_argument "spec.FIELD: ...").
caf::error check_job_spec(schema::JobSpec::Reader s);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row job_access[] = {
  {"JobSubmit", "with a budget: the payer of an escrow whose terms name this host its agent; without: a client in this host's `[host] trainer_clients`; at most `jobs_running_max` at once", "ed25519 by the payer over the dated submission; the escrow and its terms on this host's chain; an unpaid job on a dataset: the payer's DataGrants for it (its owner's, checked again by the data nodes)", "refused by the field's or rule's name, nothing allocated or started"},
  {"JobQuery", "list, status, logs: any admitted peer; cancel, weights: the job's payer", "cancel, weights: ed25519 by the payer over the dated query", "`forbidden` / `bad_signature`, the job unchanged, no weights"},
};

} // namespace aicon
