// bench/allreduce: the actor ring's allreduce across 2 and 4 trainers, each
// in its own `aicon host` process (trainer role, mutual TLS on 127.0.0.1),
// for 4 KiB to 64 MiB: time, algbw and busbw (busbw = algbw x 2(n-1)/n, as
// nccl-tests define it), beside OpenMPI's MPI_Allreduce on the same sizes and
// process counts in the same run, over TCP on loopback (like for like) and
// with its default shared-memory transport; the ratios.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace aicon::bench {

struct allreduce_options {
  std::string ranks = "2,4";   ///< process counts
  std::string max_size = "64M";
  double seconds = 0.5;        ///< measuring time per cell, about
  bool quick = false;          ///< tiny run for ctest (2 ranks, <= 64 KiB, no MPI)
  bool no_mpi = false;
  std::string csv;
  uint32_t chunk_bytes = 256 << 10;
  uint32_t credits = 4;
  std::string transports = "stream,stream-plain,actor"; ///< ring transports to measure
};

void add_allreduce_flags(CLI::App& app, allreduce_options& opts);
int run_allreduce(const allreduce_options& opts);

} // namespace aicon::bench
