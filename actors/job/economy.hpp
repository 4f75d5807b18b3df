// The payer's side of a job's economics, after training: ask the rater to
// verify the session, then settle the escrow from its verdicts and register
// the trained weights as an asset ("trained-model", owned by the payer).
// Used by the end-to-end test, `aicon demo` and the console.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "actors/job/job.hpp"
#include "runtime/client.hpp"
#include "runtime/identity.hpp"

namespace aicon::train {

/// A RateRequest for the last ring of `r` (run with `o`, o.verifier set),
/// signed by the job's payer for the chain `chain` (chain_id_of).
envelope make_rate_request(const job_options& o, const job_result& r, const identity& payer,
                           const std::array<uint8_t, 32>& chain);

/// An earlier ring as a Cap'n Proto EarlierRing (schemas/rater.capnp), as
/// a RateRequest carries it and a job host keeps it; and back (errors name
/// what is malformed).
envelope earlier_ring_envelope(const earlier_ring& e);
caf::expected<earlier_ring> parse_earlier_ring(const envelope& env);

struct rank_verdict {
  uint32_t rank = 0;
  node_id trainer;
  bool passed = false;
  std::string why;
  uint64_t units = 0;
  /// The steps the rater found this rank paid for: its checked log's, at
  /// most the steps its ring kept (at most the job's). A rated rank is
  /// paid for these.
  uint64_t paid_steps = 0;
  /// The ring's session the rank trained in (the last ring's, or an
  /// earlier one's for a job re-formed after a lost rank).
  std::array<uint8_t, 32> session{};
};

struct rating {
  std::vector<rank_verdict> verdicts;
  uint32_t samples_per_trainer = 0;
  uint32_t receipts = 0;
  uint64_t slashed = 0, minted = 0, verify_ms = 0;
  std::vector<std::pair<node_id, uint64_t>> rewards;
};

/// Decodes a RateResult.
caf::expected<rating> parse_rating(const envelope& reply);

using ledger_ask = std::function<caf::expected<envelope>(envelope)>;

/// The chain id (TipInfo.chainId) of the ledger behind `ask`.
caf::expected<std::array<uint8_t, 32>> chain_id_of(const ledger_ask& ask);

/// A registered asset's terms, as the chain has them.
struct asset_terms {
  node_id owner;
  std::string kind;
  uint64_t price = 0; ///< per use
  std::array<uint8_t, 32> metadata{}; ///< AssetInfo.metadataHash (a model asset: its file's hash)
};

/// Whether a model asset's registration pays its owner for a job on `o`: a
/// model put on the data nodes (torch:<id>) only when the registered owner
/// is the one its id is bound to (data::model_asset_id); any other model
/// spec, when registered as a "model".
bool model_terms_hold(const job_options& o, const asset_terms& t);
/// Asset `id` through `ask` (a LedgerQuery to some ledger); nullopt when it
/// is not registered; an error when the ledger cannot be asked.
caf::expected<std::optional<asset_terms>> terms_of(const ledger_ask& ask,
                                                   const std::array<uint8_t, 32>& id);
/// The asset id of a data file a job reads directly (no data node):
/// BLAKE2b-256 of its bytes.
caf::expected<std::array<uint8_t, 32>> file_asset_id(const std::filesystem::path& file);
/// The asset id a job's dataset and model have: `o.dataset` (a data node's
/// manifest id) or else `o.dataset_asset`; the model: model_id(spec).
std::optional<std::array<uint8_t, 32>> dataset_asset_of(const job_options& o);
std::array<uint8_t, 32> model_asset_of(const job_options& o);

/// The payouts of a Settle for `job`: every rank that passed is paid
/// steps x price for its trainer (ranks of one host add up; a rated rank
/// for the steps of its checked work log, at most `steps`: the ranks of a
/// ring re-formed mid-job ran only its part, and the earlier rings' work
/// was not verified): its lease's
/// price where `lease_prices` names one (never above `price_per_step`, the
/// terms' cap), else the cap; failed ranks
/// nothing; the dataset's and the model's owners their prices (when they
/// are registered assets and not owned by the payer); the rest of `escrow`
/// returns to the payer.
struct settle_plan {
  std::vector<std::pair<node_id, uint64_t>> payouts;
  uint64_t trainers = 0, dataset = 0, model = 0; ///< paid to each part
  uint64_t refund = 0;
  std::string why; ///< non-empty: the escrow cannot cover it
};
settle_plan plan_settlement(uint64_t escrow, const rating& verdicts, uint64_t steps,
                            uint64_t price_per_step, const node_id& payer,
                            const std::optional<asset_terms>& dataset = std::nullopt,
                            const std::optional<asset_terms>& model = std::nullopt,
                            const std::map<node_id, uint64_t>& lease_prices = {});

/// Signed transactions of the payer.
envelope make_settle(const identity& payer, const std::array<uint8_t, 32>& chain, uint64_t nonce, const std::array<uint8_t, 32>& job,
                     const settle_plan& plan);
envelope make_escrow_lock(const identity& payer, const std::array<uint8_t, 32>& chain, uint64_t nonce,
                          const std::array<uint8_t, 32>& job, uint64_t amount);
/// EscrowTerms: a job host (`agent`) runs the job for the payer and may
/// settle it within them (schemas/chain.capnp).
struct agent_terms {
  node_id agent;
  uint64_t max_price = 0;   ///< per trainer per step
  uint64_t units = 0;       ///< K x steps
  uint64_t deadline_ms = 0; ///< wall clock
  std::vector<std::array<uint8_t, 32>> assets;
};
envelope make_escrow_lock(const identity& payer, const std::array<uint8_t, 32>& chain, uint64_t nonce,
                          const std::array<uint8_t, 32>& job, uint64_t amount,
                          const agent_terms& terms);
/// Registers asset `id` (kind "dataset", "model", ...) owned by `owner`.
envelope make_asset_register(const identity& owner, const std::array<uint8_t, 32>& chain, uint64_t nonce,
                             const std::array<uint8_t, 32>& id, const std::string& kind,
                             const std::array<uint8_t, 32>& metadata, uint64_t price);
/// The trained weights as an asset: id = BLAKE2b-256 of the checkpoint;
/// with `torchscript` (a job on a model asset, exported by its job host),
/// id = BLAKE2b-256 of that file and metadataHash = the checkpoint's.
/// `for_job`: signed by that job's escrow agent, registered for its payer.
envelope make_model_asset(const identity& payer, const std::array<uint8_t, 32>& chain, uint64_t nonce,
                          const std::vector<uint8_t>& checkpoint,
                          std::array<uint8_t, 32>* asset_id = nullptr,
                          const std::array<uint8_t, 32>* for_job = nullptr,
                          const std::vector<uint8_t>* torchscript = nullptr);

} // namespace aicon::train
