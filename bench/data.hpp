// bench/data: a trainer pulling a dataset from a data node in another
// process (`aicon host` with the data_node role, mutual TLS on 127.0.0.1):
// fetch + verify (BLAKE2b of every share) + decrypt (XChaCha20-Poly1305)
// into float32 tensors, in MB/s of shares, beside the ceiling measured in
// the same run: raw LMDB reads plus libsodium decryption of the same shares
// in one process.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace aicon::bench {

struct data_options {
  double megabytes = 64;   ///< dataset size (float32 features)
  int rounds = 3;          ///< best of
  bool quick = false;      ///< tiny run for ctest
  std::string csv;         ///< also write the table here
};

void add_data_flags(CLI::App& app, data_options& opts);
int run_data(const data_options& opts);

} // namespace aicon::bench
