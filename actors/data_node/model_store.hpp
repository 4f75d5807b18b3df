// Models as assets: a researcher's TorchScript file, stored whole on data
// nodes under its id (BLAKE2b-256 of its owner and its file hash: its
// address and its asset id), with a manifest its owner signed. Unlike datasets, model files are not
// encrypted: any admitted peer may fetch one by id (the owner is paid its
// registered price by every paying job that trains it, README "Models as
// assets"). Whoever fetches a file checks it against its id before using it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <caf/expected.hpp>

#include "actors/ledger/hashing.hpp"
#include "runtime/envelope.hpp"
#include "runtime/identity.hpp"
#include "runtime/store.hpp"
#include "schemas/data.capnp.h"

namespace aicon::data {

using ledger::hash256;

/// A model file's hash: BLAKE2b-256 of its bytes.
hash256 model_hash(std::span<const uint8_t> file);

/// A model's id, its address and its asset id: BLAKE2b-256 of
/// "aicon-model-asset-v1" ‖ owner ‖ file hash. Bound to the owner, so a
/// peer that fetched the file and registers its id on the chain first
/// cannot be the owner that id names: payments for a model asset go only to
/// a registered owner whose id this is (model_asset_owned).
hash256 model_asset_id(const node_id& owner, const hash256& file_hash);

/// Whether `id` is the model asset id of `owner` for the file whose hash is
/// `metadata` (the chain's AssetInfo.metadataHash).
bool model_asset_owned(const hash256& id, const node_id& owner, const hash256& metadata);

/// The bytes of a model file at `path`: refused by name when it cannot be
/// read ("cannot read PATH", not_found) or is over `bytes_max` (checked
/// before anything is read).
caf::expected<std::vector<uint8_t>> read_model_file(const std::filesystem::path& path,
                                                    uint64_t bytes_max);

/// What a model's owner signs: "aicon-model-owner-v1" ‖ model id.
std::vector<uint8_t> model_owner_signing_bytes(const hash256& model);

/// A ModelPut for `file` owned (and signed) by `owner`, `replicas` copies in all.
envelope make_model_put(const identity& owner, std::span<const uint8_t> file,
                        const std::string& name, uint32_t replicas);

/// The model id and file hash a ModelPut (make_model_put) names.
std::pair<hash256, hash256> model_put_ids(const envelope& put);

/// Checks a manifest and its file: the file's hash is the manifest's
/// fileHash ("hash mismatch" otherwise: a tampered or truncated file), the
/// id is model_asset_id(owner, fileHash), the size it states, at most
/// `bytes_max`, the owner's signature over the id. Errors name the first
/// problem.
caf::error check_model(schema::ModelManifest::Reader m, capnp::Data::Reader file,
                       uint64_t bytes_max);

/// Stores a checked ModelPut's manifest and file in one write transaction
/// (the same model again: nothing to do). `owner_bytes_max`: the most
/// model bytes this store keeps for one owner, all its models together
/// (limits::model_bytes_per_owner), and `total_bytes_max` all models
/// together (limits::model_bytes_total); a put past either is refused by
/// name and nothing is written.
caf::error store_model(store::environment& env, schema::ModelPut::Reader put,
                       uint64_t owner_bytes_max = UINT64_MAX,
                       uint64_t total_bytes_max = UINT64_MAX);

/// The ModelFile of `id` here, if any.
caf::expected<std::optional<envelope>> load_model(store::environment& env, const hash256& id);

} // namespace aicon::data
