# The PoV chain: transactions, blocks tied to the training sessions that
# earned them, and committee votes. Amounts are in the smallest unit
# (common.capnp Amount); keys and hashes are raw bytes with fixed sizes.
@0xb1ede24d61b2a701;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct Transfer {
  to @0 :Data;        # recipient wallet (32-byte ed25519 public key)
  amount @1 :UInt64;  # > 0
}

struct EscrowLock {
  # A job submission: the payer locks the job's budget.
  jobId @0 :Data;     # 32 bytes, unique per escrow
  amount @1 :UInt64;  # > 0
  terms @2 :EscrowTerms; # optional: a job host runs the job for the payer (agent)
}

struct EscrowTerms {
  # What the payer allows the job host that runs its job (the agent) to do
  # with the escrow while the payer is offline. The chain enforces them: the
  # agent may settle once, before the deadline, paying trainers at most
  # maxPrice x units in all and each listed asset's owner its registered
  # price; the rest returns to the payer. Until the deadline only the agent
  # may settle; after it only the payer, and only as a full refund.
  agent @0 :Data;        # NodeId (wallet) of the job host (32 bytes)
  maxPrice @1 :UInt64;   # per trainer per step
  units @2 :UInt64;      # trainer-steps signed for (K x steps); maxPrice x units <= amount
  deadlineMs @3 :UInt64; # block time (ms since the epoch) the agent must settle by
  assets @4 :List(Data); # asset ids (32 bytes) the job uses: dataset, model
}

struct Payout {
  to @0 :Data;        # wallet (32 bytes)
  amount @1 :UInt64;
}

struct Settle {
  # Pays trainers, data owner and model owner from a job's escrow; whatever
  # is left goes back to the payer. Only the escrow's payer may settle it,
  # or, for an escrow with terms, its agent within them (EscrowTerms).
  jobId @0 :Data;
  payouts @1 :List(Payout); # total must not exceed the escrow
}

struct MintReward {
  # PoV reward for one escrowed job; only an authority named in the genesis
  # (the rater) may mint, once per job, at most the genesis reward_percent
  # of the job's escrowed amount (rule reward_exceeds_rule).
  payouts @0 :List(Payout);
  jobId @1 :Data;        # 32 bytes: the job whose verified work earned it
}

struct AssetRegister {
  assetId @0 :Data;      # 32 bytes, unique
  kind @1 :Text;         # "dataset", "model", "trained-model", ...
  metadataHash @2 :Data; # BLAKE2b-256 of the asset's manifest
  price @3 :UInt64;      # per use: what each job that uses it pays the owner at settlement
  forJob @4 :Data;       # optional (32 bytes): registered for the payer of this job's
                         # escrow, who owns it; only by the agent its terms name, only
                         # kind "trained-model", once per job (the job host registers
                         # the weights it trained for an offline payer)
}

struct AssetTransfer {
  assetId @0 :Data;
  to @1 :Data;           # new owner (32 bytes)
}

struct Stake {
  amount @0 :UInt64;     # moved from the author's balance to its stake
}

struct Slash {
  # Only an authority may slash, once per (job, target), for an escrowed job;
  # the chain cuts the genesis slash_percent of the target's stake when the
  # block applies it. The slashed amount leaves the supply.
  target @0 :Data;       # wallet whose stake is cut
  amount @1 :UInt64;     # must be 0: the amount comes from the rule, never the author
  reason @2 :Text;
  jobId @3 :Data;        # 32 bytes: the job whose verification the target failed
}

struct DoubleVote {
  # Evidence: two votes of one kind signed by one committee member for
  # different blocks in one round at one height (an honest member signs one
  # per round and kind, durably). Anyone may submit it; the chain cuts the genesis
  # slash_percent of the voter's stake (it leaves the supply), once per
  # (voter, height). The author earns nothing.
  a @0 :Vote;
  b @1 :Vote;
}

struct Transaction {
  author @0 :Data;       # signer's wallet (32-byte ed25519 public key)
  nonce @1 :UInt64;      # exactly the author's previous nonce + 1
  body :union {
    transfer @2 :Transfer;
    escrowLock @3 :EscrowLock;
    settle @4 :Settle;
    mintReward @5 :MintReward;
    assetRegister @6 :AssetRegister;
    assetTransfer @7 :AssetTransfer;
    stake @8 :Stake;
    slash @9 :Slash;
    doubleVote @11 :DoubleVote;
  }
  chain @10 :Data;       # 32 bytes: the chain id (TipInfo.chainId) it is for; signed
                         # with the rest, so it never counts on another chain
}

struct SignedTransaction {
  tx @0 :Transaction;
  signature @1 :Data;    # ed25519 by tx.author over "aicon-tx-v2" ‖ canonical(tx)
}

struct BlockHeader {
  height @0 :UInt64;         # genesis = 0
  prevHash @1 :Data;         # BLAKE2b-256 of the previous header (zeros for genesis)
  timeMs @2 :UInt64;         # generator's clock, ms since the Unix epoch
  generator @3 :Data;        # NodeId of the generator
  sessionId @4 :Data;        # training session that earned this block (32 bytes)
  jobId @5 :Data;            # its job
  modelId @6 :Data;          # its model asset
  workUnits @7 :UInt64;      # verified work since the previous block
  difficulty @8 :UInt64;     # work units this block needed
  txRoot @9 :Data;           # Merkle root (BLAKE2b-256) of the signed transactions
  stateRoot @10 :Data;       # state root after applying the block
  receiptRoot @11 :Data;     # Merkle root (BLAKE2b-256) of the work receipts
}

enum VoteKind {
  precommit @0;              # the vote a final block carries
  prevote @1;                # the first of a round's two votes (consensus only)
}

struct Vote {
  height @0 :UInt64;
  blockHash @1 :Data;        # BLAKE2b-256 of the header; 32 zero bytes: nil (no block)
  voter @2 :Data;            # committee member's NodeId
  signature @3 :Data;        # over "aicon-vote-v2" ‖ height ‖ round ‖ kind ‖ blockHash
  round @4 :UInt32;          # the consensus round at this height
  kind @5 :VoteKind;
}

struct Proposal {
  # A committee member's proposal for (height, round), sent to the other
  # members' block generators (actors/block_generator/consensus.hpp).
  block @0 :Block;           # without votes; built by the round's proposer, or with a proof of
                             # lock by any member (a locked block proposed again)
  round @1 :UInt32;
  polRound @2 :Int32;        # -1, or the earlier round in which a quorum prevoted this block
  pol @3 :List(Vote);        # with polRound >= 0: those prevotes (the proof of lock)
  signature @4 :Data;        # by the round's proposer over "aicon-proposal-v1" ‖ round ‖ polRound ‖ blockHash
}

struct VotedRound {
  round @0 :UInt32;
  kind @1 :VoteKind;
  blockHash @2 :Data;        # 32 bytes; zeros: nil
}

struct ConsensusPromise {
  # What a validator promised at a height (LMDB vote_locks, written with
  # fsync before any vote it protects leaves the host).
  height @0 :UInt64;
  round @1 :UInt32;
  step @2 :UInt8;
  lockedRound @3 :Int32;
  locked @4 :Block;          # the locked block (without votes), if lockedRound >= 0
  validRound @5 :Int32;
  valid @6 :Block;           # the valid block, if validRound >= 0
  voted @7 :List(VotedRound); # every vote signed at this height
}

struct Block {
  header @0 :BlockHeader;
  transactions @1 :List(SignedTransaction);
  generatorSignature @2 :Data; # by header.generator over "aicon-block-v1" ‖ blockHash
  votes @3 :List(Vote);        # final with precommits of one round by >= 2/3 of the committee
  receipts @4 :List(SignedWorkReceipt); # the verified work that earned it:
                               # all of header.sessionId, units summing to workUnits
}

struct WorkReceipt {
  # Verified work of one trainer in one training session. The trainer signs
  # what it did; a verifier (an authority named in the genesis: the rater)
  # countersigns that it checked it. A receipt earns one block, once.
  trainer @0 :Data;      # trainer's NodeId
  sessionId @1 :Data;    # 32 bytes
  jobId @2 :Data;        # 32 bytes
  modelId @3 :Data;      # 32 bytes
  seq @4 :UInt64;        # the trainer's receipt number in this session (>= 1)
  units @5 :UInt64;      # verified work units (> 0)
  logRoot @6 :Data;      # Merkle root of the trainer's work log for these steps
  verifier @7 :Data;     # the authority that verified it
}

struct SignedWorkReceipt {
  receipt @0 :WorkReceipt;
  trainerSignature @1 :Data;  # over "aicon-receipt-v1" ‖ canonical(receipt)
  verifierSignature @2 :Data; # same bytes, by receipt.verifier
}

struct SubmitAck {
  # A block generator's answer to a SignedTransaction or SignedWorkReceipt.
  hash @0 :Data;         # BLAKE2b-256 of the canonical signed message
  poolSize @1 :UInt32;   # entries now waiting in that pool
}

struct LedgerQuery {
  # Asked of a host's ledger role; answered with the struct named per case,
  # or an ErrorReply (notFound when there is no such record).
  union {
    tip @0 :Void;         # -> TipInfo
    account @1 :Data;     # wallet (32 bytes) -> AccountInfo (zeros if never used)
    asset @2 :Data;       # asset id (32 bytes) -> AssetInfo
    blockAt @3 :UInt64;   # height -> Block
    escrow @4 :Data;      # job id (32 bytes) -> EscrowInfo
  }
}

struct TipInfo {
  height @0 :UInt64;
  hash @1 :Data;          # BLAKE2b-256 of the tip header
  stateRoot @2 :Data;
  difficulty @3 :UInt64;  # of the tip block
  timeMs @4 :UInt64;
  chainId @5 :Data;       # BLAKE2b-256 of the genesis (rules included): what signed
                          # requests that move value bind, so they count on one chain only
}

struct AccountInfo {
  wallet @0 :Data;
  balance @1 :UInt64;
  nonce @2 :UInt64;       # of the last applied transaction
  stake @3 :UInt64;
}

struct AssetInfo {
  assetId @0 :Data;
  owner @1 :Data;
  kind @2 :Text;
  metadataHash @3 :Data;
  price @4 :UInt64;
}

struct EscrowInfo {
  job @0 :Data;
  payer @1 :Data;
  amount @2 :UInt64;      # still locked (0 once settled: the query then answers notFound)
  agent @3 :Data;         # EscrowTerms.agent (empty when the escrow has no terms)
  maxPrice @4 :UInt64;    # EscrowTerms.maxPrice
  units @5 :UInt64;       # EscrowTerms.units
  deadlineMs @6 :UInt64;  # EscrowTerms.deadlineMs
}
