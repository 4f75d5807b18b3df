// An actor host: the roles of one node, its gatekeeper on a TLS port, its
// directory and its links to peers. `aicon host` runs one per process; tests
// and `aicon demo` can run several in one process.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>

#include "runtime/config.hpp"
#include "runtime/system.hpp"

namespace aicon {

class conn_watchdog;

class host {
public:
  /// Loads the key, writes the TLS files, starts the actor system and the
  /// roles, listens and starts dialing the configured peers. Errors name
  /// what is wrong (missing key, missing peer certificate, port in use).
  static caf::expected<std::unique_ptr<host>> start(
    const host_config& cfg, const std::map<std::string, role_factory>& roles);

  /// Stops every actor and waits for them.
  ~host();

  uint16_t port() const {
    return port_;
  }
  const node_id& id() const {
    return self_->id();
  }
  caf::actor_system& system() {
    return *sys_;
  }
  /// The local directory (lookups from code running in this host).
  const caf::actor& directory() const {
    return directory_;
  }
  const host_counters& counters() const {
    return *counters_;
  }

private:
  host() = default;
  void stop();

  host_config cfg_;
  std::shared_ptr<const identity> self_;
  std::shared_ptr<host_counters> counters_;
  std::unique_ptr<caf::actor_system_config> sys_cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  caf::actor directory_;
  caf::actor gatekeeper_;
  caf::actor peers_;
  std::map<std::string, caf::actor> roles_;
  uint16_t port_ = 0;
  std::unique_ptr<conn_watchdog> watchdog_;
  std::shared_ptr<std::atomic<bool>> stopping_;
};

/// `aicon host`: starts a host and runs it until SIGINT or SIGTERM. Returns
/// the exit code: 0 after a clean stop, 2 when it cannot start (the reason
/// is logged). Call from the main thread before any other thread exists (it
/// blocks the two signals for every thread it starts).
int run_host(const host_config& cfg, const std::map<std::string, role_factory>& roles);

} // namespace aicon
