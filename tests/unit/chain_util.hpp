// Helpers for tests of signed chain messages.
#pragma once

#include <vector>

#include "runtime/envelope.hpp"
#include "schemas/chain.capnp.h"

namespace aicon::test {

/// `stx` with one bit of its signature flipped: same transaction, forged
/// signature.
inline envelope with_forged_signature(const envelope& stx) {
  opened<schema::SignedTransaction> src{stx};
  return make_envelope<schema::SignedTransaction>([&](schema::SignedTransaction::Builder b) {
    b.setTx(src->getTx());
    std::vector<uint8_t> sig(src->getSignature().begin(), src->getSignature().end());
    sig[5] ^= 1;
    b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  });
}

} // namespace aicon::test
