// The allocator role: the Resource Allocator of the network (pool.hpp holds
// the policy). It takes, through the gatekeeper:
//   SignedOffer -> AllocReply (granted: empty)   an offer or its heartbeat;
//                  the signature must be by offer.trainer, the clock within
//                  clock_skew_ms_max, else refused by name
//   AllocAsk    -> AllocReply    a job asks for K trainers: all or none;
//                  its escrow on this host's chain must cover k x maxPrice x
//                  steps ("insufficient budget: ...")
//   AllocQuery  -> AllocReply | AllocBook   status, renew, release, replace,
//                  and the whole book for `aicon status`
// Every change (offer, lease, held ask) is written to the host's LMDB in the
// same handler (a heartbeat that only extends a known offer is not
// written), so a restarted allocator comes back with its offers and leases,
// which get restart_grace_ms (10 s) to be renewed. Every second it expires offers that stopped heart-beating (their
// leases are revoked: the job sees "lost" in its next renew and asks for a
// replacement), leases their job did not renew, and waiting asks past their
// deadline. Site round trips are measured (the directory's pings, spread by
// gossip; the median over host pairs), except pairs pinned by [[site_rtt]].
#pragma once

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/expected.hpp>

#include <map>

#include "actors/allocator/pool.hpp"
#include "runtime/access.hpp"
#include "runtime/envelope.hpp"
#include "runtime/identity.hpp"
#include "runtime/system.hpp"
#include "schemas/alloc.capnp.h"

namespace aicon {

/// From the rater on the same host (a local message: the gatekeeper admits
/// envelopes only, so no peer can send it): (rating_atom, passed trainers'
/// NodeIds in hex, failed ones). A pass moves a rating r (start 0.5) to
/// r + 0.1 (1 - r), a failure to r / 2; ratings are kept in LMDB and weigh in
/// every later allocation.
using rating_atom = caf::atom_constant<caf::atom("rating")>;

caf::expected<caf::actor> spawn_allocator(caf::actor_system& sys, const role_context& ctx);

/// A signed offer of `self` (a trainer host): the trainer role's heartbeat.
envelope make_signed_offer(const identity& self, const alloc::offer& o, uint32_t ttl_ms,
                           uint64_t time_ms);

/// `ask` signed by the job's escrow payer for the chain `chain`.
envelope sign_alloc_ask(const identity& payer, const std::array<uint8_t, 32>& chain,
                        schema::AllocAsk::Reader ask);

/// The pool's view of an AllocReply's leases (for jobs).
std::vector<alloc::lease> leases_of(const envelope& reply);

/// An AllocReply's granted leases as signed LeaseInfo envelopes, by trainer
/// host: what a job's TrainerJoin for that host carries (TrainerJoin.lease).
std::map<node_id, envelope> signed_leases_of(const envelope& reply);

/// A lease as its allocator signed it.
struct signed_lease {
  alloc::lease lease; ///< job, trainer, count, price, expires_ms (allocator's clock)
  node_id allocator;  ///< the allocator host that signed it
};

/// `l` with its signature checked against the allocator it names.
/// Errors: invalid_argument (sizes), bad_signature. Whether that allocator
/// is one to honour is the trainer host's call (the allocators it offers to).
caf::expected<signed_lease> verified_lease(schema::LeaseInfo::Reader l);

/// Who may send each message this role accepts (README "Who may send
/// what"); message_table refuses a handler without a row here.
inline constexpr access_row allocator_access[] = {
  {"SignedOffer", "the trainer host it names", "its ed25519 signature, a fresh clock", "refused by name"},
  {"AllocAsk", "the payer the job's escrow names (through its coordinator), or the agent its terms name, within them", "ed25519 over chain id + ask; the escrow on the chain; the first ask's token", "`bad_signature` / `forbidden`"},
  {"AllocQuery", "status, book: any admitted peer (signed leases: only the coordinator); renew, release, replace: the job's coordinator", "the AllocAsk's 32-byte token", "`forbidden`, leases unchanged"},
};

} // namespace aicon
