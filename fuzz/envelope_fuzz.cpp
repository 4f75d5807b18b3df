// Every message type a role accepts, opened from raw bytes: the first byte
// picks the type, the rest are its words. Opening validates the whole
// message under the reader limits; a valid one is then walked completely.
#include <kj/string.h>

#include <capnp/pretty-print.h>

#include "fuzz/fuzz.hpp"
#include "runtime/envelope.hpp"
#include "schemas/alloc.capnp.h"
#include "schemas/chain.capnp.h"
#include "schemas/common.capnp.h"
#include "schemas/data.capnp.h"
#include "schemas/job.capnp.h"
#include "schemas/echo.capnp.h"
#include "schemas/host.capnp.h"
#include "schemas/rater.capnp.h"
#include "schemas/script.capnp.h"
#include "schemas/trainer.capnp.h"

using namespace aicon;

namespace {

template <class T>
void open_as(const envelope& env) {
  opened<T> o{env};
  if (!o)
    return;
  try {
    // Every field read through the schema (a pointer of the wrong kind
    // throws here); large ones only sized, so the harness stays fast.
    if (env.size_bytes() <= (8u << 10))
      (void) capnp::prettyPrint(o.root()).flatten();
    else
      (void) o.root().totalSize();
  } catch (const kj::Exception&) {
    // A reader past its traversal limit throws; the roles catch it the same way.
  }
}

template <class... Ts>
struct types {
  static constexpr size_t count = sizeof...(Ts);
  static void open(size_t i, const envelope& env) {
    size_t k = 0;
    ((k++ == i ? open_as<Ts>(env) : void()), ...);
  }
  static uint64_t id(size_t i) {
    uint64_t ids[] = {capnp::typeId<Ts>()...};
    return ids[i];
  }
  template <class F>
  static void each(F f) {
    (f(make_envelope<Ts>([](typename Ts::Builder) {})), ...);
  }
};

using accepted = types<
  schema::EchoRequest, schema::HelloRequest, schema::StatusRequest, schema::Gossip, schema::Ping,
  schema::SignedTransaction, schema::SignedWorkReceipt, schema::Block, schema::LedgerQuery,
  schema::RateRequest, schema::SignedOffer, schema::AllocAsk, schema::AllocQuery,
  schema::TrainerJoin, schema::TrainStep, schema::TrainQuery, schema::RingLink, schema::RingRun,
  schema::RingChunk, schema::ScriptHandler, schema::ScriptPoll, schema::ScriptClose,
  schema::ScriptList, schema::DataQuery, schema::FetchShares, schema::KeyRequest,
  schema::ShareReport, schema::StorageChallenge, schema::UploadBegin, schema::UploadShares,
  schema::UploadCommit, schema::JobSubmit, schema::JobQuery, schema::ModelPut, schema::ModelFetch, schema::Proposal,
  schema::Vote, schema::ErrorReply>;

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  auto which = data[0] % accepted::count;
  auto env = envelope_from_bytes({data + 1, size - 1}, accepted::id(which));
  accepted::open(which, env);
  (void) error_of_reply(env);
  (void) oversize_error(env);
  return 0;
}

std::vector<std::string> aicon_fuzz_seeds() {
  std::vector<std::string> out;
  size_t i = 0;
  accepted::each([&](const envelope& env) {
    std::string s(1, static_cast<char>(i++));
    s.append(reinterpret_cast<const char*>(env.bytes().data()), env.bytes().size());
    out.push_back(std::move(s));
  });
  // A few with content: an echo, a transaction, an error reply.
  auto add = [&](size_t index, const envelope& env) {
    std::string s(1, static_cast<char>(index));
    s.append(reinterpret_cast<const char*>(env.bytes().data()), env.bytes().size());
    out.push_back(std::move(s));
  };
  add(0, make_envelope<schema::EchoRequest>([](auto b) {
        b.setSeq(7);
        b.setPayload(kj::StringPtr("hello").asBytes());
      }));
  add(5, make_envelope<schema::SignedTransaction>([](auto b) {
        auto tx = b.initTx();
        tx.initAuthor(32);
        tx.initChain(32);
        tx.setNonce(1);
        tx.getBody().initTransfer().setAmount(5);
        b.initSignature(64);
      }));
  add(accepted::count - 1, make_error_reply(make_error(errc::busy, "the mempool is full")));
  return out;
}
