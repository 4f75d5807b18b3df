// bench/messages: the Cap'n Proto envelope against a plain CAF message that
// carries the same bytes, measured in the same run, over the same path:
// in one process, and to a second process on 127.0.0.1 over plain TCP and
// over the mutual-TLS links hosts really use.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

namespace aicon::bench {

struct messages_options {
  double seconds = 1.0;       ///< measuring time per cell
  bool quick = false;         ///< tiny run for ctest: proves the bench works
  std::string transports = "local,tcp,tls";
  std::string csv;            ///< write the table as CSV too
  // internal: the server process
  bool serve = false;
  std::string data_dir;
};

void add_messages_flags(CLI::App& app, messages_options& opts);

/// Runs the benchmark (or, with --serve, its server process). `self_exe` is
/// the path to re-execute for the server. Returns the exit code.
int run_messages(const messages_options& opts, const char* self_exe);

} // namespace aicon::bench
