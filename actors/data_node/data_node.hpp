// The data_node role: keeps encrypted dataset shares in the host's LMDB and
// serves them. It takes uploads (from a client's `aicon data put --connect`
// or a peer pushing a replica) and pushes each new dataset on to peer data
// nodes until data_replicas copies exist; answers FetchShares with at most
// stream_credits shares per request (a trainer pulls, so a slow trainer
// never makes it buffer); releases keys, sealed to the trainer, only for a
// lease on a job that escrowed the price; repairs a copy a trainer reports
// corrupt from a peer replica; answers storage challenges and challenges
// its peers' copies every storage_challenge_ms, recording each outcome.
// It runs detached: every request is an LMDB transaction.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "runtime/access.hpp"
#include "runtime/system.hpp"

namespace aicon {

caf::expected<caf::actor> spawn_data_node(caf::actor_system& sys, const role_context& ctx);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row data_node_access[] = {
  {"DataQuery", "any admitted peer", "(public) listings, manifests, previews", "-"},
  {"UploadBegin", "the owner the manifest names, or a data node pushing the owner's replica", "ed25519 by the owner over the dataset id", "`bad_signature`, nothing staged"},
  {"UploadShares", "anyone completing a begun upload", "every share against its address in the signed manifest", "refused by name, the upload rolled back"},
  {"UploadCommit", "anyone completing a begun upload", "every share present and checked", "refused by name, the upload rolled back"},
  {"FetchShares", "any admitted peer", "(public) shares are ciphertext; at most `stream_credits` per request", "-"},
  {"ShareReport", "any admitted peer", "the node re-checks its own copy", "-"},
  {"KeyRequest", "a trainer holding an unexpired lease, its payer's (or the escrow's agent's) grant or the dataset owner's grant for the dataset (with a lease or payer's grant, if priced: an escrow of at least the price)", "ed25519 by the trainer over the dated request; the stored lease, or the DataGrant signed by the payer the job's escrow names or by the manifest's owner; the escrow", "refused by the rule's name"},
  {"ModelPut", "the owner the model's manifest names, or a data node pushing the owner's copy", "ed25519 by the owner over the model id; the id is BLAKE2b of that owner and the file's hash; at most `model_bytes_max` and 16 replicas; the owner's models together at most `model_bytes_per_owner` and all models at most `model_bytes_total` per data node; with `[host] model_owners`, only those owners' models", "`bad_signature` / refused by name (hash mismatch, id, size, replicas, quota), nothing stored"},
  {"ModelFetch", "any admitted peer", "(public) model files are not encrypted; the fetcher checks the file against its id", "-"},
  {"StorageChallenge", "any admitted peer", "(public) a hash of one share with the asker's nonce", "-"},
};

} // namespace aicon
