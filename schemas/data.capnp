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
  datasetId @0 :Data;         # BLAKE2b-256 of this manifest with datasetId empty
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
}

struct ShardData {
  # The plaintext of one shard, before encryption.
  firstRow @0 :UInt64;
  rows @1 :UInt64;
  features @2 :UInt64;
  x @3 :Data;           # rows * features float32
  y @4 :Data;           # rows int32, or empty without labels
}
