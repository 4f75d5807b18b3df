# The Resource Allocator: offers from trainer hosts, gang allocations for
# jobs, leases. Sizes: NodeIds, job ids and signatures are raw bytes.
@0xa9f8859e1de08293;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct Offer {
  trainer @0 :Data;       # the trainer host's NodeId (32 bytes)
  device @1 :Text;        # "cpu", "gpu:<name>"
  slots @2 :UInt32;       # trainers it runs at once
  memory @3 :UInt64;      # bytes per trainer
  samplesPerS @4 :Float64;# measured on the reference model (mlp:64-64-10, batch 64)
  price @5 :UInt64;       # per trainer per step
  site @6 :Text;
  ttlMs @7 :UInt32;       # valid this long from timeMs; renewed by the next offer
  timeMs @8 :UInt64;      # the trainer host's clock, ms since the Unix epoch
}

struct SignedOffer {
  offer @0 :Offer;
  signature @1 :Data;     # by offer.trainer over "aicon-offer-v1" ‖ canonical(offer)
}

struct AllocAsk {
  # A job asks for K trainers; its escrow on the allocator host's chain must
  # cover k x maxPrice x steps.
  job @0 :Data;           # 32 bytes; the job's EscrowLock id
  k @1 :UInt32;
  device @2 :Text;
  memory @3 :UInt64;
  maxPrice @4 :UInt64;
  steps @5 :UInt64;       # the job's length, for the budget check
  dataSite @6 :Text;      # site of the dataset's nearest replica ("" = none)
  priority @7 :UInt32;
  deadlineMs @8 :UInt32;  # from now; 0 = wait as long as needed
  leaseMs @9 :UInt32;
  token @10 :Data;        # 32 random bytes: the job's allocation capability; renew,
                          # release and replace must carry it (AllocQuery.token)
  signature @11 :Data;    # ed25519 by the job's escrow payer over "aicon-alloc-v1" ‖
                          # chain id ‖ canonical(this ask with signature unset)
}

struct LeaseInfo {
  trainer @0 :Data;
  count @1 :UInt32;       # trainers of this host the job holds (in a reply: all of
                          # them, those granted before on the same host included)
  price @2 :UInt64;
  expiresMs @3 :UInt64;   # the allocator's clock
  job @4 :Data;           # the job the lease is for (32 bytes)
  allocator @5 :Data;     # NodeId of the allocator host that granted it
  signature @6 :Data;     # ed25519 by `allocator` over "aicon-lease-v1" ‖
                          # canonical(this lease with signature unset): a trainer
                          # host admits a TrainerJoin that carries it (the
                          # allocator must be one it offers its trainers to)
}

struct AllocReply {
  job @0 :Data;
  union {
    granted @1 :List(LeaseInfo);
    waiting @2 :Text;     # why, and behind whom
    refused @3 :Text;
  }
  preempt @4 :List(Data); # waiting: jobs asked to checkpoint and release
  preempted @5 :Bool;     # to a holder: a higher-priority job needs these trainers
}

struct AllocQuery {
  job @0 :Data;
  token @6 :Data;         # renew, release, replace: the AllocAsk's token (status and
                          # book are open to any admitted peer)
  union {
    status @1 :Void;      # -> AllocReply
    renew @2 :UInt32;     # lease ms -> AllocReply (granted: the renewed leases)
    release @3 :Void;     # -> AllocReply (refused "released")
    replace @4 :Data;     # lost trainer NodeId -> AllocReply
    book @5 :Void;        # -> AllocBook (the job field is ignored)
  }
}

struct AllocBook {
  offers @0 :List(Offer);
  leases @1 :List(BookLease);
  siteRtts @2 :List(SiteRtt); # the round trips between sites the allocator scores with
}

struct SiteRtt {
  a @0 :Text;
  b @1 :Text;
  ms @2 :Float64;
  measured @3 :Bool;        # false: pinned by [[site_rtt]] in host.toml
}

struct BookLease {
  job @0 :Data;
  lease @1 :LeaseInfo;
  priority @2 :UInt32;
}

