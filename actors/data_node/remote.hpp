// The client side of the data-node protocol, for processes that dial hosts
// (the CLI, trainers until the trainer role exists, tests, benchmarks):
// upload a dataset, find the replicas of one nearest first, pull its shares
// with a credit window, verify each against its address and fall back to the
// next replica (reporting the bad copy), ask for the keys, decrypt.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "actors/data_node/custody.hpp"
#include "runtime/client.hpp"
#include "runtime/system.hpp"

namespace aicon::data {

/// How these functions reach data nodes: a client's directory and requests,
/// or (inside a host) the host's directory through a blocking actor. Every
/// call may come from any thread.
class requester {
public:
  using lookup_fn = std::function<caf::expected<caf::actor>(const std::string&)>;
  using request_fn =
    std::function<caf::expected<envelope>(const caf::actor&, envelope, std::chrono::milliseconds)>;

  requester(lookup_fn lookup, request_fn request, std::chrono::milliseconds timeout)
    : lookup_(std::move(lookup)), request_(std::move(request)), timeout(timeout) {
  }
  /// Through a client (implicit: every function below takes a client too).
  requester(client& c); // NOLINT(google-explicit-constructor)

  caf::expected<caf::actor> lookup(const std::string& name) const {
    return lookup_(name);
  }
  caf::expected<envelope> request(const caf::actor& dst, envelope req,
                                  std::chrono::milliseconds t) const {
    return request_(dst, std::move(req), t);
  }

private:
  lookup_fn lookup_;
  request_fn request_;

public:
  std::chrono::milliseconds timeout; ///< per request
};

/// A data node that holds a dataset, with the round trip of asking it.
struct replica {
  node_id node;
  caf::actor actor;
  double rtt_ms = 0;
};

/// The data_node role of `node`, through `c`'s directory.
caf::expected<caf::actor> data_node_of(const requester& c, const node_id& node);

/// Puts `d` on `node` (begin, share batches with keys sealed to it,
/// commit) and asks it for `replicas` copies in all; returns the holders.
/// `commit_timeout` covers the replication the node does before answering.
caf::expected<std::vector<node_id>> upload_dataset(const requester& c, const node_id& node,
                                                   const built_dataset& d, uint32_t replicas,
                                                   uint64_t batch_bytes,
                                                   std::chrono::milliseconds commit_timeout);

/// The nodes of `nodes` that hold dataset `id` (full id or prefix), nearest
/// (smallest round trip) first, and the manifest the first one gave (checked:
/// its id matches its contents, and every replica must give the same id).
/// Errors: not_found naming every node asked and why, when none holds it.
caf::expected<std::pair<std::vector<replica>, envelope>>
find_replicas(const requester& c, const std::vector<node_id>& nodes, const std::string& id);

struct fetch_stats {
  uint64_t shares = 0;
  uint64_t bytes = 0;
  uint64_t requests = 0;
  uint64_t bad_copies = 0;          ///< corrupt or missing copies met (and reported)
  std::vector<std::string> events;  ///< one line per bad copy: which node, what, who served instead
};

/// Called after each shard is in: (shards done, shards in all, bytes so far).
using progress_fn = std::function<void(uint64_t, uint64_t, uint64_t)>;

/// Pulls every share of `manifest` from `replicas` in order of preference,
/// at most `credits` per request; a share missing on a replica or not
/// hashing to its address is reported to that replica (ShareReport) and
/// fetched from the next one. With `keys` (in shard order) each share is
/// decrypted as it arrives, while the next request is in flight, and the
/// table is returned; without, the shares are only verified.
caf::expected<table> fetch_dataset(const requester& c, const std::vector<replica>& replicas,
                                   const envelope& manifest, const std::vector<shard_key>* keys,
                                   uint32_t credits, fetch_stats& stats,
                                   const progress_fn& progress = {});

/// Asks `r` for the keys of `manifest` for `job`, signed by `trainer`
/// (carrying the payer's DataGrant `grant`, if any), and opens them.
/// Errors: the node's refusal (no lease, no escrow, ...).
caf::expected<std::vector<shard_key>> request_keys(const requester& c, const replica& r,
                                                   const identity& trainer,
                                                   const envelope& manifest, const hash256& job,
                                                   const envelope* grant = nullptr);

/// A job's dataset `dataset_hex` for a host of it (a trainer, or the job's
/// rater): the nearest replicas on `nodes`, the keys sealed to `self` under
/// its lease or `grant` (a DataGrant, or null), every share verified and
/// decrypted into the table.
caf::expected<table> fetch_for_job(const requester& c, const identity& self,
                                   const std::vector<node_id>& nodes,
                                   const std::string& dataset_hex, const hash256& job,
                                   const envelope* grant);

/// A requester for a role inside a host: its directory and blocking
/// requests ("role@<this host>" is the local role).
requester host_requester(caf::actor_system& sys, const role_context& ctx);

/// This host, if it runs `role`, then its up peers that do.
std::vector<node_id> hosts_with_role(caf::actor_system& sys, const role_context& ctx,
                                     const std::string& role);

/// Puts a model file (a ModelPut, make_model_put) on `node`, which pushes it
/// on until `replicas` copies exist; returns the holders.
caf::expected<std::vector<node_id>> upload_model(const requester& c, const node_id& node,
                                                 const envelope& put,
                                                 std::chrono::milliseconds timeout);

/// The model file `id` as a local file under `cache_dir` (<hex>.pt, its
/// manifest beside it): the cached copy while it still checks against `id`
/// (check_model), else fetched from the first of `nodes` whose copy does (a
/// copy that does not is skipped and named), written atomically. Errors name every node asked
/// and why. With `owners` (a host's [host] model_owners), only a model of
/// one of them: another owner's is refused by name.
caf::expected<std::filesystem::path> fetch_model(const requester& c,
                                                 const std::vector<node_id>& nodes,
                                                 const hash256& id,
                                                 const std::filesystem::path& cache_dir,
                                                 uint64_t bytes_max,
                                                 const std::vector<node_id>& owners = {});

} // namespace aicon::data
