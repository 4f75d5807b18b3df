// Blocks as a peer sends them (catch-up, broadcast): appended to a real
// chain store (LMDB, one per process) that must refuse anything that is not
// the next valid block, without crashing or changing its state.
#include "actors/ledger/chain.hpp"
#include "actors/ledger/work.hpp"
#include "fuzz/fuzz.hpp"
#include "runtime/temp_dir.hpp"
#include "schemas/chain.capnp.h"

using namespace aicon;

namespace {

struct fixture {
  temp_dir dir = std::move(*temp_dir::create("aicon-fuzz-block"));
  identity generator = identity::generate();
  ledger::genesis_config g;
  std::unique_ptr<ledger::chain> chain;
  std::string block1; ///< a valid next block (a seed)

  fixture() {
    g.time_ms = 1000;
    g.candidates = {{generator.id(), 1}};
    g.committee_size = 1;
    g.initial_difficulty = 1;
    g.authorities = {generator.id()};
    g.allocations = {{generator.id(), 100, 0}};
    auto scratch = ledger::chain::open(dir.path() / "scratch", g);
    if (scratch) {
      ledger::block_draft d;
      d.time_ms = 2000;
      d.receipts = {ledger::make_work_receipt(generator, generator, ledger::work_facts{.units = 1})};
      if (auto b = (*scratch)->propose(generator, d)) {
        auto voted = ledger::chain::add_vote(*b, generator);
        block1.assign(reinterpret_cast<const char*>(voted.bytes().data()), voted.bytes().size());
      }
    }
    auto c = ledger::chain::open(dir.path() / "store", g);
    if (c)
      chain = std::move(*c);
  }
};

fixture& fx() {
  static fixture f;
  return f;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto& f = fx();
  if (!f.chain)
    return 0;
  // Refused unless it is the next valid block (the seed, once); after that
  // inputs are checked against the new tip, which is as good a target.
  (void) f.chain->append(envelope_from_bytes({data, size}, capnp::typeId<schema::Block>()));
  return 0;
}

std::vector<std::string> aicon_fuzz_seeds() {
  return {fx().block1};
}
