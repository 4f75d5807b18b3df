# The rater (Contribution Rating System): verification of a training
# session's work logs, countersigned receipts, slashing.
@0xd4d88a8909eeb408;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

using Trainer = import "trainer.capnp";

struct RateRequest {
  # Asks the rater to verify one escrowed job's session, once. Only the
  # escrow's payer may ask (signature), and nothing in it sets an amount:
  # the reward and the slash come from the chain's rules (genesis
  # reward_percent of the escrow, slash_percent of a failed trainer's stake).
  job @0 :Data;             # 32 bytes: a job escrowed (not yet settled) on the rater's chain
  session @1 :Data;         # the ring's session (32 bytes)
  config @2 :Trainer.TrainConfig;  # the job's (dataFile must be readable by the rater)
  ranks @3 :List(Data);     # host NodeId of each rank, in rank order
  logs @4 :List(Trainer.SessionLog); # every rank's signed log (with its receipt)
  fraction @5 :Float64;     # no longer accepted (must be 0): the rater's own rule (0.1)
  target @6 :Float64;       # no longer accepted (must be 0): the rater's own rule (0.99)
  slashPercent @7 :UInt32;  # no longer accepted (must be 0): genesis slash_percent
  reward @8 :UInt64;        # no longer accepted (must be 0): genesis reward_percent of the escrow
  payer @9 :Data;           # the job's payer, as its escrow names it (32 bytes)
  dataset @10 :Data;        # asset id of the dataset the job used (empty: none registered)
  model @11 :Data;          # asset id of the model the job used (empty: none registered)
  signature @12 :Data;      # ed25519 by payer over "aicon-rate-v1" ‖ chain id ‖
                            # canonical(this request with signature unset)
  token @13 :Data;          # the session's token (TrainerJoin.token), so the rater may
                            # read the trainers' digests and evidence
  firstStep @15 :UInt64;    # the step the last ring started at (each of its logs must
                            # start there; earlier rings end by it)
  earlier @14 :List(EarlierRing);
                            # the rings of this job before the last one (re-formed after a
                            # lost rank), oldest first: verified and paid like the last,
                            # each rank for its part of the job
}

struct EarlierRing {
  # A ring the job re-formed away from. Its ranks that answered the finish
  # have a log here; a lost rank has none and is neither paid nor slashed.
  session @0 :Data;         # 32 bytes
  token @1 :Data;           # its session's token
  ranks @2 :List(Data);     # host NodeId of every rank of the ring, in rank order
  logs @3 :List(Trainer.SessionLog); # the logs of the ranks that answered (each names its rank)
  firstStep @4 :UInt64;     # the job's step this ring started at
  keptSteps @5 :UInt64;     # its steps the job kept: up to the checkpoint the next ring
                            # resumed from (the steps after it were trained again)
}

struct RankVerdict {
  rank @0 :UInt32;
  trainer @1 :Data;
  passed @2 :Bool;
  why @3 :Text;             # failed: the first check that failed
  units @4 :UInt64;         # verified work units (0 when failed)
  challenged @5 :UInt32;    # steps re-executed
  session @6 :Data;         # the ring's session (the last ring's or an earlier one's)
  paidSteps @7 :UInt64;     # passed: the steps it is paid for (its log's, at most the
                            # steps its ring kept); 0 when failed
}

struct RateResult {
  verdicts @0 :List(RankVerdict);
  seed @1 :Data;            # the challenge seed
  samplesPerTrainer @2 :UInt32;
  receipts @3 :UInt32;      # countersigned and submitted to the block generator
  slashed @4 :UInt64;       # total stake slashed
  verifyMs @5 :UInt64;      # time spent re-executing
  minted @6 :UInt64;        # PoV reward minted
  rewards @7 :List(RewardShare);
}

struct RewardShare {
  wallet @0 :Data;
  amount @1 :UInt64;
}

struct RatingRecord {
  # What the rater keeps per rated job (LMDB rated_jobs, behind the magic
  # "aRR2"): the decision, written before anything moves, so a rater
  # killed while submitting its transactions submits the same ones again
  # when the same request comes back (the chain refuses what it already
  # has: a receipt earned, a job rewarded, a target slashed for the job).
  session @0 :Data;         # the session rated (32 bytes)
  ratedMs @1 :UInt64;       # when, in ms since the epoch
  result @2 :Data;          # the RateResult's flat words: as decided, final once done
  done @3 :Bool;            # every transaction below was submitted and answered
  receipts @4 :List(Data);  # countersigned SignedWorkReceipt flat words
  slashes @5 :List(SlashAction);
  rewards @6 :List(RewardShare); # the MintReward's payouts (empty: none)
}

struct SlashAction {
  target @0 :Data;          # the trainer host's NodeId
  reason @1 :Text;
  cut @2 :UInt64;           # what the chain cuts by its rule, as the stake stood
}
