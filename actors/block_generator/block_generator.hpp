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

#include "runtime/access.hpp"
#include "runtime/system.hpp"

namespace aicon {

/// Shares the host's chain with its ledger role (see shared_chain).
caf::expected<caf::actor> spawn_block_generator(caf::actor_system& sys, const role_context& ctx);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row block_generator_access[] = {
  {"SignedTransaction", "anyone relaying it for its author", "ed25519 by the author over chain id + tx; every ledger rule", "the rule's name (`bad_signature`, `wrong_chain`, ...)"},
  {"SignedWorkReceipt", "anyone relaying it", "the trainer's and a genesis authority's signatures", "refused by name"},
  {"Block", "the height's committee (a proposal)", "the generator's signature; a committee member's vote, once per height", "refused by name, no vote"},
};

} // namespace aicon
