// The ledger role: owns the host's chain store; answers LedgerQuery
// (tip, account, asset, block) and appends Blocks that pass every rule,
// whoever sent them. Every ledger_sync_ms it asks one peer ledger (in turn)
// for its tip and fetches the blocks it lacks, so a host that was down or
// missed a broadcast catches up by itself.
// It runs detached: a block append is an LMDB write transaction with fsync
// and must not block a CAF scheduler thread.
#pragma once

#include <memory>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "actors/ledger/chain.hpp"
#include "runtime/access.hpp"
#include "runtime/system.hpp"

namespace aicon {

/// The chain in ctx.data_dir with the genesis in ctx.genesis, opened once per
/// process and shared by the roles of that host (the ledger and the block
/// generator): one LMDB environment per host. Errors: config_invalid when no
/// genesis is configured or it cannot be read, and the store's own errors.
caf::expected<std::shared_ptr<ledger::chain>> shared_chain(const role_context& ctx);

/// The host's one LMDB environment for a role that keeps state beside the
/// chain: with a genesis configured, the chain's (the chain is returned
/// too, for escrow checks); without, the plain store in ctx.data_dir.
struct host_store {
  std::shared_ptr<store::environment> env;
  std::shared_ptr<ledger::chain> chain; ///< null when the host keeps no chain
};
caf::expected<host_store> open_host_store(const role_context& ctx);

caf::expected<caf::actor> spawn_ledger(caf::actor_system& sys, const role_context& ctx);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row ledger_access[] = {
  {"LedgerQuery", "any admitted peer", "(public, like the chain)", "-"},
  {"Block", "anyone relaying a final block", "generator and quorum vote signatures of the height's committee; every ledger rule", "refused by the rule's name, the chain unchanged"},
};

} // namespace aicon
