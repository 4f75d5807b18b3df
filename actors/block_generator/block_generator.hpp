// The block generator role: the host's part in producing PoV blocks.
//
// It takes (through the gatekeeper, from clients and from peers):
//   SignedTransaction  -> SubmitAck   into the mempool (signature, nonce,
//                                     duplicates checked), then passed on to
//                                     the peers' generators
//   SignedWorkReceipt  -> SubmitAck   into the receipt pool (both signatures,
//                                     an authority verifier, unused), passed on
//   Proposal           -> Vote        the round proposer's signed block, checked
//                                     against every chain rule and its proof of
//                                     lock; the answer is this member's prevote
//                                     (or why there is none)
//   Vote               -> SubmitAck   a committee member's prevote or precommit
//
// Finality is the round logic of actors/block_generator/consensus.hpp
// (Tendermint: propose, prevote, precommit; locks with proof of lock), which
// this actor only feeds: messages, its timers (round_timer_atom) and a tick
// every block_tick_ms that follows the ledger's tip to the next height and
// pokes the machine when work or transactions wait. It writes each promise
// (lock and signed votes) to LMDB with fsync before the vote leaves, signs
// and sends proposals and votes to the height's committee, and hands a
// decided block with its precommits to the ledger role, the only writer of
// the chain, then to the peers' ledgers.
// Runs detached: proposing and checking re-execute a block on the chain store.
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
  {"Proposal", "the round's proposer in the height's committee", "its ed25519 signature over round, proof-of-lock round and block hash; every ledger rule; each proof-of-lock vote a signed prevote for the block in that round", "refused by name, no vote"},
  {"Vote", "a member of the height's committee", "the voter's ed25519 signature over height, round, kind and block hash; two for different blocks in one round are evidence", "`bad_signature`; `forbidden` for a non-member at this host's height; not counted"},
};

} // namespace aicon
