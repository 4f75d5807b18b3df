// What a data node keeps for others besides its own puts: replica uploads
// (staged until every share arrived, rolled back otherwise), leases that
// entitle a trainer to a dataset's keys, the key release itself (sealed to
// the trainer), storage challenges and their record, and who holds which
// dataset. All of it lives in the host's LMDB environment.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <vector>

#include <caf/expected.hpp>

#include "actors/data_node/shard_store.hpp"

namespace aicon::data {

// ---- Uploads (a put through a host, and replication between data nodes) --

/// Checks `manifest` and stages it. A dataset already complete here is not
/// staged again: returns true when there is nothing left to send.
caf::expected<bool> upload_begin(store::environment& env, const envelope& manifest);

/// Stores shares of a staged upload with their keys, sealed to `self`.
/// Every share must be listed in the staged manifest and hash to its
/// address; every key must unseal. Errors name the share.
caf::error upload_shares(store::environment& env, const identity& self,
                         schema::UploadShares::Reader batch);

/// Moves a staged manifest whose shares and keys are all here into the
/// datasets; returns it. Errors: not_found (no such upload), invalid_argument
/// naming the first missing share.
caf::expected<envelope> upload_commit(store::environment& env, const hash256& dataset);

/// Drops a staged upload and the shares and keys it brought that no complete
/// dataset uses. Absent uploads are not an error.
caf::error upload_abort(store::environment& env, const hash256& dataset);

/// Rolls back every staged upload (a host restarting after a crash).
caf::expected<size_t> abort_all_uploads(store::environment& env);

/// UploadShares batches for `d` of at most `batch_bytes` each, keys sealed
/// to `receiver`.
caf::expected<std::vector<envelope>> upload_batches(const built_dataset& d, const node_id& receiver,
                                                    uint64_t batch_bytes);

/// A complete dataset read back from the store as shares and keys (what a
/// node pushes to a replica).
caf::expected<built_dataset> read_dataset(store::environment& env, const hash256& dataset);

// ---- Shares ----------------------------------------------------------------

/// The share stored under `hash`, or nullopt.
caf::expected<std::optional<std::vector<uint8_t>>> read_share(store::environment& env,
                                                              const hash256& hash);

/// Replaces the share under `hash` by `bytes` (a repair); refuses bytes
/// that do not hash to `hash`.
caf::error write_share(store::environment& env, const hash256& hash,
                       std::span<const uint8_t> bytes);

// ---- Leases and key release ------------------------------------------------

struct lease {
  hash256 job{};
  node_id trainer;
  hash256 dataset{};
  uint64_t expires_ms = 0;
};

/// Writes (or replaces) the lease of `l.trainer` for `l.job`.
caf::error put_lease(store::environment& env, const lease& l);

/// A DataGrant signed by `payer`: `trainer` may receive `dataset`'s keys
/// for `job` until `expires_ms`. Honoured when `payer` is the job's escrow's
/// payer on chain `chain` (the escrow covering the price), or the
/// dataset's owner (its own data, no escrow needed).
envelope make_data_grant(const identity& payer, const hash256& chain, const hash256& job,
                         const node_id& trainer, const hash256& dataset, uint64_t expires_ms);

/// Whether `grant` is signed by `signer` ("aicon-grant-v1" over the grant
/// without its signature).
bool grant_signed_by(schema::DataGrant::Reader grant, const node_id& signer);

/// A trainer's signed request for the keys of `dataset` for `job`,
/// carrying the payer's DataGrant when it has one (`grant`: a DataGrant
/// envelope, or null).
envelope make_key_request(const identity& trainer, const hash256& dataset, const hash256& job,
                          uint64_t now_ms, const envelope* grant = nullptr);

/// What a data node needs to know of a job's escrow.
struct escrow_facts {
  uint64_t amount = 0; ///< still locked
  node_id payer;       ///< who locked it
  std::optional<node_id> agent; ///< the job host its terms name (it grants for the payer)
};

/// How the data node learns what a job escrowed, or nullopt when the job
/// has no escrow. Empty when the host keeps no chain.
using escrow_lookup = std::function<caf::expected<std::optional<escrow_facts>>(const hash256& job)>;

/// Answers a KeyRequest with a KeyRelease whose keys are sealed to the
/// trainer, or a refusal naming the rule: bad signature, stale time, no
/// such dataset, no lease (neither stored nor a valid payer's grant), a
/// lease or grant for another dataset, job or trainer, expired, a grant
/// signed by neither the dataset's owner nor the escrow's payer, or for
/// another chain (`chain`: this
/// node's chain id), no escrow or less than the price, no chain to check
/// the escrow against.
caf::expected<envelope> release_keys(store::environment& env, schema::KeyRequest::Reader req,
                                     uint64_t now_ms, uint64_t skew_ms,
                                     const escrow_lookup& escrow,
                                     const std::optional<hash256>& chain = std::nullopt);

/// The keys of a KeyRelease opened by the trainer it was sealed to, in the
/// manifest's shard order. Errors: a key missing or sealed to someone else.
caf::expected<std::vector<shard_key>> open_keys(const identity& trainer,
                                                schema::KeyRelease::Reader rel,
                                                schema::DatasetManifest::Reader manifest);

// ---- Storage challenges ----------------------------------------------------

/// BLAKE2b-256(share ‖ nonce): only a node holding the bytes can compute it.
hash256 challenge_digest(std::span<const uint8_t> share, std::span<const uint8_t> nonce);

/// The ChallengeAnswer for a challenge. Errors: not_found when this node
/// does not hold the share.
caf::expected<envelope> answer_challenge(store::environment& env,
                                         schema::StorageChallenge::Reader c);

struct challenge_record {
  node_id challenger;
  node_id node;
  hash256 hash{};
  uint64_t time_ms = 0;
  bool ok = false;
  std::string problem;
};

caf::error record_challenge(store::environment& env, const challenge_record& r);

/// The ChallengeLog of this node, oldest first.
caf::expected<envelope> challenge_log(store::environment& env);

// ---- Holders -----------------------------------------------------------------

/// Notes that `node` holds a complete copy of `dataset`.
caf::error add_holder(store::environment& env, const hash256& dataset, const node_id& node,
                      uint64_t now_ms);

/// (dataset, node) for every copy this node knows of elsewhere.
caf::expected<std::vector<std::pair<hash256, node_id>>> holders(store::environment& env);

} // namespace aicon::data
