// bench/federation: (1) a host started late downloads and verifies N blocks
// from a peer over the real TLS link, beside appending the same blocks to a
// fresh local store (every block verified, one durable LMDB commit each)
// measured in the same run; (2) gossip convergence among H host processes:
// how long until every host sees a new host up, and a killed one down,
// beside a direct fan-out (one client asking every host in turn) measured
// in the same run.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace aicon::bench {

struct federation_options {
  int blocks = 10000;
  int hosts = 16;
  bool quick = false;
};

void add_federation_flags(CLI::App& app, federation_options& opts);
int run_federation(const federation_options& opts);

} // namespace aicon::bench
