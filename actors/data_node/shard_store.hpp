// Datasets at rest on a data node: a table is cut into shards of at most
// shard_bytes, each encrypted with its own random key (XChaCha20-Poly1305)
// and addressed by the BLAKE2b-256 hash of the share (nonce ‖ ciphertext);
// the manifest (shapes, shard hashes, owner, price, transform, a public
// preview of k random rows) names them. Shares, keys and manifest go into
// the host's LMDB in ONE write transaction: a failed put leaves nothing.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "actors/data_node/ingest.hpp"
#include "actors/ledger/hashing.hpp"
#include "runtime/envelope.hpp"
#include "runtime/identity.hpp"
#include "runtime/store.hpp"
#include "schemas/data.capnp.h"

namespace aicon::data {

using ledger::hash256;

struct put_options {
  std::string name;                ///< for people; defaults to the file name
  std::string source;              ///< the file it came from
  uint64_t price = 0;              ///< per paying job, smallest unit
  uint32_t preview_rows = 5;       ///< public sample size
  /// Plaintext bytes per shard at most: 1 MiB keeps a share well inside one
  /// envelope and lets a trainer start on the first shard early.
  uint64_t shard_bytes = 1 << 20;
};

/// BLAKE2b-256 of a share: its content address.
hash256 share_hash(std::span<const uint8_t> share);

using shard_key = std::array<uint8_t, 32>;

/// A dataset cut into encrypted shares and described by its manifest, not
/// yet stored anywhere (a client builds this and uploads it).
struct built_dataset {
  envelope manifest;
  std::vector<std::vector<uint8_t>> shares; ///< in manifest order
  std::vector<shard_key> keys;              ///< one per share
};

/// Shards and encrypts `t` (already transformed by `tr`) owned by `owner`,
/// who signs the manifest's id (DatasetManifest.ownerSignature).
/// Errors: invalid_argument (empty table, shard_bytes too small for one row).
caf::expected<built_dataset> build_dataset(const identity& owner, const table& t,
                                           const transform& tr, const put_options& opts);

/// Stores a built dataset (shares, keys, manifest) in ONE write transaction.
caf::error store_dataset(store::environment& env, const built_dataset& d);

/// What a dataset's owner signs: "aicon-dataset-owner-v1" ‖ dataset id.
std::vector<uint8_t> owner_signing_bytes(const hash256& dataset);

/// build_dataset then store_dataset; returns the manifest.
caf::expected<envelope> put_dataset(store::environment& env, const identity& owner,
                                    const table& t, const transform& tr, const put_options& opts);

/// The id a manifest must carry: BLAKE2b-256 ("aicon-dataset-v1") of its
/// canonical form without the id.
hash256 manifest_id(schema::DatasetManifest::Reader m);

/// Checks a manifest from elsewhere: its id matches its contents, its owner
/// signed that id (bad_signature otherwise), every
/// shard hash is 32 bytes, shards cover rows 0..rows-1 in order, the
/// transform has one entry per feature. Errors name the first problem.
caf::error check_manifest(schema::DatasetManifest::Reader m);

/// The 32-byte id in `d` (a Data field), or invalid_argument naming `what`.
caf::expected<hash256> hash_of(capnp::Data::Reader d, const char* what);

/// Every manifest in the store, in dataset-id order.
caf::expected<std::vector<envelope>> list_datasets(store::environment& env);

/// The manifest of `id` (a full hex id or a unique prefix of >= 8 digits).
caf::expected<envelope> find_dataset(store::environment& env, const std::string& id);

/// One share decrypted and checked: its bytes hash to `hash`, the AEAD tag
/// verifies under `key`, and the plaintext is the shard `ref` describes.
caf::expected<table> open_share(std::span<const uint8_t> share, const hash256& hash,
                                std::span<const uint8_t> key, schema::ShardRef::Reader ref,
                                uint64_t features);

/// open_share writing the shard's rows straight to `x` (rows * features
/// floats) and `y` (rows labels; `labelled` says whether it has any), for
/// a reader that assembles a whole table. `check_hash` false when the
/// caller has already checked the share against its address.
caf::error open_share_into(std::span<const uint8_t> share, const hash256& hash,
                           std::span<const uint8_t> key, schema::ShardRef::Reader ref,
                           uint64_t features, float* x, int32_t* y, bool& labelled,
                           bool check_hash);

struct verify_report {
  uint64_t shards = 0;
  uint64_t bytes = 0;
  std::vector<std::string> problems; ///< one line per missing or corrupt share
};

/// Re-hashes and decrypts every share of `manifest` held in this store.
caf::expected<verify_report> verify_dataset(store::environment& env, const envelope& manifest);

/// The whole dataset back from this store's shares and keys (round trip).
caf::expected<table> load_dataset(store::environment& env, const envelope& manifest);

} // namespace aicon::data
