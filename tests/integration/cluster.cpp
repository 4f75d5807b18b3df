#include "cluster.hpp"
#include "runtime/ports.hpp"

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "runtime/error.hpp"
#include "runtime/system.hpp"
#include "runtime/tls.hpp"

extern char** environ;

namespace aicon::test {

process::process(const std::vector<std::string>& args, std::filesystem::path log)
  : log_(std::move(log)) {
  std::vector<char*> argv;
  std::vector<std::string> copy = args;
  for (auto& a : copy)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  // The hosts it starts stop when this process is gone (runtime/host.cpp).
  auto env_copy = child_host_environment();
  std::vector<char*> envp;
  for (auto& e : env_copy)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  int rc = posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0)
    throw std::runtime_error("cannot start " + args[0]);
}

process::~process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

void process::reap(int status) {
  reaped_ = true;
  status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool process::running() {
  if (reaped_)
    return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) {
    reap(status);
    return false;
  }
  return true;
}

int process::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline)
      return -1;
    std::this_thread::sleep_for(10ms);
  }
  return status_;
}

std::string process::log_text() const {
  std::ifstream in{log_};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::optional<std::string> process::wait_for_log(const std::string& needle,
                                                 std::chrono::milliseconds timeout) const {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  do {
    auto text = log_text();
    auto pos = text.find(needle);
    if (pos != std::string::npos) {
      auto begin = text.rfind('\n', pos);
      auto end = text.find('\n', pos);
      return text.substr(begin == std::string::npos ? 0 : begin + 1,
                         end == std::string::npos ? std::string::npos : end - begin - 1);
    }
    std::this_thread::sleep_for(20ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return std::nullopt;
}

int process::stop(int sig, std::chrono::milliseconds timeout) {
  if (!running())
    return status_;
  ::kill(pid_, sig);
  auto status = wait(timeout);
  if (status == -1) {
    ::kill(pid_, SIGKILL);
    int raw = 0;
    ::waitpid(pid_, &raw, 0);
    reap(raw);
  }
  return status;
}

command_result run_command(const std::vector<std::string>& args,
                           std::chrono::milliseconds timeout) {
  test::temp_dir tmp;
  auto log = tmp / "out.log";
  command_result result;
  {
    process p{args, log};
    result.exit_code = p.wait(timeout);
    if (result.exit_code == -1)
      p.stop(SIGKILL, 1s);
    result.output = p.log_text();
  }
  return result;
}

std::string aicon_binary() {
  return AICON_BINARY;
}

node_dir make_node(const temp_dir& root, const std::string& name) {
  auto dir = root / name;
  auto id = create_identity(dir);
  BOOST_REQUIRE_MESSAGE(id, (id ? "" : describe(id.error())));
  return {dir, id->id()};
}

void trust(const node_dir& who, const node_dir& whom) {
  auto id = trust_certificate(who.dir, whom.dir / node_cert_file);
  BOOST_REQUIRE(id);
}

std::filesystem::path write_file(const std::filesystem::path& dir, const std::string& name,
                                 const std::string& text) {
  auto path = dir / name;
  std::ofstream out{path};
  out << text;
  return path;
}

running_host start_host(const std::filesystem::path& config, const std::filesystem::path& log,
                        const std::vector<std::string>& extra_args,
                        const std::vector<std::string>& env) {
  std::vector<std::string> args;
  if (!env.empty()) {
    args.push_back("/usr/bin/env");
    args.insert(args.end(), env.begin(), env.end());
  }
  args.insert(args.end(), {aicon_binary(), "host", "--config", config.string()});
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  running_host h;
  h.proc = std::make_unique<process>(args, log);
  auto line = h.proc->wait_for_log("listening on 127.0.0.1:", 15s);
  BOOST_REQUIRE_MESSAGE(line, "host did not start:\n" << h.proc->log_text());
  auto pos = line->find("127.0.0.1:") + 10;
  h.port = static_cast<uint16_t>(std::stoi(line->substr(pos)));
  return h;
}

uint16_t free_port() {
  auto port = pick_loopback_port();
  BOOST_REQUIRE_MESSAGE(port != 0, "no loopback port binds");
  return port;
}

} // namespace aicon::test
