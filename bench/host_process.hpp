// An `aicon host` child process for benchmarks that need a real second
// process (the data node, the allreduce ring): started from the aicon binary
// beside this one, its output in a log file, stopped (SIGTERM, then SIGKILL)
// when the handle goes.
#pragma once

#include <cstdint>
#include <filesystem>

#include <sys/types.h>

#include <caf/error.hpp>

namespace aicon::bench {

/// A loopback port the OS has just handed out (then released).
uint16_t loopback_port();

struct host_process {
  pid_t pid = -1;
  host_process() = default;
  host_process(const host_process&) = delete;
  host_process& operator=(const host_process&) = delete;
  host_process(host_process&& o) noexcept : pid(o.pid) {
    o.pid = -1;
  }
  ~host_process();
};

/// `aicon host --config CONFIG`, stdout and stderr into `log`.
caf::error start_host(host_process& h, const std::filesystem::path& config,
                      const std::filesystem::path& log);

} // namespace aicon::bench
