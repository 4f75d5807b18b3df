#include "runtime/host.hpp"

#include <csignal>
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
#include "runtime/tls.hpp"

namespace aicon {

int run_host(const host_config& cfg, const std::map<std::string, role_factory>& factories) {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  auto id = load_identity(cfg.data_dir);
  if (!id) {
    log_error("cannot start host: {}", describe(id.error()));
    return 2;
  }
  auto self = std::make_shared<const identity>(*id);
  system_options opts;
  opts.lim = cfg.lim;
  auto admitted = cfg.admitted();
  if (cfg.dev_open) {
    log_warning("!!! DEV MODE (peers.dev_open = true): links are encrypted but NOT "
                "authenticated; anyone who can reach {} can connect and message every role. "
                "Never use this outside a test on loopback. !!!",
                cfg.listen.to_string());
  } else {
    auto tls = prepare_tls_files(*self, cfg.data_dir, admitted, cfg.data_dir / "tls");
    if (!tls) {
      log_error("cannot start host: {}", describe(tls.error()));
      return 2;
    }
    opts.tls = *tls;
  }
  caf::actor_system_config sys_cfg;
  configure_system(sys_cfg, opts);
  caf::actor_system sys{sys_cfg};
  harden_system(sys);
  if (!cfg.dev_open && !sys.openssl_manager().authentication_enabled()) {
    log_error("cannot start host: TLS authentication is not enabled; refusing to run "
              "unauthenticated outside dev mode");
    return 2;
  }

  role_context ctx;
  ctx.self = self;
  ctx.lim = cfg.lim;
  ctx.counters = std::make_shared<host_counters>();
  ctx.site = cfg.site;
  auto directory = spawn_directory(sys, ctx);
  ctx.directory = directory;
  std::map<std::string, caf::actor> roles;
  for (auto& name : cfg.roles) {
    if (name == "directory") {
      roles.emplace(name, directory);
      continue;
    }
    auto f = factories.find(name);
    if (f == factories.end()) {
      log_error("cannot start host: unknown role '{}'", name);
      caf::anon_send_exit(directory, caf::exit_reason::user_shutdown);
      return 2;
    }
    roles.emplace(name, f->second(sys, ctx));
  }
  // The directory always answers hello and status through the gatekeeper,
  // even when the operator did not list it.
  roles.emplace("directory", directory);
  for (auto& [name, handle] : roles)
    caf::anon_send(directory, register_atom::value, name, handle);
  auto gatekeeper = spawn_gatekeeper(sys, ctx, roles);
  auto peers = spawn_peer_manager(sys, ctx);

  auto shutdown_actors = [&] {
    for (auto& [name, handle] : roles)
      caf::anon_send_exit(handle, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(gatekeeper, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(peers, caf::exit_reason::user_shutdown);
  };

  auto port = caf::openssl::publish(gatekeeper, cfg.listen.port, cfg.listen.host.c_str(), true);
  if (!port) {
    log_error("cannot listen on {}: {}", cfg.listen.to_string(), caf::to_string(port.error()));
    shutdown_actors();
    return 2;
  }
  caf::anon_send(directory, port_atom::value, *port);
  std::string role_list;
  for (auto& [name, _] : roles)
    role_list += role_list.empty() ? name : "," + name;
  log_info("aicon host {} listening on {}:{} ({}) site={} roles={}", self->id().hex(),
           cfg.listen.host, *port,
           cfg.dev_open ? "TLS, unauthenticated dev mode"
                        : fmt::format("mutual TLS, {} allowed peer(s)", admitted.size()),
           cfg.site, role_list);
  for (auto& peer : cfg.connect)
    caf::anon_send(peers, dial_atom::value, peer.address.to_string(), peer.node.hex(), true);

  {
    conn_watchdog watchdog{*port, cfg.lim};
    int sig = 0;
    sigwait(&stop_signals, &sig);
    log_info("received {}, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
  }
  sys.middleman().unpublish(gatekeeper, *port);
  shutdown_actors();
  return 0; // ~actor_system waits for every actor
}

} // namespace aicon
