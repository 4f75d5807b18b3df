#include "cli/embedded.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <mutex>
#include <fstream>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <sodium.h>

#include "actors/ledger/chain.hpp"
#include "actors/ledger/work.hpp"
#include "actors/roles.hpp"
#include "runtime/ports.hpp"
#include "runtime/directory.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "runtime/tls.hpp"
#include "schemas/chain.capnp.h"

namespace aicon {

namespace {

using namespace std::chrono_literals;

uint64_t now_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
}

} // namespace

embedded_cluster::~embedded_cluster() {
  client_.reset();
  // Trainer hosts first, chain hosts last.
  while (!hosts_.empty())
    hosts_.pop_back();
}

void embedded_cluster::stop_within(std::unique_ptr<embedded_cluster>& ec,
                                   std::chrono::seconds limit, int exit_code) {
  if (!ec)
    return;
  // The hosts stop on this thread (CAF's systems are torn down where they
  // are used); a watchdog thread ends the process if that takes too long.
  auto dir = ec->root_ ? ec->root_->path() : std::filesystem::path{};
  auto state = std::make_shared<std::pair<std::mutex, std::condition_variable>>();
  auto done = std::make_shared<bool>(false);
  std::thread watchdog([state, done, limit, dir, exit_code] {
    std::unique_lock<std::mutex> lk{state->first};
    if (state->second.wait_for(lk, limit, [&] { return *done; }))
      return;
    log_error("the embedded cluster did not stop within {} s; leaving without waiting",
              limit.count());
    std::fflush(stdout);
    std::fflush(stderr);
    std::error_code ignored;
    if (!dir.empty())
      std::filesystem::remove_all(dir, ignored);
    std::_Exit(exit_code);
  });
  ec.reset();
  {
    std::lock_guard<std::mutex> lk{state->first};
    *done = true;
  }
  state->second.notify_all();
  watchdog.join();
}

caf::expected<std::unique_ptr<embedded_cluster>> embedded_cluster::start(const embedded_options& o) {
  std::unique_ptr<embedded_cluster> ec{new embedded_cluster};
  auto tmp = temp_dir::create("aicon-embedded");
  if (!tmp)
    return tmp.error();
  ec->root_.emplace(std::move(*tmp));
  auto& root = ec->root_->path();
  auto& names = ec->names_;
  std::vector<std::string> dirs;
  for (auto& n : names)
    dirs.push_back((root / n).string());
  dirs.push_back((root / "client").string());
  for (auto& d : dirs) {
    auto id = create_identity(d);
    if (!id)
      return id.error();
    ec->ids_.push_back(id->id());
  }
  node_id client_id = ec->ids_.back();
  ec->ids_.pop_back();
  for (size_t i = 0; i < dirs.size(); ++i)
    for (size_t j = 0; j < dirs.size(); ++j)
      if (i != j)
        if (auto t = trust_certificate(dirs[i], std::filesystem::path{dirs[j]} / node_cert_file); !t)
          return t.error();
  ledger::genesis_config g;
  g.time_ms = now_ms() - 10'000;
  g.candidates = {{ec->ids_[0], 1}, {ec->ids_[1], 1}};
  g.committee_size = 2;
  g.initial_difficulty = 100;
  g.difficulty.target_interval_ms = 1000;
  g.difficulty.window_blocks = 5;
  g.authorities = {ec->ids_[0]};
  g.allocations = {{ec->payer_.id(), o.payer_funds, 0},
                   {ec->ids_[2], 0, o.trainer_stake},
                   {ec->ids_[3], 0, o.trainer_stake}};
  ec->chain_id_ = ledger::chain_id(g);
  auto genesis = root / "genesis.toml";
  {
    std::ofstream f{genesis};
    f << ledger::to_toml(g);
    if (!f.flush())
      return make_error(errc::io_error, "cannot write " + genesis.string());
  }
  std::vector<uint16_t> ports;
  for (size_t i = 0; i < names.size(); ++i) {
    ports.push_back(pick_loopback_port());
    ec->addresses_.push_back(fmt::format("127.0.0.1:{}", ports.back()));
  }
  const std::vector<std::vector<std::string>> roles{
    {"directory", "ledger", "block_generator", "data_node", "allocator", "rater", "script"},
    {"directory", "ledger", "block_generator", "data_node", "job"},
    {"directory", "ledger", "trainer"},
    {"directory", "ledger", "trainer"}};
  for (size_t i = 0; i < names.size(); ++i) {
    host_config cfg;
    cfg.data_dir = dirs[i];
    cfg.listen = net_address{"127.0.0.1", ports[i]};
    cfg.roles = roles[i];
    cfg.site = i == 3 ? "east" : "west";
    cfg.genesis = genesis;
    // In-process hosts of the user's own playground: its jobs name the
    // user's files (the demo's data set, a script's data = path).
    cfg.data_files = {"/"};
    cfg.allow.push_back(client_id);
    // The user is the operator here: its jobs without a budget (no
    // allocator, so no lease) may still use the trainers.
    cfg.trainer_clients.push_back(client_id);
    cfg.trainer_clients.push_back(ec->ids_[1]); // the job host, for unpaid jobs
    for (size_t k = 0; k < names.size(); ++k)
      if (k != i)
        cfg.connect.push_back(peer_entry{net_address{"127.0.0.1", ports[k]}, ec->ids_[k]});
    cfg.site_rtts = {{"west", "east", 40.0}};
    cfg.lim.block_takeover_ms = 1000;
    cfg.lim.vote_wait_ms = 500;
    cfg.lim.ledger_sync_ms = 300;
    cfg.lim.offer_heartbeat_ms = 300;
    cfg.lim.trainer_slots = o.slots;
    cfg.lim.trainer_price = 1;
    auto h = host::start(cfg, role_table());
    if (!h)
      return make_error(code_of(h.error()),
                        fmt::format("host {}: {}", names[i], what_of(h.error())));
    ec->hosts_.push_back(std::move(*h));
  }
  client::options copts;
  copts.data_dir = dirs.back();
  copts.threads = 2;
  auto cl = client::start(copts);
  if (!cl)
    return cl.error();
  ec->client_ = std::move(*cl);
  for (size_t i = 0; i < names.size(); ++i) {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    caf::expected<node_id> linked = make_error(errc::internal, "not tried");
    while (!linked && std::chrono::steady_clock::now() < deadline) {
      linked = ec->client_->connect(fmt::format("127.0.0.1:{}", ports[i]), ec->ids_[i]);
      if (!linked)
        std::this_thread::sleep_for(100ms);
    }
    if (!linked)
      return make_error(code_of(linked.error()),
                        fmt::format("linking to {}: {}", names[i], what_of(linked.error())));
  }
  // Every host must see every other before jobs form rings across them.
  auto deadline = std::chrono::steady_clock::now() + 30s;
  for (size_t i = 0; i < names.size(); ++i)
    for (size_t k = 0; k < names.size(); ++k) {
      if (i == k)
        continue;
      while (!lookup_blocking(ec->hosts_[i]->system(), ec->hosts_[i]->directory(),
                              "ledger@" + ec->ids_[k].hex(), 1s)) {
        if (std::chrono::steady_clock::now() > deadline)
          return make_error(errc::timeout,
                            fmt::format("{} never linked to {}", names[i], names[k]));
        std::this_thread::sleep_for(50ms);
      }
    }
  return ec;
}

caf::expected<envelope> embedded_cluster::ask(size_t host, const std::string& role, envelope req,
                                              std::chrono::milliseconds timeout) {
  auto dst = client_->lookup(role + "@" + ids_[host].hex());
  if (!dst)
    return dst.error();
  return client_->request(*dst, std::move(req), timeout);
}

caf::expected<envelope> embedded_cluster::watch(size_t host, const std::string& role,
                                                const envelope& req,
                                                std::chrono::milliseconds timeout) {
  return client_->watch(addresses_[host], ids_[host], role, req, timeout, std::chrono::minutes(1),
                        [&](const caf::error& e) {
                          log_warning("{} does not answer ({}): linking again", names_[host],
                                      describe(e));
                        });
}

caf::expected<std::tuple<uint64_t, uint64_t, uint64_t>>
embedded_cluster::account(const node_id& who, size_t host) {
  auto reply = ask(host, "ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                     q.setAccount(kj::arrayPtr(who.bytes.data(), 32));
                   }),
                   10s);
  if (!reply)
    return reply.error();
  opened<schema::AccountInfo> a{*reply};
  if (!a)
    return a.error();
  return std::make_tuple(a->getBalance(), a->getNonce(), a->getStake());
}

uint64_t embedded_cluster::height() {
  auto r = ask(1, "ledger", make_envelope<schema::LedgerQuery>([](auto q) { q.setTip(); }), 10s);
  if (!r)
    return 0;
  opened<schema::TipInfo> t{*r};
  return t ? t->getHeight() : 0;
}

caf::error embedded_cluster::payer_tx(const std::function<envelope(uint64_t)>& make) {
  return tx(payer_, make);
}

caf::error embedded_cluster::tx(const identity& who,
                                const std::function<envelope(uint64_t)>& make) {
  auto nonce = ++nonces_[who.id()];
  auto ack = ask(0, "block_generator", make(nonce), 10s);
  if (!ack)
    return ack.error();
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    // Final on both chain hosts: the allocator (host 0) must see an escrow
    // before the job asks it for trainers.
    auto a = account(who.id(), 0);
    auto b = account(who.id(), 1);
    if (a && b && std::get<1>(*a) >= nonce && std::get<1>(*b) >= nonce)
      return caf::none;
    std::this_thread::sleep_for(100ms);
  }
  return make_error(errc::timeout, fmt::format("transaction {} of {} was not final within 60 s",
                                               nonce, who.id().short_hex()));
}

} // namespace aicon
