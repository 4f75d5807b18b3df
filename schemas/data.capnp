# Data nodes: datasets as encrypted, content-addressed shards and the
# manifest that describes them. Features are float32, labels int32, both
# little-endian, row-major.
@0xd4c1a2b39e8f7a61;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("aicon::schema");

struct ShardRef {
  hash @0 :Data;        # BLAKE2b-256 of the share (nonce ‖ ciphertext): its address
  firstRow @1 :UInt64;  # index of the shard's first row in the dataset
  rows @2 :UInt64;      # rows in this shard
  bytes @3 :UInt64;     # size of the share
}

struct Transform {
  # x' = (x - shift) / scale per feature; trainers apply the same to new data.
  kind @0 :Text;              # "none", "standardize", "minmax"
  shift @1 :List(Float32);
  scale @2 :List(Float32);
}

struct PreviewRow {
  x @0 :List(Float32);  # the features after the transform
  y @1 :Int32;          # class id (-1 without labels)
  row @2 :UInt64;       # its index in the dataset
}

struct DatasetManifest {
  datasetId @0 :Data;         # BLAKE2b-256 of this manifest with datasetId and ownerSignature empty
  owner @1 :Data;             # owner's wallet / NodeId (32 bytes)
  name @2 :Text;
  rows @3 :UInt64;
  features @4 :UInt64;
  classes @5 :UInt32;         # 0 without labels
  classNames @6 :List(Text);  # text labels in id order (empty if numeric)
  featureNames @7 :List(Text);
  dtype @8 :Text;             # "float32"
  transform @9 :Transform;
  price @10 :UInt64;          # per use (one paying job), smallest unit
  shards @11 :List(ShardRef);
  preview @12 :List(PreviewRow); # k random rows anyone may read before paying
  source @13 :Text;           # file name it was ingested from (for people)
  ownerSignature @14 :Data;   # ed25519 by `owner` over "aicon-dataset-owner-v1" ‖ datasetId
                              # (not part of the id): no one else may name the owner
}

struct ShardData {
  # The plaintext of one shard, before encryption.
  firstRow @0 :UInt64;
  rows @1 :UInt64;
  features @2 :UInt64;
  x @3 :Data;           # rows * features float32
  y @4 :Data;           # rows int32, or empty without labels
}

# ---- Between data nodes, trainers and clients ----------------------------

struct Share {
  hash @0 :Data;        # its address: BLAKE2b-256 of `bytes`
  bytes @1 :Data;       # nonce ‖ XChaCha20-Poly1305 ciphertext
}

struct SealedKey {
  hash @0 :Data;        # the share the key opens
  sealed @1 :Data;      # crypto_box_seal of the 32-byte key to the receiver's key
}

struct UploadBegin {
  # Starts putting a dataset (or a replica of one) on a data node. The
  # manifest is kept apart until every share arrived: listings never show a
  # half-stored dataset, and an upload that never commits is rolled back.
  manifest @0 :DatasetManifest;
}

struct UploadShares {
  datasetId @0 :Data;
  shares @1 :List(Share);
  keys @2 :List(SealedKey); # one per share, sealed to the receiving node
}

struct UploadCommit {
  datasetId @0 :Data;
  replicas @1 :UInt32;  # copies wanted in all (this node included); the node
                        # pushes the rest to peer data nodes before answering
  source @2 :Data;      # NodeId of a data node pushing a replica (empty from
                        # a client): the receiver then knows a second holder
}

struct UploadDone {
  datasetId @0 :Data;
  holders @1 :List(Data); # NodeIds holding a complete copy
}

struct FetchShares {
  # Pull with credit: a trainer asks for at most `streamCredits` shares at a
  # time and asks again only after consuming them.
  hashes @0 :List(Data);
}

struct ShareBatch {
  shares @0 :List(Share);
}

struct ShareReport {
  # "The copy you served me is corrupt or missing": the node re-checks it
  # and repairs it from a peer replica.
  hash @0 :Data;
  datasetId @1 :Data;
  problem @2 :Text;
}

struct ReportAck {
  repaired @0 :Bool;    # the copy was bad and is now replaced from a peer
  problem @1 :Text;     # what was wrong with it here ("" if nothing)
}

struct Lease {
  # A trainer's right to a dataset for one job (written by the allocator).
  jobId @0 :Data;
  trainer @1 :Data;
  datasetId @2 :Data;
  expiresMs @3 :UInt64;
}

struct DataGrant {
  # The payer's permission for one trainer host to receive one dataset's
  # keys for one job: a lease no one has to write to the data nodes. A data
  # node honours it when the job's escrow on its chain names this payer and
  # covers the dataset's price, the chain is its own and it has not expired.
  jobId @0 :Data;       # 32 bytes
  trainer @1 :Data;     # NodeId of the trainer host the keys are sealed to
  datasetId @2 :Data;   # 32 bytes
  expiresMs @3 :UInt64; # wall clock (ms since the epoch)
  chain @4 :Data;       # the chain id the escrow is on (32 bytes)
  signature @5 :Data;   # ed25519 by the escrow's payer over "aicon-grant-v1" ‖ canonical(grant without it)
}

struct KeyRequest {
  datasetId @0 :Data;
  jobId @1 :Data;
  trainer @2 :Data;     # NodeId the keys are sealed to
  timeMs @3 :UInt64;    # must be within clock_skew_ms_max of the node's clock
  signature @4 :Data;   # ed25519 by trainer over "aicon-keyreq-v1" ‖ canonical(request without it)
  grant @5 :DataGrant;  # the payer's grant, when the node holds no lease for the trainer
}

struct KeyRelease {
  datasetId @0 :Data;
  keys @1 :List(SealedKey);
}

struct StorageChallenge {
  hash @0 :Data;        # a share the node should hold
  nonce @1 :Data;       # 32 fresh random bytes
}

struct ChallengeAnswer {
  digest @0 :Data;      # BLAKE2b-256(share ‖ nonce)
}

struct ChallengeRecord {
  challenger @0 :Data;
  node @1 :Data;        # the node challenged
  hash @2 :Data;
  timeMs @3 :UInt64;
  ok @4 :Bool;
  problem @5 :Text;     # why it failed
}

struct DataQuery {
  union {
    list @0 :Void;          # -> DatasetList
    manifest @1 :Text;      # dataset id or prefix >= 8 hex digits -> DatasetManifest
    verify @2 :Data;        # dataset id -> VerifyResult of this node's copy
    challenges @3 :Void;    # -> ChallengeLog
  }
}

struct DatasetList {
  manifests @0 :List(DatasetManifest);
}

struct VerifyResult {
  node @0 :Data;
  shards @1 :UInt64;
  bytes @2 :UInt64;
  problems @3 :List(Text);
}

struct ChallengeLog {
  records @0 :List(ChallengeRecord);
}

# ---- Models: TorchScript files as content-addressed assets -------------------

struct ModelManifest {
  modelId @0 :Data;         # BLAKE2b-256("aicon-model-asset-v1" ‖ owner ‖ fileHash): its address
                            # and its asset id, bound to its owner (another uploader of the same
                            # file gets another id)
  owner @1 :Data;           # the uploader's NodeId (32 bytes)
  name @2 :Text;            # for people (the file name)
  bytes @3 :UInt64;         # the file's size
  ownerSignature @4 :Data;  # ed25519 by owner over "aicon-model-owner-v1" ‖ modelId
  fileHash @5 :Data;        # BLAKE2b-256 of the file (the asset's metadataHash on the chain)
}

struct ModelPut {
  # Stores a model file on a data node (a client's `aicon model put`, or a
  # data node pushing a replica). The node checks the file against its id,
  # the owner's signature and its size limit before writing anything.
  manifest @0 :ModelManifest;
  file @1 :Data;
  replicas @2 :UInt32;      # copies wanted in all (this node included)
  source @3 :Data;          # NodeId of a data node pushing a replica (empty from a client)
}

struct ModelStored {
  modelId @0 :Data;
  holders @1 :List(Data);   # NodeIds holding the file
}

struct ModelFetch {
  modelId @0 :Data;         # 32 bytes
}

struct ModelFile {
  manifest @0 :ModelManifest;
  file @1 :Data;            # the fetcher checks it hashes to manifest.modelId
}
