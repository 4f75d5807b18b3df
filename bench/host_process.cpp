#include "bench/host_process.hpp"
#include "runtime/ports.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "runtime/error.hpp"
#include "runtime/identity.hpp"
#include "runtime/system.hpp"
#include "runtime/tls.hpp"
#include "schemas/host.capnp.h"

extern char** environ;

namespace aicon::bench {

uint16_t loopback_port() {
  return pick_loopback_port();
}

host_process::~host_process() {
  if (pid <= 0)
    return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 50; ++i) {
    if (::waitpid(pid, nullptr, WNOHANG) == pid)
      return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
}

caf::error start_host(host_process& h, const std::filesystem::path& config,
                      const std::filesystem::path& log) {
  char exe[4096];
  auto n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0)
    return make_error(errc::io_error, "cannot find /proc/self/exe");
  exe[n] = '\0';
  auto aicon = std::filesystem::path{exe}.parent_path() / "aicon";
  std::vector<std::string> args{aicon.string(), "host", "--config", config.string()};
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  // The host stops when this process is gone (runtime/host.cpp).
  auto env_copy = child_host_environment();
  std::vector<char*> envp;
  for (auto& e : env_copy)
    envp.push_back(e.data());
  envp.push_back(nullptr);
  int rc = posix_spawn(&h.pid, aicon.c_str(), &fa, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    h.pid = -1;
    return make_error(errc::io_error, fmt::format("cannot start {}", aicon.string()));
  }
  return caf::none;
}


caf::error start_trainer_mesh(trainer_mesh& rc, const std::filesystem::path& dir, uint32_t n,
                              const std::vector<std::filesystem::path>& extra_data_dirs) {
  auto client_dir = dir / "client";
  auto me = create_identity(client_dir);
  if (!me)
    return me.error();
  std::vector<std::filesystem::path> dirs;
  std::vector<uint16_t> ports;
  for (uint32_t i = 0; i < n; ++i) {
    dirs.push_back(dir / fmt::format("h{}", i));
    auto id = create_identity(dirs.back());
    if (!id)
      return id.error();
    rc.ids.push_back(id->id());
    ports.push_back(loopback_port());
  }
  for (uint32_t i = 0; i < n; ++i) {
    if (!trust_certificate(dirs[i], client_dir / node_cert_file)
        || !trust_certificate(client_dir, dirs[i] / node_cert_file))
      return make_error(errc::io_error, "cannot exchange certificates");
    for (uint32_t k = 0; k < n; ++k)
      if (k != i && !trust_certificate(dirs[i], dirs[k] / node_cert_file))
        return make_error(errc::io_error, "cannot exchange certificates");
  }
  for (uint32_t i = 0; i < n; ++i) {
    std::string allow = fmt::format("\"{}\"", me->id().hex()), connect;
    for (uint32_t k = 0; k < n; ++k)
      if (k != i) {
        allow += fmt::format(", \"{}\"", rc.ids[k].hex());
        connect += fmt::format("  {{ address = \"127.0.0.1:{}\", node = \"{}\" }},\n", ports[k],
                               rc.ids[k].hex());
      }
    auto cfg = dir / fmt::format("h{}.toml", i);
    std::string data_dirs = fmt::format("\"{}\"", (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data").string());
    for (auto& d : extra_data_dirs)
      data_dirs += fmt::format(", \"{}\"", d.string());
    std::ofstream{cfg} << fmt::format(
      "[host]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\nroles = [\"directory\", \"trainer\"]\n"
      "data_files = [{}]\ntrainer_clients = [\"{}\"]\n[peers]\nallow = [{}]\nconnect = [\n{}]\n",
      dirs[i].string(), ports[i], data_dirs, me->id().hex(), allow, connect);
    rc.hosts.emplace_back();
    if (auto err = start_host(rc.hosts.back(), cfg, dir / fmt::format("h{}.log", i)))
      return err;
  }
  client::options co;
  co.data_dir = client_dir;
  auto c = client::start(co);
  if (!c)
    return c.error();
  rc.c = std::move(*c);
  for (uint32_t i = 0; i < n; ++i) {
    caf::expected<node_id> linked = make_error(errc::peer_down, "not tried");
    for (int t = 0; t < 100 && !linked; ++t) {
      linked = rc.c->connect(fmt::format("127.0.0.1:{}", ports[i]), rc.ids[i]);
      if (!linked)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!linked)
      return linked.error();
    auto role = rc.c->lookup("trainer@" + rc.ids[i].hex());
    if (!role)
      return role.error();
    rc.roles.push_back(*role);
  }
  // The hosts dial each other with back-off: wait (bounded) until every one
  // sees all the others up, so a ring can form at once.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (uint32_t i = 0; i < n; ++i) {
    for (;;) {
      uint32_t up = 0;
      if (auto dir = rc.c->lookup("directory@" + rc.ids[i].hex()))
        if (auto st = rc.c->request(*dir, make_envelope<schema::StatusRequest>([](auto) {}),
                                    std::chrono::seconds(5))) {
          opened<schema::StatusResponse> s{*st};
          if (s)
            for (auto p : s->getPeers())
              up += p.getUp() ? 1 : 0;
        }
      if (up + 1 >= n)
        break;
      if (std::chrono::steady_clock::now() > deadline)
        return make_error(errc::timeout,
                          fmt::format("host {} sees {} of its {} peers up after 60 s", i, up, n - 1));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  return caf::none;
}

} // namespace aicon::bench
