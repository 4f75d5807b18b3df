// host.toml: what a host runs, where it listens, whom it admits.
#pragma once

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <tuple>
#include <string_view>
#include <vector>

#include <caf/expected.hpp>

#include "runtime/identity.hpp"
#include "runtime/limits.hpp"

namespace aicon {

/// "host:port" split and checked.
struct net_address {
  std::string host;
  uint16_t port = 0;

  std::string to_string() const;

  /// Parses "host:port"; errc::invalid_argument names what was wrong.
  static caf::expected<net_address> parse(std::string_view text);
};

/// A peer this host dials and keeps a link to.
struct peer_entry {
  net_address address;
  node_id node;
};

struct host_config {
  std::filesystem::path data_dir = "aicon-data";
  net_address listen{"127.0.0.1", 0}; ///< port 0: the OS picks one (logged)
  std::vector<std::string> roles{"directory", "echo"};
  std::string site = "default";
  std::vector<node_id> allow;       ///< NodeIds admitted at the link
  std::vector<peer_entry> connect;  ///< peers to dial (implicitly allowed)
  bool dev_open = false;            ///< unauthenticated TLS, anyone admitted
  std::filesystem::path genesis;    ///< [chain] genesis: the chain's genesis.toml
  /// [host] data_files: the only directories whose files a trainer or the
  /// rater reads when a request names a local TrainConfig.dataFile (none by
  /// default: datasets come from data nodes). A peer can never make a host
  /// read, or probe for, any other file.
  std::vector<std::filesystem::path> data_files;
  /// [host] trainer_clients: the clients (NodeIds) whose own signed
  /// TrainerJoins this host's trainers take without an allocator's lease:
  /// its operator's keys, for unpaid jobs on its own hosts. None by default:
  /// then every join must carry a lease from an allocator this host offers
  /// its trainers to.
  std::vector<node_id> trainer_clients;
  /// [host] model_owners: whose model assets (torch:<id>, put with `aicon
  /// model put`) this host's trainers and rater load. Empty: any owner's,
  /// within the model contract's limits.
  std::vector<node_id> model_owners;
  /// [host] torch_cpu_capability: "default", "avx2" or "avx512" pins the CPU
  /// kernels libtorch uses for TorchScript models (ATEN_CPU_CAPABILITY, set
  /// before the plug-in loads), so hosts that pin the same one compute the
  /// same bits and the rater keeps the exact check. Empty: auto-detected.
  std::string torch_cpu_capability;
  /// [[site_rtt]] a = "west", b = "east", ms = 40: round trips between sites
  /// the allocator scores trainers by (until they are measured).
  std::vector<std::tuple<std::string, std::string, double>> site_rtts;
  limits lim;

  /// allow ∪ connect nodes, without duplicates.
  std::vector<node_id> admitted() const;
};

/// Parses host.toml text. Relative paths are resolved against `base_dir`.
/// Errors (errc::config_invalid) name the source, key and line, e.g.
/// "host.toml:7: peers.allow[1]: NodeId 'xyz' must be 64 hex digits".
/// Unknown keys are errors, so a typo never silently falls back to a
/// default. `known_roles` lists the role names this binary can run.
caf::expected<host_config> parse_host_config(std::string_view text,
                                             std::string_view source_name,
                                             const std::filesystem::path& base_dir,
                                             const std::set<std::string>& known_roles);

/// Reads and parses a config file.
caf::expected<host_config> load_host_config(const std::filesystem::path& path,
                                            const std::set<std::string>& known_roles);

} // namespace aicon
