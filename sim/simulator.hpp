// A deterministic simulator of block finality: N validators running the
// real consensus state machine (actors/block_generator/consensus.hpp) in one
// process, over a seeded network that delays, drops, duplicates, reorders
// and partitions messages, with crashes and restarts (what a validator did
// not persist is lost), clock skew, and Byzantine validators that double
// vote, equivocate proposals and propose invalid blocks. Invariants are
// checked after every event; a failing run names its seed, and the same
// seed replays it exactly (FoundationDB's and TigerBeetle's simulators).
//
// Each node's chain is either a small transfer ledger of the simulator's
// own (blocks of transfers and double-vote evidence, a state root over
// balances and stakes, the idle-block interval rule: a million events per
// second, for large batches) or, with real_ledger, ledger::chain itself
// over LMDB with real signatures and every rule of the chain.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace aicon::sim {

struct sim_options {
  uint64_t seed = 1;
  uint32_t nodes = 4;
  uint32_t byzantine = 1;          ///< validators that misbehave (< nodes/3 for the guarantees)
  double loss = 0.05;              ///< probability a message is dropped (while faults run)
  double duplicate = 0.02;         ///< probability a message is delivered twice
  uint64_t delay_ms_min = 1;       ///< network delay, uniform in [min, max]
  uint64_t delay_ms_max = 80;
  uint64_t skew_ms_max = 200;      ///< each node's clock offset, uniform in [-max, max]
  bool partitions = true;          ///< random partitions that heal
  bool crashes = true;             ///< random crashes and restarts of honest nodes
  uint64_t fault_ms = 30000;       ///< faults happen in [0, fault_ms); then the network is good
  uint64_t settle_ms = 30000;      ///< then this long to show progress
  uint64_t interval_ms = 500;      ///< idle-block target interval
  uint64_t tx_every_ms = 150;      ///< mean time between client transfers
  uint64_t split_ms = 0;           ///< > 0: one partition (two halves) at this time...
  uint64_t heal_ms = 0;            ///< ...healed at this time (within fault_ms)
  bool mutation_ignore_lock = false; ///< plant the bug the checker must find
  /// Each node keeps a real ledger::chain (LMDB in a temporary directory,
  /// not synced: a simulated crash never loses a committed block): real
  /// blocks, ed25519 signatures on blocks, votes, transfers and evidence,
  /// every chain rule. About a hundred times slower than the default model.
  bool real_ledger = false;
  bool trace = false;              ///< print every event
};

struct sim_result {
  uint64_t seed = 0;
  bool ok = true;
  std::string violation;           ///< the invariant broken, with time and event number
  uint64_t events = 0;
  uint64_t sim_ms = 0;
  uint64_t heights = 0;            ///< highest final height
  uint64_t txs_final = 0;
  uint64_t evidence = 0;           ///< double votes punished on the chain
  uint64_t max_round = 0;          ///< highest round any height needed
  std::vector<uint64_t> finality_ms; ///< per height: first proposal to first decision
  std::vector<uint32_t> finality_rounds; ///< per height: the deciding round
};

/// Runs one seed to the end or to the first violated invariant.
sim_result run(const sim_options& o);

} // namespace aicon::sim
