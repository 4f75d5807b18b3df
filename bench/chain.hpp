// bench/chain: signed transfers committed durably per second (a block of
// transactions per LMDB write transaction, every signature verified on all
// cores, sync on commit), beside two ceilings measured in the same run: raw
// libsodium ed25519 verifications on all cores, and raw LMDB durable commits
// of the same bytes.
#pragma once

#include <CLI/CLI.hpp>

namespace aicon::bench {

struct chain_options {
  int blocks = 20;       ///< blocks to commit
  int txs = 1000;        ///< transfers per block
  bool quick = false;    ///< tiny run for ctest
  std::string dir;       ///< keep the stores here (DIR/target, DIR/genesis.toml)
};

void add_chain_flags(CLI::App& app, chain_options& opts);
int run_chain(const chain_options& opts);

} // namespace aicon::bench
