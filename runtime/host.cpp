#include "runtime/host.hpp"

#include <csignal>
#include <cstdlib>
#include <ctime>
#include <unistd.h>
#include <pthread.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "runtime/atoms.hpp"
#include "runtime/conn_watchdog.hpp"
#include "runtime/directory.hpp"
#include "runtime/error.hpp"
#include "runtime/gatekeeper.hpp"
#include "runtime/log.hpp"
#include "runtime/peer_manager.hpp"
#include "runtime/peers_file.hpp"
#include "runtime/tls.hpp"

namespace aicon {

caf::expected<std::unique_ptr<host>> host::start(
  const host_config& cfg, const std::map<std::string, role_factory>& factories) {
  std::unique_ptr<host> h{new host};
  h->cfg_ = cfg;
  auto id = load_identity(cfg.data_dir);
  if (!id)
    return id.error();
  h->self_ = std::make_shared<const identity>(*id);
  system_options opts;
  opts.lim = cfg.lim;
  // host.toml's peers plus those added at run time (`aicon peer add`),
  // minus the removed ones.
  auto runtime = load_runtime_peers(cfg.data_dir);
  if (!runtime)
    return runtime.error();
  auto admitted = effective_admitted(cfg, *runtime);
  auto connect = effective_connect(cfg, *runtime);
  if (cfg.dev_open) {
    log_warning("!!! DEV MODE (peers.dev_open = true): links are encrypted but NOT "
                "authenticated; anyone who can reach {} can connect and message every role. "
                "Never use this outside a test on loopback. !!!",
                cfg.listen.to_string());
  } else {
    auto tls = prepare_tls_files(*h->self_, cfg.data_dir, admitted, cfg.data_dir / "tls");
    if (!tls)
      return tls.error();
    opts.tls = *tls;
  }
  for (auto& name : cfg.roles)
    if (name != "directory" && !factories.count(name))
      return make_error(errc::config_invalid, fmt::format("unknown role '{}'", name));
  h->sys_cfg_ = std::make_unique<caf::actor_system_config>();
  configure_system(*h->sys_cfg_, opts);
  h->sys_ = std::make_unique<caf::actor_system>(*h->sys_cfg_);
  auto& sys = *h->sys_;
  harden_system(sys);
  if (!cfg.dev_open && !sys.openssl_manager().authentication_enabled())
    return make_error(errc::config_invalid,
                      "TLS authentication is not enabled; refusing to run unauthenticated "
                      "outside dev mode");
  role_context ctx;
  h->stopping_ = ctx.stopping;
  ctx.self = h->self_;
  ctx.lim = cfg.lim;
  h->counters_ = std::make_shared<host_counters>();
  ctx.counters = h->counters_;
  ctx.site = cfg.site;
  ctx.bind_host = cfg.listen.host;
  ctx.site_rtts = cfg.site_rtts;
  ctx.data_dir = cfg.data_dir;
  ctx.genesis = cfg.genesis;
  ctx.data_files = cfg.data_files;
  ctx.trainer_clients = cfg.trainer_clients;
  ctx.model_owners = cfg.model_owners;
  if (!cfg.torch_cpu_capability.empty()) {
    // Read by libtorch when the torch plug-in is first loaded, after this.
    ::setenv("ATEN_CPU_CAPABILITY", cfg.torch_cpu_capability.c_str(), 1);
    log_info("torch models run on the '{}' CPU kernels ([host] torch_cpu_capability)",
             cfg.torch_cpu_capability);
  }
  h->directory_ = spawn_directory(sys, ctx);
  ctx.directory = h->directory_;
  for (auto& name : cfg.roles) {
    if (name == "directory")
      continue;
    auto role = factories.at(name)(sys, ctx);
    if (!role) {
      caf::anon_send_exit(h->directory_, caf::exit_reason::user_shutdown);
      for (auto& [_, handle] : h->roles_)
        caf::anon_send_exit(handle, caf::exit_reason::user_shutdown);
      return make_error(code_of(role.error()),
                        fmt::format("role '{}': {}", name, what_of(role.error())));
    }
    h->roles_.emplace(name, *role);
  }
  // The directory always answers hello and status through the gatekeeper.
  h->roles_.emplace("directory", h->directory_);
  for (auto& [name, handle] : h->roles_)
    caf::anon_send(h->directory_, register_atom::value, name, handle);
  h->gatekeeper_ = spawn_gatekeeper(sys, ctx, h->roles_);
  h->peers_ = spawn_peer_manager(sys, ctx, true, cfg);
  auto port = caf::openssl::publish(h->gatekeeper_, cfg.listen.port, cfg.listen.host.c_str(),
                                    true);
  if (!port)
    return make_error(errc::io_error, fmt::format("cannot listen on {}: {}",
                                                  cfg.listen.to_string(),
                                                  caf::to_string(port.error())));
  h->port_ = *port;
  caf::anon_send(h->directory_, port_atom::value, h->port_);
  std::string role_list;
  for (auto& [name, _] : h->roles_)
    role_list += role_list.empty() ? name : "," + name;
  log_info("aicon host {} listening on {}:{} ({}) site={} roles={}", h->self_->id().hex(),
           cfg.listen.host, h->port_,
           cfg.dev_open ? "TLS, unauthenticated dev mode"
                        : fmt::format("mutual TLS, {} allowed peer(s)", admitted.size()),
           cfg.site, role_list);
  for (auto& peer : connect)
    caf::anon_send(h->peers_, dial_atom::value, peer.address.to_string(), peer.node.hex(),
                   true);
  h->watchdog_ = std::make_unique<conn_watchdog>(h->port_, cfg.lim, true);
  return h;
}

void host::stop() {
  if (!sys_)
    return;
  watchdog_.reset();
  if (stopping_)
    stopping_->store(true); // guarded actors accept exit messages from now on
  if (port_ != 0)
    sys_->middleman().unpublish(gatekeeper_, port_);
  for (auto& [name, handle] : roles_)
    caf::anon_send_exit(handle, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(gatekeeper_, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(peers_, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(directory_, caf::exit_reason::user_shutdown);
  roles_.clear();
  gatekeeper_ = peers_ = directory_ = nullptr;
  sys_.reset(); // waits for every actor
  sys_cfg_.reset();
}

host::~host() {
  stop();
}

int run_host(const host_config& cfg, const std::map<std::string, role_factory>& factories) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  auto h = host::start(cfg, factories);
  if (!h) {
    log_error("cannot start host: {}", describe(h.error()));
    return 2;
  }
  // A host a harness started (a test, a benchmark: AICON_PARENT_PID) stops
  // when that process is gone, whatever killed it: an aborted benchmark
  // must not leave hosts running.
  // (Only the harness's own child: a host a script started inherits the
  // variable with another parent.)
  pid_t parent = 0;
  if (const char* p = std::getenv("AICON_PARENT_PID"))
    parent = static_cast<pid_t>(std::atol(p));
  if (parent > 0 && ::getppid() != parent)
    parent = 0;
  int sig = 0;
  for (;;) {
    timespec second{1, 0};
    sig = parent > 0 ? sigtimedwait(&stop_signals, nullptr, &second) : sigwaitinfo(&stop_signals, nullptr);
    if (sig > 0)
      break;
    if (parent > 0 && ::getppid() != parent) {
      log_info("the process that started this host ({}) is gone: shutting down", parent);
      break;
    }
  }
  if (sig > 0)
    log_info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
  h->reset();
  log_info("stopped");
  return 0;
}

} // namespace aicon
