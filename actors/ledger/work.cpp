#include "actors/ledger/work.hpp"

#include <cstring>

#include <fmt/format.h>

#include "runtime/error.hpp"

namespace aicon::ledger {

namespace {

kj::ArrayPtr<const kj::byte> bytes_of(const hash256& h) {
  return kj::arrayPtr(h.data(), h.size());
}

caf::error refuse(const std::string& what) {
  return make_error(errc::invalid_argument, "receipt: " + what);
}

} // namespace

std::vector<uint8_t> receipt_signing_bytes(schema::WorkReceipt::Reader r) {
  return tagged_canonical("aicon-receipt-v1", r);
}

envelope make_work_receipt(const identity& trainer, const identity& verifier,
                           const work_facts& f) {
  capnp::MallocMessageBuilder body;
  auto r = body.initRoot<schema::WorkReceipt>();
  r.setTrainer(kj::arrayPtr(trainer.id().bytes.data(), 32));
  r.setSessionId(bytes_of(f.session));
  r.setJobId(bytes_of(f.job));
  r.setModelId(bytes_of(f.model));
  r.setSeq(f.seq);
  r.setUnits(f.units);
  r.setLogRoot(bytes_of(f.log_root));
  r.setVerifier(kj::arrayPtr(verifier.id().bytes.data(), 32));
  auto msg = receipt_signing_bytes(r.asReader());
  auto ts = trainer.sign(msg);
  auto vs = verifier.sign(msg);
  return make_envelope<schema::SignedWorkReceipt>([&](schema::SignedWorkReceipt::Builder b) {
    b.setReceipt(r.asReader());
    b.setTrainerSignature(kj::arrayPtr(ts.data(), ts.size()));
    b.setVerifierSignature(kj::arrayPtr(vs.data(), vs.size()));
  });
}

hash256 receipt_hash(schema::SignedWorkReceipt::Reader r) {
  kj::Array<capnp::word> keep;
  return blake2b("aicon-receipt-hash-v1", canonical_bytes(r, keep));
}

hash256 receipt_root(capnp::List<schema::SignedWorkReceipt>::Reader rs) {
  std::vector<hash256> leaves;
  leaves.reserve(rs.size());
  for (auto r : rs)
    leaves.push_back(receipt_hash(r));
  return merkle_root(std::move(leaves), "aicon-receipt-node-v1");
}

caf::error check_receipt(schema::SignedWorkReceipt::Reader sr,
                         const std::set<node_id>& authorities) {
  if (!sr.hasReceipt())
    return refuse("no receipt body");
  auto r = sr.getReceipt();
  for (auto [name, size] : {std::pair{"sessionId", r.getSessionId().size()},
                            std::pair{"jobId", r.getJobId().size()},
                            std::pair{"modelId", r.getModelId().size()},
                            std::pair{"logRoot", r.getLogRoot().size()}})
    if (size != 32)
      return refuse(fmt::format("{} must be 32 bytes, got {}", name, size));
  auto trainer = node_id::from_bytes({r.getTrainer().begin(), r.getTrainer().size()});
  if (!trainer)
    return refuse("trainer is not a 32-byte NodeId");
  auto verifier = node_id::from_bytes({r.getVerifier().begin(), r.getVerifier().size()});
  if (!verifier)
    return refuse("verifier is not a 32-byte NodeId");
  if (r.getUnits() == 0)
    return refuse("zero work units");
  if (r.getSeq() == 0)
    return refuse("seq must start at 1");
  if (!authorities.count(*verifier))
    return make_error(errc::forbidden, fmt::format("receipt: verifier {} is not an authority "
                                                   "of this chain",
                                                   verifier->short_hex()));
  auto msg = receipt_signing_bytes(r);
  auto ts = sr.getTrainerSignature();
  if (!verify_signature(*trainer, msg, {ts.begin(), ts.size()}))
    return make_error(errc::bad_signature, fmt::format("receipt: the trainer signature of {} "
                                                       "does not verify",
                                                       trainer->short_hex()));
  auto vs = sr.getVerifierSignature();
  if (!verify_signature(*verifier, msg, {vs.begin(), vs.size()}))
    return make_error(errc::bad_signature, fmt::format("receipt: the verifier signature of {} "
                                                       "does not verify",
                                                       verifier->short_hex()));
  return caf::none;
}

} // namespace aicon::ledger
