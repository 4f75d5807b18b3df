// Work receipts: the verified work that lets a generator produce a block
// (Proof of Value). A trainer signs what it did in a training session; a
// verifier that is an authority in the genesis (the rater) countersigns it.
// A block carries the receipts that earned it, all of one session, and each
// receipt earns a block only once.
#pragma once

#include <set>

#include <caf/error.hpp>

#include "actors/ledger/hashing.hpp"
#include "runtime/envelope.hpp"
#include "runtime/identity.hpp"
#include "schemas/chain.capnp.h"

namespace aicon::ledger {

struct work_facts {
  hash256 session{}, job{}, model{};
  uint64_t seq = 1;
  uint64_t units = 0;
  hash256 log_root{};
};

/// "aicon-receipt-v1" ‖ canonical(receipt): what trainer and verifier sign.
std::vector<uint8_t> receipt_signing_bytes(schema::WorkReceipt::Reader r);

/// A receipt signed by `trainer` and countersigned by `verifier`.
envelope make_work_receipt(const identity& trainer, const identity& verifier,
                           const work_facts& facts);

/// BLAKE2b-256 of the signed receipt's canonical bytes (its replay key).
hash256 receipt_hash(schema::SignedWorkReceipt::Reader r);

/// Merkle root of a block's receipts (zeros for none).
hash256 receipt_root(capnp::List<schema::SignedWorkReceipt>::Reader rs);

/// Field sizes, units > 0, seq >= 1, both signatures, and the verifier is
/// one of `authorities`. Errors say which ("receipt: ...").
caf::error check_receipt(schema::SignedWorkReceipt::Reader r,
                         const std::set<node_id>& authorities);

} // namespace aicon::ledger
