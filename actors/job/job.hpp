// The coordinator of one training session: forms the ring of trainers over
// the hosts it is given (hosts ordered by measured round trip, each host's
// trainers adjacent so most links stay inside a host), assigns each trainer
// its slice of every global batch, drives the steps, checkpoints every
// `checkpoint_every` steps and reports progress. If a trainer or its host
// dies, the step fails within the ring timeout; the coordinator drops the
// hosts that no longer answer, re-forms the ring with the survivors from
// the last checkpoint and goes on. At the end it evaluates the model on the
// held-out rows and collects every trainer's signed work log.
//
// It runs in any process linked to the hosts (the CLI, the console, tests)
// and talks to their trainer roles through the directory only.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "actors/data_node/remote.hpp"
#include "transport/transport.hpp"
#include "runtime/client.hpp"

namespace aicon::train {

/// A ring the job re-formed away from (a rank lost): its ranks that
/// answered the finish, for the rater to verify and the payer to pay for
/// the steps the job kept of it.
/// The most earlier rings one rating takes (the rater refuses more):
/// rings past it are not rated and their steps are refunded.
constexpr size_t max_earlier_rings = 64;

struct earlier_ring {
  std::array<uint8_t, 32> session{}, token{};
  std::vector<node_id> rank_hosts; ///< every rank's, in rank order
  std::vector<envelope> logs;      ///< SessionLog of the ranks that answered
  uint64_t first_step = 0;         ///< the job's step it started at
  uint64_t kept_steps = 0;         ///< its steps up to the checkpoint the next ring resumed from
};

struct job_options {
  std::vector<node_id> hosts;      ///< hosts running the trainer role, linked to the client
  /// Stand-by trainer hosts: when a host is lost, the ring is re-formed with
  /// a live spare in its place (and without one if none is left).
  std::vector<node_id> spare_hosts;
  uint32_t trainers_per_host = 1;
  /// Without an allocator: trainers on each host, where it differs from
  /// trainers_per_host (K spread unevenly over the hosts).
  std::map<node_id, uint32_t> per_host;
  uint64_t steps = 100;
  uint32_t checkpoint_every = 10;
  /// Steps the trainers run on their own per request: by default the whole
  /// job (checkpoints and progress come back through polls beside the
  /// steps); 1 sends a TrainStep per step, as a debugger would.
  uint32_t steps_per_request = 10'000'000;
  /// How long a progress poll waits for a batch of steps.
  uint32_t poll_ms = 250;
  std::filesystem::path checkpoint_file; ///< also written here when set
  /// Called with every checkpoint taken (a job host keeps it in LMDB).
  std::function<void(const std::vector<uint8_t>&)> on_checkpoint;
  /// Start from this checkpoint (its step, epoch and cursor) instead of
  /// step 0: a job host resuming a job after a restart.
  std::vector<uint8_t> resume;
  /// The allocation's capability (AllocAsk.token) to use instead of a
  /// fresh one: a resumed job keeps the leases of the job it continues.
  std::optional<std::array<uint8_t, 32>> alloc_token;
  /// Called with each ring formed (its session, token, each rank's host
  /// and the step it starts at): a job host keeps it, to finish that
  /// ring's trainers (or drop them) if it restarts before the job ends.
  std::function<void(const std::array<uint8_t, 32>& session, const std::array<uint8_t, 32>& token,
                     const std::vector<node_id>& rank_hosts, uint64_t from_step)>
    on_ring;
  /// With a verifier: rings of this job from before (a job host's
  /// restart), to be rated with it; they start job_result::earlier.
  std::vector<earlier_ring> earlier;
  /// Called with each ring the job leaves (a lost rank, a preemption)
  /// whose kept steps are to be rated with the job's.
  std::function<void(const earlier_ring&)> on_earlier;
  /// How long the trainers of a ring the job leaves keep its log and
  /// evidence for the rater, who rates it at the job's end (0: their
  /// default, an hour; at most 7 days).
  uint64_t earlier_keep_ms = 0;
  uint32_t max_reforms = 3;
  /// Instead of `hosts`: ask the allocator on this host for `trainers`
  /// trainers (gang), under the job's escrow `job` (see AllocAsk); renew the
  /// leases while training, ask for replacements when a host is lost, yield
  /// when preempted (checkpoint, release, wait, resume) and release at the end.
  std::optional<node_id> allocator;
  /// With an allocator: the escrow's payer, who signs the ask (the
  /// allocator refuses any other); it must outlive the job.
  const identity* payer = nullptr;
  uint32_t trainers = 0;
  uint32_t priority = 0;
  uint64_t max_price = 0;      ///< per trainer per step (0: any)
  std::string device = "cpu";
  std::string data_site;
  uint32_t alloc_deadline_ms = 0; ///< 0: wait for trainers as long as needed
  uint32_t lease_ms = 10000;
  /// The rater that will verify this job: each trainer's SessionLog then
  /// carries a work receipt naming it, signed by the trainer host.
  std::optional<node_id> verifier;
  /// Benchmarks: the trainers keep every step's evidence (and a ring of
  /// two on a stream signs its contributions) as for a verifier, with none.
  bool keep_evidence = false;
  /// Set from any thread to stop the job after the current step.
  std::shared_ptr<std::atomic<bool>> cancel;
  /// Asked when a cancel comes after some steps: true to stop the ring
  /// there, evaluate and return the result (job_result::cancelled) so the
  /// steps run can be verified and paid (the job role, for its payers'
  /// cancels); unset or false: the cancel is an error (errc::cancelled).
  std::function<bool()> finish_on_cancel;
  // The training itself (schema TrainConfig).
  std::string model = "mlp:64-64-10";
  uint64_t seed = 1;
  uint32_t global_batch = 32;
  float lr = 0.05f;
  float momentum = 0.9f;
  std::string optimizer = "sgd"; ///< "sgd" or "adamw" (train::parse_optimizer)
  float weight_decay = 1e-4f;
  std::string data_file;
  /// Instead of data_file: a dataset pulled by every trainer from these
  /// data nodes, with keys released under `job`'s leases. With an
  /// allocator (and so an escrow and its payer), each trainer host gets the
  /// payer's DataGrant in its join instead: no lease need be written.
  std::string dataset;               ///< 64 hex digits
  /// DataGrants already signed by the dataset's owner, per trainer host (a
  /// job host running an unpaid job on its submitter's dataset); when
  /// given, the trainers get these instead of grants signed by `payer`.
  std::map<node_id, envelope> signed_grants;
  std::vector<node_id> data_nodes;
  uint64_t grant_ms = 6 * 3600 * 1000; ///< how long a DataGrant is valid
  /// The chain the escrow is on (run_job learns it from the allocator's
  /// ledger; the payer's grants name it).
  std::optional<std::array<uint8_t, 32>> chain;
  /// With data_file: the dataset's asset id on the chain, when registered
  /// (file_asset_id); its owner is paid its price at settlement.
  std::optional<std::array<uint8_t, 32>> dataset_asset;
  std::array<uint8_t, 32> job{};
  uint32_t test_percent = 20;
  uint64_t split_seed = 2026;
  bool standardize = true;
  /// "stream" (a direct TCP stream per ring link, AES-GCM sealed),
  /// "stream-plain" (the same, frames in clear after the authenticated
  /// handshake: trusted networks only) or "actor" (RingChunk messages over
  /// the hosts' TLS links); see stream_ring.hpp. "nccl": ncclAllReduce on
  /// each trainer host's GPU (rank 0's unique id sent to all in RingLink).
  train::transport transport = train::transport::STREAM;
  uint32_t chunk_bytes = 256 << 10;
  uint32_t credits = 4;
  uint32_t ring_timeout_ms = 5000;
};

struct step_report {
  uint64_t step = 0;
  double loss = 0;           ///< mean cross-entropy of the global batch
  double samples_per_s = 0;  ///< over the step (rank 0's wall time from the step before)
  double allreduce_ms = 0;   ///< slowest trainer's allreduce in the step
  uint32_t trainers = 0;
};

struct job_result {
  uint64_t steps = 0;
  double accuracy = 0;       ///< on the held-out rows
  double test_loss = 0;      ///< mean cross-entropy, or a regression model's mean squared error
  bool regression = false;   ///< a regression model: r2 is the metric, accuracy 0
  double r2 = 0;             ///< regression: held-out R^2
  std::vector<uint8_t> checkpoint; ///< the final weights and optimizer state
  std::vector<envelope> logs;      ///< SessionLog of every trainer of the last ring
  uint32_t reforms = 0;
  std::vector<std::string> events; ///< ring formed, trainer lost, re-formed, ...
  double seconds = 0;
  // The last ring, for the rater: its session and each rank's host.
  std::array<uint8_t, 32> session{};
  std::array<uint8_t, 32> token{}; ///< the session's capability, for the rater only
  std::vector<node_id> rank_hosts;
  uint64_t ring_from = 0; ///< the step the last ring started at
  /// The rings before the last (with a verifier), oldest first.
  std::vector<earlier_ring> earlier;
  /// With an allocator: each trainer host's price per trainer-step, as its
  /// lease names it (what the host offered; at most the job's cap).
  std::map<node_id, uint64_t> lease_prices;
  uint64_t train_rows = 0;
  uint32_t preemptions = 0;
  bool cancelled = false; ///< stopped early by a cancel (finish_on_cancel): `steps` were run
  /// Requests that started steps (TrainStep, one per rank per run) and the
  /// progress polls beside them: what the coordinator sent while training.
  uint64_t step_requests = 0, polls = 0;
};

using progress_fn = std::function<void(const step_report&)>;

/// How a job reaches the hosts and whose key its own signatures use: a
/// client's directory and key (the CLI, the console, tests), or inside a
/// host its directory through blocking requests and the host's key (the
/// job role).
class job_link {
public:
  job_link(data::requester rq, const identity& self) : rq_(std::move(rq)), self_(&self) {
  }
  job_link(client& c) : rq_(c), self_(&c.self()) { // NOLINT(google-explicit-constructor)
  }
  caf::expected<caf::actor> lookup(const std::string& name) const {
    return rq_.lookup(name);
  }
  caf::expected<envelope> request(const caf::actor& dst, envelope req,
                                  std::chrono::milliseconds timeout) const {
    return rq_.request(dst, std::move(req), timeout);
  }
  const identity& self() const {
    return *self_;
  }
  const data::requester& requester() const {
    return rq_;
  }

private:
  data::requester rq_;
  const identity* self_;
};

/// Stream transport: once every rank of `session` joined, tells rank r (on
/// trainer role roles[r]) to dial rank r + 1 at the address of its JoinAck;
/// nccl: sends rank 0's unique id to every rank at once. The error names
/// the rank that could not link.
/// `token` is the session's TrainerJoin.token.
caf::error link_streams(const job_link& c, const std::array<uint8_t, 32>& session,
                        const std::array<uint8_t, 32>& token,
                        const std::vector<caf::actor>& roles, const std::vector<envelope>& acks);

caf::expected<job_result> run_job(const job_link& c, const job_options& o, const progress_fn& progress = {});

/// "held-out accuracy A, test loss L", or for a regression model "held-out
/// R^2 R, mean squared error M".
std::string describe_metrics(const job_result& r);

/// One line per work log of a job's last ring: "work log rank R: N steps,
/// root <16 hex>, signed by <8 hex>" (the trainer's signed log root).
std::vector<std::string> describe_logs(const std::vector<envelope>& logs);

} // namespace aicon::train
