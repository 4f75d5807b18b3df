// `aicon data put|ls|preview|verify` on a local store (--data-dir alone) or
// against running data nodes (--connect ADDR, repeatable: --data-dir is then
// this client's identity and trusted peers); `aicon data fetch` (a trainer's
// pull: nearest replica, verified, keys by lease) and `aicon data challenges`.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

namespace aicon {

class client;
class identity;
struct node_id;

struct data_cmd_options {
  std::string data_dir;
  std::string file;
  std::string labels;         ///< second file (NPY/IDX labels)
  std::string name;
  std::optional<std::string> label_col; ///< default: last column (CSV), none (NPY)
  uint64_t skip_rows = 0;
  std::string delimiter = ",";
  bool standardize = false;
  bool minmax = false;
  uint64_t price = 0;
  uint64_t shard_bytes = 1 << 20;
  uint32_t preview_rows = 5;
  std::string id;             ///< preview/verify/fetch
  std::vector<std::string> connect; ///< host:port of data nodes (empty = local store)
  bool dev_open = false;
  uint32_t replicas = 2;      ///< put --connect: copies in all
  std::string key;            ///< owner (put) or trainer (fetch) key; default node.key
  bool register_asset = true; ///< put --connect: AssetRegister on the host's chain
  std::string job;            ///< fetch: the job the lease is for (64 hex digits)
  std::string out;            ///< fetch: writes OUT.x.npy (and OUT.y.npy)
  uint32_t credits = 4;       ///< fetch: shares in flight per request
};

int data_put(const data_cmd_options& o);
int data_ls(const data_cmd_options& o);
int data_preview(const data_cmd_options& o);
int data_verify(const data_cmd_options& o);
int data_fetch(const data_cmd_options& o);
int data_challenges(const data_cmd_options& o);
/// aicon model put FILE: a TorchScript file onto data nodes (content-addressed, replicated) and
/// registered as a `model` asset of the uploader; prints its id last.
int model_put(const data_cmd_options& o);

/// Submits an AssetRegister of `id` (kind "dataset" or "model") owned and
/// signed by `owner`, at `price` per paying job, with `metadata` (a
/// dataset: its manifest hash, the id; a model: its file's hash), to
/// `host`'s block generator; returns the transaction's nonce. Final with the
/// next block.
caf::expected<uint64_t> register_asset(client& c, const node_id& host, const identity& owner,
                                       const std::array<uint8_t, 32>& id, uint64_t price,
                                       const std::string& kind,
                                       const std::array<uint8_t, 32>& metadata);

} // namespace aicon
