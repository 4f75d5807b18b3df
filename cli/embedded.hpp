// An embedded cluster: real hosts in this process, each with its own key,
// actor system and LMDB store, linked by mutual TLS on 127.0.0.1, plus a
// client linked to all of them. What `aicon demo` runs on, so a newcomer
// needs no config.
//   c0: ledger, block_generator, data_node, allocator, rater (site west;
//       the genesis authority that countersigns work)
//   c1: ledger, block_generator, data_node (site west)
//   t0: ledger, trainer (site west), t1: ledger, trainer (site east);
//       `slots` trainers each, price 1 per trainer per step
// A payer wallet holds the genesis funds; trainer hosts hold a stake.
#pragma once

#include <array>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <caf/expected.hpp>

#include "runtime/client.hpp"
#include "runtime/host.hpp"
#include "runtime/identity.hpp"
#include "runtime/temp_dir.hpp"

namespace aicon {

struct embedded_options {
  uint32_t slots = 2;                 ///< trainers per trainer host
  uint64_t payer_funds = 1'000'000;
  uint64_t trainer_stake = 1'000;
};

class embedded_cluster {
public:
  static caf::expected<std::unique_ptr<embedded_cluster>> start(const embedded_options& o);
  ~embedded_cluster();

  /// Stops `ec`'s hosts, but never for longer than `limit`: a command that
  /// is done must exit. Past the limit (an actor system that does not wind
  /// down; rare, under load) the process logs it, removes the cluster's
  /// directory and leaves with `exit_code` at once.
  static void stop_within(std::unique_ptr<embedded_cluster>& ec, std::chrono::seconds limit,
                          int exit_code);

  client& c() {
    return *client_;
  }
  const identity& payer() const {
    return payer_;
  }
  const std::vector<node_id>& ids() const {
    return ids_;
  }
  const std::vector<std::string>& names() const {
    return names_;
  }
  node_id chain_host() const {
    return ids_[0];
  }
  /// The chain's id: what every signed transaction and rate request names.
  const std::array<uint8_t, 32>& chain_id() const {
    return chain_id_;
  }
  /// "127.0.0.1:port" of each host.
  const std::vector<std::string>& addresses() const {
    return addresses_;
  }

  /// Submits the payer's next signed transaction to c0's block generator
  /// and waits (bounded) until both chain hosts applied it (in a block
  /// with work, or an idle one when no one trains).
  caf::error payer_tx(const std::function<envelope(uint64_t nonce)>& make);
  /// The same for any wallet this process holds the key of.
  caf::error tx(const identity& who, const std::function<envelope(uint64_t nonce)>& make);
  /// Two more wallets: the owners of the demo's dataset and model assets.
  const identity& data_owner() const {
    return data_owner_;
  }
  const identity& model_owner() const {
    return model_owner_;
  }

  /// (balance, nonce, stake) as host `host` (default c1) sees the chain.
  caf::expected<std::tuple<uint64_t, uint64_t, uint64_t>> account(const node_id& who,
                                                                  size_t host = 1);
  uint64_t height();

  caf::expected<envelope> ask(size_t host, const std::string& role, envelope req,
                              std::chrono::milliseconds timeout);
  /// ask() for a watcher: a link that drops (a loaded machine) is linked
  /// again and the question asked again, for up to a minute.
  caf::expected<envelope> watch(size_t host, const std::string& role, const envelope& req,
                                std::chrono::milliseconds timeout);

private:
  embedded_cluster() = default;
  std::optional<temp_dir> root_;
  std::vector<std::string> names_{"c0", "c1", "t0", "t1"};
  std::vector<node_id> ids_;
  std::vector<std::string> addresses_;
  std::vector<std::unique_ptr<host>> hosts_;
  std::unique_ptr<client> client_;
  identity payer_ = identity::generate();
  identity data_owner_ = identity::generate();
  identity model_owner_ = identity::generate();
  std::map<node_id, uint64_t> nonces_;
  std::array<uint8_t, 32> chain_id_{};
};

} // namespace aicon
