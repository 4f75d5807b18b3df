// `aicon wallet new|balance|transfer`: wallet keys and payments through a
// host's ledger and block generator.
#pragma once

#include <cstdint>
#include <string>

namespace aicon {

struct wallet_options {
  std::string key;        ///< wallet key file
  std::string wallet;     ///< a wallet id (balance of someone else)
  std::string connect;    ///< host:port
  std::string node;       ///< expected NodeId of that host (optional)
  std::string data_dir;   ///< this client's identity and trusted peers
  bool dev_open = false;
  std::string to;         ///< transfer recipient
  uint64_t amount = 0;
  double wait_s = 30;     ///< transfer: wait this long for the block (0 = do not wait)
  uint64_t nonce = 0;     ///< transfer: 0 = the next; else re-submit exactly that transfer
  // `aicon chain receipt`
  std::string trainer_key, verifier_key;
  std::string session = "manual";
  uint64_t units = 0;
  uint64_t seq = 0;       ///< 0: the current time in ms (unique per call)
};

/// Writes a new wallet key (0600) and prints its id.
int wallet_new(const wallet_options& opts);

/// Prints balance, stake and nonce of a wallet as the host's ledger sees it.
int wallet_balance(const wallet_options& opts);

/// Signs a transfer with the next nonce, submits it to the host's block
/// generator and waits until a final block holds it.
int wallet_transfer(const wallet_options& opts);

/// `aicon chain receipt`: signs a work receipt as the trainer and the
/// verifier (until trainers and the rater exist, an operator or a test
/// produces them) and submits it to the host's block generator.
int work_receipt(const wallet_options& opts);

} // namespace aicon
