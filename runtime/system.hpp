// Setting up a CAF actor system the way every aicon process needs it: the io
// middleman and OpenSSL module, heartbeats, registered types, and CAF's
// remotely reachable services (SpawnServ, ConfigServ) taken out of reach.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <filesystem>
#include <string>
#include <tuple>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>

#include "runtime/identity.hpp"
#include "runtime/limits.hpp"
#include "runtime/tls.hpp"

namespace aicon {

struct system_options {
  limits lim;
  /// Certificate, key and allowlist for mutual TLS; nullopt = dev mode
  /// (CAF's anonymous TLS: encrypted, nobody authenticated).
  std::optional<tls_files> tls;
  /// Scheduler threads; 0 = CAF's default (one per core).
  size_t threads = 0;
};

/// Loads the modules, registers aicon's message types and error category and
/// sets heartbeats and the TLS files. Automatic connections stay off: they
/// would open a plain port.
void configure_system(caf::actor_system_config& cfg, const system_options& opts);

/// Removes CAF's SpawnServ and ConfigServ from the registry, so a peer's
/// remote spawn or config request finds no receiver. Call right after the
/// system starts, before any link exists.
void harden_system(caf::actor_system& sys);

/// Counters shared by the actors of one host. Lock-free.
struct host_counters {
  std::atomic<uint64_t> malformed_dropped{0}; ///< bad or unexpected messages
  std::atomic<uint64_t> bad_blocks{0};        ///< blocks from peers that failed verification in catch-up
  std::atomic<uint64_t> requests_served{0};   ///< requests routed by the gatekeeper
};

/// What every role gets when it is spawned.
struct role_context {
  std::shared_ptr<const identity> self;
  caf::actor directory;
  limits lim;
  std::shared_ptr<host_counters> counters;
  std::string site;
  /// The address the host listens on; roles that open sockets of their own
  /// (the trainer's ring streams) bind and advertise it.
  std::string bind_host = "127.0.0.1";
  /// Round trips between sites ([[site_rtt]] in host.toml), for the allocator.
  std::vector<std::tuple<std::string, std::string, double>> site_rtts;
  /// Set by the host (or client) right before it stops its actors: only then
  /// do actors reachable from peers accept an exit message (see guard.hpp).
  std::shared_ptr<std::atomic<bool>> stopping = std::make_shared<std::atomic<bool>>(false);
  /// The host's data dir (node key, store/) and its chain's genesis file
  /// (empty when the host runs no chain role).
  std::filesystem::path data_dir;
  std::filesystem::path genesis;
  /// [host] data_files: directories a TrainConfig.dataFile may name.
  std::vector<std::filesystem::path> data_files;
  /// [host] trainer_clients: clients whose own signed joins this host's
  /// trainers take without an allocator's lease.
  std::vector<node_id> trainer_clients;
  /// [host] model_owners: whose model assets this host loads (empty: anyone's).
  std::vector<node_id> model_owners;
};

/// This process's environment for an `aicon host` it starts itself (a
/// test, a benchmark), with AICON_PARENT_PID naming this process: such a
/// host stops when this process is gone (run_host).
std::vector<std::string> child_host_environment();

/// Whether `file` lies inside one of `dirs` (after resolving `..` and
/// links); the error names the file and the directories that are allowed.
caf::error check_data_file(const std::vector<std::filesystem::path>& dirs,
                           const std::string& file);

/// Spawns one role; the table of these is the plug point between runtime/
/// (mechanism) and actors/ (policy).
/// Errors name what the role lacks (e.g. a chain without a genesis file).
using role_factory =
  std::function<caf::expected<caf::actor>(caf::actor_system&, const role_context&)>;

} // namespace aicon
