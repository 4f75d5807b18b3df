# The job role: a job host runs a researcher's job for it (allocation,
# training, verification, settlement) with the researcher offline. Sizes:
# NodeIds, job ids and signatures are raw bytes.
@0xc7d1e0a3b52f9e41;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct JobSpec {
  model @0 :Text;            # "mlp:64-64-10", ...
  dataset @1 :Data;          # 32 bytes: a dataset on the data nodes, or empty with dataFile
  dataFile @2 :Text;         # a file under the trainer hosts' [host] data_files
  trainers @3 :UInt32;       # K >= 1
  steps @4 :UInt64;          # steps, or 0 with epochs
  epochs @5 :Float64;        # passes over the training rows (with a dataset), or 0
  batch @6 :UInt32;          # global batch
  lr @7 :Float32;
  momentum @8 :Float32;
  holdoutPercent @9 :UInt32; # rows held out for the accuracy (0..99)
  seed @10 :UInt64;
  transport @11 :import "trainer.capnp".Transport;
  budget @12 :UInt64;        # 0: unpaid, on trainer hosts that list this job host in
                             # [host] trainer_clients; else the escrow of jobId
  priority @13 :UInt32;
  verify @14 :Bool;          # with a budget: have the rater verify before settling
  optimizer @15 :import "trainer.capnp".Optimizer;
  weightDecay @16 :Float32 = 0.0001;
  checkpointEvery @17 :UInt32 = 10;    # steps between checkpoints (the job host keeps the last)
  chunkBytes @18 :UInt32 = 262144;     # the ring's chunk
  ringTimeoutMs @19 :UInt32 = 5000;    # a ring without progress this long fails the step
  hosts @20 :List(Data);     # unpaid: the trainer hosts (NodeIds) to spread the K trainers over;
                             # empty: the job host's linked trainer hosts. With a budget the
                             # allocator places them: must be empty
  spares @21 :List(Data);    # unpaid: stand-by trainer hosts, each replacing a lost one
  storedLeases @22 :Bool;    # unpaid, on a dataset: its trainers take the keys under leases an
                             # operator stored on the data nodes for jobId (no grants)
}

struct JobSubmit {
  spec @0 :JobSpec;
  jobId @1 :Data;            # 32 bytes; with a budget, the escrow that names this host its agent
  payer @2 :Data;            # the submitter's NodeId (the escrow's payer)
  timeMs @3 :UInt64;         # within clock_skew_ms_max of the job host's clock
  signature @4 :Data;        # ed25519 by payer over "aicon-job-v1" ‖ canonical(submit without it)
  grants @5 :List(Data);     # an unpaid job on a dataset: DataGrant messages signed by the payer,
                             # the dataset's owner, one per trainer host the job may use
}

struct JobQuery {
  union {
    list @0 :Void;
    status @1 :Data;         # job id
    cancel @2 :Data;         # job id: only its payer, signed
    logs @3 :Data;           # job id: its events, from `since`
    weights @10 :Data;       # job id: its trained weights (JobWeights), only its payer, signed
  }
  since @4 :UInt32;          # logs: the first event index wanted
  signer @5 :Data;           # cancel, weights: the payer's NodeId
  timeMs @6 :UInt64;         # cancel, weights: fresh
  signature @7 :Data;        # cancel, weights: ed25519 by signer over "aicon-jobq-v1" ‖ canonical(query without it)
  lossesSince @8 :UInt32;    # logs with withLosses: the per-step losses from this step on
  withLosses @9 :Bool;
}

struct JobInfo {
  jobId @0 :Data;
  payer @1 :Data;
  phase @2 :Text;            # queued, training, verifying, settling, done, failed, cancelled
  error @3 :Text;            # why it failed
  step @4 :UInt64;           # last step reported
  steps @5 :UInt64;
  loss @6 :Float64;
  samplesPerS @7 :Float64;
  trainers @8 :UInt32;
  accuracy @9 :Float64;      # held-out, once done
  testLoss @10 :Float64;
  model @11 :Text;
  budget @12 :UInt64;
  paidTrainers @13 :UInt64;  # settled: paid to trainers
  refunded @14 :UInt64;      # settled: returned to the payer
  session @15 :Data;         # the last ring's session (blocks carry it)
  events @16 :List(Text);    # logs: from `since`; status: empty
  eventCount @17 :UInt32;
  createdMs @18 :UInt64;
  finishedMs @19 :UInt64;
  verified @20 :Text;        # "3/4 trainers passed", or "" without verification
  modelAsset @21 :Data;      # the trained weights' asset id (owned by the payer), once registered
  losses @22 :List(Float32); # logs: each step's loss from JobQuery.lossesSince (the loss curve)
  lossesFrom @23 :UInt32;    # the step of losses[0]
  regression @24 :Bool;      # a regression model: r2 (and testLoss, the MSE) instead of accuracy
  r2 @25 :Float64;           # held-out, once done
}

struct JobWeights {
  # A finished (or cancelled) job's trained weights, for its payer: the
  # last checkpoint (aicon's checkpoint format: weights, optimizer state,
  # step), whose BLAKE2b-256 is the trained-model asset id once registered.
  jobId @0 :Data;
  step @1 :UInt64;
  checkpoint @2 :Data;
  modelAsset @3 :Data;       # the registered asset id, or empty
  model @4 :Text;            # the job's model spec
  torchscript @5 :Data;      # a job on a model asset (torch:<id>): the trained model as a
                             # TorchScript file the job host wrote (torch.jit.load reads it);
                             # when registered, the asset id is its BLAKE2b-256 and the
                             # asset's metadataHash the checkpoint's
}

struct JobList {
  jobs @0 :List(JobInfo);
}

struct JobRecord {
  # What the job host keeps in LMDB (db jobs): the signed submission, and
  # the job's info as last written.
  submit @0 :JobSubmit;
  info @1 :JobInfo;
  checkpoint @2 :Data;       # the last checkpoint taken (resumed from after a restart)
  allocToken @3 :Data;       # the allocation's capability (AllocAsk.token), kept across restarts
  ringSession @4 :Data;      # the last ring formed: its session,
  ringToken @5 :Data;        # its token,
  ringHosts @6 :List(Data);  # and each rank's host (dropped when the job resumes)
  cancelled @7 :Bool;        # its payer asked to cancel it (kept across a restart)
  torchscript @8 :Data;      # JobWeights.torchscript, once written
  settle @9 :SettlePlan;     # the settlement decided for the job, written before it is
                             # submitted: a host restarted in between submits it again
  verification @10 :Verification; # the rating asked for, written before it is asked: a host
                             # restarted before its plan asks the same rater the same again
  ringFrom @11 :UInt64;      # the step the last ring formed started at
  earlier @12 :List(import "rater.capnp".EarlierRing);
                             # with a verifier: the rings this job left (a lost rank, a
                             # preemption, this host's restart) whose kept steps are rated
                             # and paid with the job's
  verifier @13 :Data;        # the rater this job's rings finish for (their receipts name it),
                             # kept across restarts
}

struct Verification {
  request @0 :Data;          # the RateRequest's flat words (signed by this job host)
  rater @1 :Data;            # the rater's NodeId (the trainers' receipts name it)
  steps @2 :UInt64;          # steps trained
  leasePrices @3 :List(LeasePrice);
  ended @4 :Text;            # "done" or "cancelled": the phase once settled
}

struct LeasePrice {
  host @0 :Data;             # a trainer host's NodeId
  price @1 :UInt64;          # its lease's price per trainer-step
}

struct SettlePlan {
  payouts @0 :List(import "chain.capnp".Payout);
  trainers @1 :UInt64;       # the parts, for the job's events
  dataset @2 :UInt64;
  model @3 :UInt64;
  refund @4 :UInt64;
  ended @5 :Text;            # "done" or "cancelled": the phase once settled
  verified @6 :Text;         # the rating, as JobInfo.verified
}
