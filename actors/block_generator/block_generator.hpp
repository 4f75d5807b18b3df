// The block generator role: the host's part in producing PoV blocks.
//
// It takes (through the gatekeeper, from clients and from peers):
//   SignedTransaction  -> SubmitAck   into the mempool (signature, nonce,
//                                     duplicates checked), then passed on to
//                                     the peers' generators
//   SignedWorkReceipt  -> SubmitAck   into the receipt pool (both signatures,
//                                     an authority verifier, unused), passed on
//   Block (a proposal) -> Vote        when this host is in the height's
//                                     committee, the block passes every rule
//                                     but the quorum, and it has not voted for
//                                     another block at that height
//
// Every block_tick_ms it looks at its round. The committee for the block after
// the tip is drawn from the tip hash (ledger::select_committee); the member of
// rank k may propose once k * block_takeover_ms have passed since the tip
// arrived, so a silent generator is replaced. A proposal needs pending work
// receipts of one session that reach the difficulty; the proposer votes for
// it, asks the other members for their votes, appends the block once it holds
// a quorum (ceil(2/3) of the committee) and sends it to every peer ledger.
// Runs detached: proposing and voting re-execute a block on the chain store.
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include "runtime/system.hpp"

namespace aicon {

/// Shares the host's chain with its ledger role (see shared_chain).
caf::expected<caf::actor> spawn_block_generator(caf::actor_system& sys, const role_context& ctx);

} // namespace aicon
