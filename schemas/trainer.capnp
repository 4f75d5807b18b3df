# Trainers: the messages of the actor ring's allreduce.
@0xc7a93e55d2b10f48;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct RingChunk {
  # One chunk of one segment, sent to the right neighbour. Its answer (a
  # RingAck) is the sender's credit back: a rank has at most ring_credits
  # chunks unanswered, so no mailbox grows without bound.
  ring @0 :Data;        # id of the ring (a job's session), 32 bytes
  rank @1 :UInt32;      # the receiving rank
  collective @2 :UInt64;# sequence number of the allreduce on this ring (from 1)
  phase @3 :UInt8;      # 0 = reduce-scatter, 1 = all-gather
  step @4 :UInt32;      # 0 .. ranks-2 within the phase
  chunk @5 :UInt32;     # index of the chunk within its segment
  values @6 :Data;      # float32, little-endian
  token @7 :Data;       # the session's 32-byte token (TrainerJoin.token): only
                        # the ring's members hold it, so no one else can feed
                        # a rank chunks
}

struct RingAck {
  collective @0 :UInt64;
}

# ---- Jobs and trainers --------------------------------------------------

struct TrainConfig {
  model @0 :Text;          # "mlp:64-64-10", "softmax:64-10"
  seed @1 :UInt64;         # initialization and epoch shuffles
  globalBatch @2 :UInt32;  # rows per step over all trainers
  lr @3 :Float32;
  momentum @4 :Float32;
  weightDecay @5 :Float32;
  dataFile @6 :Text;       # CSV/NPY/IDX on the trainer's host (until datasets are fetched)
  testPercent @7 :UInt32;  # held out for evaluation, by a seeded permutation
  splitSeed @8 :UInt64;
  standardize @9 :Bool;
  chunkBytes @10 :UInt32;  # actor ring grain
  credits @11 :UInt32;     # actor ring chunks in flight per link
  ringTimeoutMs @12 :UInt32;
  dataset @13 :Data;       # fetch this dataset (32-byte id) from data nodes instead of dataFile;
                           # its manifest's transform is already applied
  dataNodes @14 :List(Data); # NodeIds of data nodes that may hold it (nearest is used)
  job @15 :Data;           # the job the trainers' leases are for (32 bytes)
  transportName @16 :Text; # unused (the transport by name, before `transport`)
  linkKey @17 :Data;       # 32 random bytes per ring, from the coordinator (stream)
  dataGrant @18 :import "data.capnp".DataGrant; # with a dataset: the payer's grant for this trainer's host
                           # (set per join), carried in its KeyRequest
  transport @19 :Transport; # how ring chunks travel
  optimizer @20 :Optimizer; # how every trainer updates the weights (the same on every rank)
}

enum Optimizer {
  sgd @0;          # default: SGD with momentum and weight decay (v = m v + g + wd w; w -= lr v)
  adamw @1;        # AdamW: Adam's moments (beta1 0.9, beta2 0.999, eps 1e-8) with decoupled
                   # weight decay (w -= lr (m^ / (sqrt(v^) + eps) + wd w))
}

enum Transport {
  stream @0;       # default: one direct TCP stream per ring link, authenticated with
                   # linkKey, AES-256-GCM frames
  streamPlain @1;  # the same, frames in clear (trusted networks, benchmarks)
  actor @2;        # RingChunk messages over the hosts' TLS links
  nccl @3;         # ncclAllReduce on each trainer host's GPU
}

struct TrainerJoin {
  # Makes (or replaces) the trainer of `rank` in `session` on this host.
  session @0 :Data;        # 32 bytes; also the ring's id
  rank @1 :UInt32;
  size @2 :UInt32;
  right @3 :Data;          # NodeId of the host of rank + 1 (may be this host)
  config @4 :TrainConfig;
  checkpoint @5 :Data;     # a saved checkpoint to resume from (empty: fresh)
  token @6 :Data;          # 32 random bytes per ring from its coordinator: the session's
                           # capability. Every later TrainStep, RingLink, RingRun and
                           # TrainQuery for the session must carry it (refused otherwise);
                           # the coordinator hands it to the job's rater and no one else
  lease @7 :import "alloc.capnp".LeaseInfo;
                           # the allocator's signed lease of this host for config.job: what
                           # entitles the join to one of the host's trainer slots
  auth @8 :JoinAuth;       # without a lease: the client's own signature, honoured only when
                           # the host's operator lists that client in [host] trainer_clients
}

struct JoinAuth {
  # A client's signature over a TrainerJoin that carries no lease (an
  # operator's own, unpaid job on its own hosts).
  signer @0 :Data;         # the client's NodeId (ed25519 public key)
  timeMs @1 :UInt64;       # its clock; must be within clock_skew_ms_max of the host's
  signature @2 :Data;      # ed25519 by signer over "aicon-join-v1" ‖ canonical(the join
                           # with auth.signature unset)
}

struct JoinAck {
  rank @0 :UInt32;
  trainRows @1 :UInt64;
  testRows @2 :UInt64;
  params @3 :UInt64;
  linkHost @4 :Text;       # stream transport: where this rank's left neighbour dials
  linkPort @5 :UInt16;
  ncclId @6 :Data;         # nccl transport, rank 0 only: its ncclGetUniqueId bytes
}

struct RingLink {
  # Stream transport, after every rank joined: dial the right neighbour
  # (its JoinAck's linkHost:linkPort) and authenticate both ways. -> RingAck
  session @0 :Data;
  rank @1 :UInt32;
  host @2 :Text;
  port @3 :UInt16;
  ncclId @4 :Data;         # nccl transport instead: rank 0's unique id, to every rank,
                           # which then calls ncclCommInitRank (all ranks at once)
  token @5 :Data;          # the session's token (TrainerJoin.token)
}

struct TrainStep {
  session @0 :Data;
  rank @1 :UInt32;
  step @2 :UInt64;         # global step number (from 0)
  epoch @3 :UInt64;        # whose permutation the batch is drawn from
  cursor @4 :UInt64;       # first position of the global batch in it
  token @5 :Data;          # the session's token (TrainerJoin.token)
  count @6 :UInt32;        # steps to run from here on their own (0 or 1: this one): the
                           # ring's collective is the barrier; the schedule moves on by
                           # the global batch, to the next epoch at the end of the rows.
                           # No message of the coordinator is on this path: it polls
                           # progress (TrainQuery.progress) beside the steps and stops the
                           # ring early with TrainQuery.stop; every rank stops after the same
                           # step, agreed in the step's allreduce (StepDone.stopped)
  checkpointEvery @7 :UInt32;  # with count > 1, rank 0: keep a checkpoint after every step
                               # that is a multiple of it, for the next progress poll (0: none)
  unverified @8 :Bool;     # no rater will check the job: the run keeps no evidence (else the
                           # weights before every step, and a run whose evidence would pass
                           # the host's [limits] trainer_evidence_bytes is refused)
}

struct StepDone {
  rank @0 :UInt32;
  step @1 :UInt64;
  lossSum @2 :Float64;     # summed cross-entropy over this trainer's rows
  rows @3 :UInt32;
  computeUs @4 :UInt64;
  allreduceUs @5 :UInt64;
  digest @6 :Data;         # BLAKE2b of (weights before, batch indices, local gradient)
  lossSums @7 :List(Float64);   # each step's loss summed over every rank's rows (agreed in the
                                # step's allreduce), in order, for the run's last steps up to
                                # `step` that no progress poll acknowledged (all of them
                                # without polls)
  allreduceUsEach @8 :List(UInt64); # and each of those steps' allreduce time
  stopped @9 :Bool;        # the ring stopped before `count` steps (TrainQuery.stop); `step`
                           # is the last step run, the same on every rank
  stepUsEach @10 :List(UInt64); # and each of those steps' wall time (as TrainProgress.stepUs)
}

struct TrainProgress {
  # A trainer's answer to a progress poll: the steps run since the poll's
  # `from`, in a batch, and the latest checkpoint kept (TrainStep.checkpointEvery)
  # when it is newer than the poll's.
  first @0 :UInt64;             # global step of lossSums[0]
  lossSums @1 :List(Float64);   # each step's loss summed over every rank's rows
  allreduceUs @2 :List(UInt64); # this rank's allreduce time of each step
  stepUs @3 :List(UInt64);      # wall time from the end of the step before to the end of this one
  checkpointStep @4 :UInt64;    # steps run when `checkpoint` was taken (0: none here)
  checkpoint @5 :Data;          # the checkpoint file format (actors/trainer/model.hpp)
  running @6 :Bool;             # false once no run is in progress (the poll is answered at once)
}

struct TrainQuery {
  session @0 :Data;
  rank @1 :UInt32;
  verifier @8 :Data;       # finish: the rater (NodeId) the work receipt names
  token @9 :Data;          # the session's token (TrainerJoin.token): only the coordinator
                           # and the job's rater finish, drop or read a trainer
  union {
    checkpoint @2 :Void;   # -> CheckpointData
    evaluate @3 :Void;     # -> EvalResult on the held-out rows
    finish @4 :Void;       # -> SessionLog; the trainer stops training but keeps its
                           # work log and evidence for the rater (until drop, or keepMs)
    evidence @5 :UInt64;   # global step -> StepEvidence (weights before it, its batch)
    digests @6 :Void;      # -> WorkLogDigests
    drop @7 :Void;         # -> RingAck; the finished trainer and its evidence are gone
    progress :group {      # -> TrainProgress, once there is news or after waitMs (a long poll)
      from @11 :UInt64;    # the first step the coordinator has not seen
      haveCheckpoint @12 :UInt64; # the checkpoint step it has (a newer one comes along)
      waitMs @13 :UInt32;  # hold the poll up to this long for a batch of steps (at most 10000)
    }
    stop @14 :Void;        # -> RingAck; the running ring stops after the next step, every rank
                           # at the same one (the stop is agreed in that step's allreduce)
    weightsDigest @15 :UInt64; # global step -> WeightsDigest: BLAKE2b of this rank's evidence
                           # weights before it (the rater compares the ranks of a ring)
    partnerContribution @17 :UInt64; # global step -> PartnerContribution: what this rank's
                           # partner in a ring of two (stream transport, verified job) signed
                           # for the gradient it sent at that step
  }
  withGradient @10 :Bool;  # evidence: also this rank's local gradient of that step, recomputed
                           # (a rater in another numeric environment compares within a tolerance)
  keepMs @16 :UInt64;      # finish: keep the log and evidence this long for the rater (0: an
                           # hour; at most 7 days): a ring the job leaves is rated at its end
}

struct StepEvidence {
  step @0 :UInt64;
  epoch @1 :UInt64;
  cursor @2 :UInt64;
  weights @3 :Data;        # float32 parameters before the step
  indices @4 :List(UInt32);# the training rows this rank used
  gradient @5 :Data;       # TrainQuery.withGradient: float32 local gradient (must hash, with the
                           # weights and rows, to the step's committed digest)
}

struct PartnerContribution {
  step @0 :UInt64;
  hash @1 :Data;           # train::contribution_hash of the floats the partner sent (checked here
                           # against the floats that came, before they were added)
  signature @2 :Data;      # by the partner's host: train::contribution_signing_bytes
}

struct WeightsDigest {
  step @0 :UInt64;
  digest @1 :Data;         # BLAKE2b-256 of the float32 weights before the step
}

struct WorkLogDigests {
  firstStep @0 :UInt64;    # global step of digests[0]
  digests @1 :List(Data);  # one BLAKE2b-256 per step; their Merkle root is the log root
}

struct CheckpointData {
  bytes @0 :Data;          # the checkpoint file format (actors/trainer/model.hpp)
}

struct EvalResult {
  accuracy @0 :Float64;    # classification; 0 for a regression model
  rows @1 :UInt64;
  loss @2 :Float64;        # mean cross-entropy, or for a regression model the mean squared error
  regression @3 :Bool;     # a model with one output column: r2 is its metric
  r2 @4 :Float64;          # regression: 1 - SSE / SST on the held-out rows
}

struct SessionLog {
  rank @0 :UInt32;
  steps @1 :UInt64;        # steps this trainer logged
  logRoot @2 :Data;        # Merkle root of the step digests
  trainer @3 :Data;        # NodeId of the host that ran it
  signature @4 :Data;      # by trainer over "aicon-worklog-v3" ‖ session ‖ rank ‖ ring size ‖
                           # firstStep ‖ steps ‖ logRoot ‖ terms (work.hpp worklog_signing_bytes)
  firstStep @5 :UInt64;    # global step of the first logged step
  receipt @6 :import "chain.capnp".SignedWorkReceipt;
                           # finish with a verifier: this trainer's work receipt
                           # (units = steps x its rows), signed by the trainer host;
                           # the rater countersigns it once the work checks out
  environment @7 :Text;    # the numeric environment its steps ran in, where it can differ
                           # between hosts (a torch model: libtorch version, threads, CPU
                           # kernels); empty for the built-in models (the same on every host)
  terms @8 :Data;          # train::terms_digest of the TrainConfig it ran (model, data, split,
                           # seed, global batch): what a rater must re-execute against
}

struct RingRun {
  # Collectives only (the allreduce benchmark, like nccl-tests): the trainer
  # of a ring-only session (TrainerJoin with an empty model) allreduces a
  # buffer of `floats` `warmup + iterations` times.
  session @0 :Data;
  rank @1 :UInt32;
  floats @2 :UInt64;
  iterations @3 :UInt32;
  warmup @4 :UInt32;
  token @5 :Data;          # the session's token (TrainerJoin.token)
}

struct RingTimes {
  rank @0 :UInt32;
  micros @1 :List(UInt64); # one per timed iteration
  wrong @2 :UInt64;        # elements that were not the expected sum
}
