// The ledger role: owns the host's chain store; answers LedgerQuery
// (tip, account, asset, block) and appends Blocks that pass every rule.
// It runs detached: a block append is an LMDB write transaction with fsync
// and must not block a CAF scheduler thread.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "runtime/system.hpp"

namespace aicon {

/// Opens DATA_DIR/store with the genesis in `ctx.genesis`. Errors:
/// config_invalid when no genesis is configured or it cannot be read, and
/// the store's own errors.
caf::expected<caf::actor> spawn_ledger(caf::actor_system& sys, const role_context& ctx);

} // namespace aicon
