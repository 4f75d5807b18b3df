// Real `aicon` processes on 127.0.0.1 for the integration tests. Every
// process is killed when its handle goes away; every wait has a deadline.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "runtime/identity.hpp"
#include "tests/common/test_dir.hpp"

namespace aicon::test {

using namespace std::chrono_literals;

/// One child process with stdout and stderr in a log file.
class process {
public:
  process(const std::vector<std::string>& args, std::filesystem::path log);
  ~process();
  process(const process&) = delete;
  process& operator=(const process&) = delete;

  pid_t pid() const {
    return pid_;
  }
  std::string log_text() const;

  /// Waits until the log holds `needle`; returns the line, or nullopt.
  std::optional<std::string> wait_for_log(const std::string& needle,
                                          std::chrono::milliseconds timeout) const;

  /// Sends `sig` and waits for the exit; returns the exit status (or 128+signal),
  /// or -1 if it did not exit in time (then it is killed).
  int stop(int sig, std::chrono::milliseconds timeout);

  bool running();

  /// Waits (bounded) for the exit; returns the status like stop(), -1 on timeout.
  int wait(std::chrono::milliseconds timeout);

private:
  void reap(int status);

  pid_t pid_ = -1;
  std::filesystem::path log_;
  bool reaped_ = false;
  int status_ = -1;
};

/// Runs a command to completion (bounded); returns exit code and output.
struct command_result {
  int exit_code = -1;
  std::string output;
};
command_result run_command(const std::vector<std::string>& args,
                           std::chrono::milliseconds timeout = 30s);

/// A loopback port the OS has just handed out (then released), for configs
/// that must name their ports before any host starts.
uint16_t free_port();

/// The aicon binary under test.
std::string aicon_binary();

/// A node's data dir with a fresh key.
struct node_dir {
  std::filesystem::path dir;
  node_id id;
};
node_dir make_node(const temp_dir& root, const std::string& name);

/// Lets `who` trust `whom`'s certificate.
void trust(const node_dir& who, const node_dir& whom);

/// Writes `text` to DIR/NAME and returns the path.
std::filesystem::path write_file(const std::filesystem::path& dir, const std::string& name,
                                 const std::string& text);

/// Starts `aicon host --config CFG` and waits for its listening line.
/// Returns the process and its port.
struct running_host {
  std::unique_ptr<process> proc;
  uint16_t port = 0;
};
/// `env`: VAR=value settings for the host process only.
running_host start_host(const std::filesystem::path& config, const std::filesystem::path& log,
                        const std::vector<std::string>& extra_args = {},
                        const std::vector<std::string>& env = {});

} // namespace aicon::test
