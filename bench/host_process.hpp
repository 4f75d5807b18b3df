// An `aicon host` child process for benchmarks that need a real second
// process (the data node, the allreduce ring): started from the aicon binary
// beside this one, its output in a log file, stopped (SIGTERM, then SIGKILL)
// when the handle goes.
#pragma once

#include <cstdint>
#include <filesystem>

#include <sys/types.h>

#include <memory>
#include <vector>

#include <caf/actor.hpp>
#include <caf/error.hpp>

#include "runtime/client.hpp"

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

/// n `aicon host` processes with the trainer role (one identity each), a
/// full mesh of mutual TLS links, and a client linked to all of them.
struct trainer_mesh {
  std::vector<node_id> ids;
  std::vector<host_process> hosts;
  std::unique_ptr<client> c;
  std::vector<caf::actor> roles; ///< trainer@host, through the client
};

/// `extra_data_dirs`: more [host] data_files directories (a torch model's).
caf::error start_trainer_mesh(trainer_mesh& mesh, const std::filesystem::path& dir, uint32_t n,
                              const std::vector<std::filesystem::path>& extra_data_dirs = {});

} // namespace aicon::bench
