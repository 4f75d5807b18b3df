// A small actor system of its own for processes that dial hosts without
// being one: `aicon ping`, the tests and the benchmarks. It uses the same
// directory, peer manager and envelopes as a host, so what it measures is
// the path every role uses.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/expected.hpp>

#include "runtime/envelope.hpp"
#include "runtime/identity.hpp"
#include "runtime/system.hpp"
#include "runtime/temp_dir.hpp"

namespace aicon {

class client {
public:
  struct options {
    /// Data dir with node.key, and peers/ with the certificates to trust.
    std::filesystem::path data_dir;
    /// Dial with unauthenticated TLS (only to hosts in dev mode).
    bool dev_open = false;
    /// Dial plain TCP (only the message benchmark's baseline).
    bool plain_tcp = false;
    limits lim;
    size_t threads = 0;
  };

  /// Starts the actor system. Errors: the node key cannot be loaded, TLS
  /// files cannot be written.
  static caf::expected<std::unique_ptr<client>> start(const options& opts);

  ~client();

  /// Dials `address` ("host:port"), checks the signed hello and returns the
  /// NodeId that answered (must equal `expected` if given).
  caf::expected<node_id> connect(const std::string& address,
                                 std::optional<node_id> expected = std::nullopt);

  /// Directory lookup: "role" (this process) or "role@<nodeid or prefix>".
  caf::expected<caf::actor> lookup(const std::string& name);

  /// Sends a request and waits for the answer; an ErrorReply comes back as
  /// its error. Never waits longer than `timeout`.
  caf::expected<envelope> request(const caf::actor& dst, envelope req,
                                  std::chrono::milliseconds timeout);

  /// For a watcher that outlives links (a job's status, logs, progress):
  /// asks `role@node` and, while the link to it is down or the host does
  /// not answer (restarting, a loaded machine), links again to `address`
  /// and asks again, for up to `patience` in all. `on_retry` hears each
  /// failure it rides out (to say so). Any other error comes back at once.
  caf::expected<envelope> watch(const std::string& address, const node_id& node,
                                const std::string& role, const envelope& req,
                                std::chrono::milliseconds timeout,
                                std::chrono::milliseconds patience,
                                const std::function<void(const caf::error&)>& on_retry = {});

  caf::actor_system& system() {
    return *sys_;
  }
  const identity& self() const {
    return *self_;
  }
  const caf::actor& directory() const {
    return directory_;
  }
  const limits& lim() const {
    return opts_.lim;
  }

private:
  client() = default;

  options opts_;
  std::optional<temp_dir> tls_dir_; // removed with the client
  std::shared_ptr<const identity> self_;
  std::unique_ptr<caf::actor_system_config> cfg_;
  std::unique_ptr<caf::actor_system> sys_;
  caf::actor directory_;
  caf::actor peers_;
  std::shared_ptr<std::atomic<bool>> stopping_;
};

} // namespace aicon
