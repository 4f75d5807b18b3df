#include "cli/chain_cmd.hpp"

#include <chrono>
#include <cstdio>

#include "actors/ledger/chain.hpp"
#include "runtime/error.hpp"

namespace aicon {

namespace {

int fail(const caf::error& err) {
  std::fprintf(stderr, "aicon: %s\n", describe(err).c_str());
  return 1;
}

std::string hex_of(capnp::Data::Reader d) {
  return to_hex({d.begin(), d.size()});
}

} // namespace

int chain_show(const chain_cmd_options& opts) {
  auto g = ledger::load_genesis(opts.genesis);
  if (!g)
    return fail(g.error());
  auto c = ledger::chain::open(opts.data_dir, *g);
  if (!c)
    return fail(c.error());
  auto tip = (*c)->tip();
  if (!tip)
    return fail(tip.error());
  auto height = opts.height.value_or(tip->height);
  auto env = (*c)->block_at(height);
  if (!env)
    return fail(env.error());
  opened<schema::Block> b{*env};
  if (!b)
    return fail(b.error());
  auto h = b->getHeader();
  std::printf("tip         %llu\n", static_cast<unsigned long long>(tip->height));
  std::printf("height      %llu\n", static_cast<unsigned long long>(h.getHeight()));
  std::printf("hash        %s\n", ledger::hex(ledger::header_hash(h)).c_str());
  std::printf("prev        %s\n", hex_of(h.getPrevHash()).c_str());
  std::printf("time_ms     %llu\n", static_cast<unsigned long long>(h.getTimeMs()));
  std::printf("generator   %s\n", hex_of(h.getGenerator()).c_str());
  std::printf("session     %s\n", hex_of(h.getSessionId()).c_str());
  std::printf("job         %s\n", hex_of(h.getJobId()).c_str());
  std::printf("model       %s\n", hex_of(h.getModelId()).c_str());
  std::printf("work        %llu (difficulty %llu)\n",
              static_cast<unsigned long long>(h.getWorkUnits()),
              static_cast<unsigned long long>(h.getDifficulty()));
  std::printf("txs         %u (root %s)\n", b->getTransactions().size(),
              hex_of(h.getTxRoot()).c_str());
  std::printf("receipts    %u (root %s)\n", b->getReceipts().size(),
              hex_of(h.getReceiptRoot()).c_str());
  std::printf("state root  %s\n", hex_of(h.getStateRoot()).c_str());
  std::printf("votes       %u\n", b->getVotes().size());
  return 0;
}

int chain_verify(const chain_cmd_options& opts) {
  auto g = ledger::load_genesis(opts.genesis);
  if (!g)
    return fail(g.error());
  auto t0 = std::chrono::steady_clock::now();
  auto report = ledger::verify_chain(opts.data_dir, *g);
  if (!report)
    return fail(report.error());
  auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("verified %llu blocks, %llu transactions from genesis in %.2f s\n",
              static_cast<unsigned long long>(report->blocks),
              static_cast<unsigned long long>(report->transactions), secs);
  std::printf("state root %s\n", ledger::hex(report->state_root).c_str());
  return 0;
}

} // namespace aicon
