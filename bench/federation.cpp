#include "bench/federation.hpp"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <thread>

#include <fmt/format.h>
#include <sys/wait.h>

#include "actors/ledger/chain.hpp"
#include "actors/ledger/work.hpp"
#include "bench/host_process.hpp"
#include "runtime/client.hpp"
#include "runtime/error.hpp"
#include "runtime/identity.hpp"
#include "runtime/temp_dir.hpp"
#include "runtime/tls.hpp"
#include "schemas/chain.capnp.h"
#include "schemas/host.capnp.h"

namespace aicon::bench {

namespace {

using clock_type = std::chrono::steady_clock;
using ledger::chain;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

void progress(const char* what, uint64_t done, uint64_t total, clock_type::time_point t0) {
  auto secs = seconds_since(t0);
  auto rate = static_cast<double>(done) / std::max(secs, 1e-9);
  std::fprintf(stderr, "\r  %s %llu/%llu  %.0f/s  ETA %.0f s   ", what,
               static_cast<unsigned long long>(done), static_cast<unsigned long long>(total),
               rate, static_cast<double>(total - done) / std::max(rate, 1e-9));
  if (done >= total)
    std::fprintf(stderr, "\n");
}

int fail(const std::string& what, const caf::error& err) {
  std::fprintf(stderr, "\nbench federation: %s: %s\n", what.c_str(), describe(err).c_str());
  return 2;
}

struct node {
  std::filesystem::path dir;
  node_id id;
  uint16_t port = 0;
};

caf::expected<node> make_node(const std::filesystem::path& dir) {
  auto id = create_identity(dir);
  if (!id)
    return id.error();
  return node{dir, id->id(), loopback_port()};
}

caf::error trust_both(const node& a, const node& b) {
  if (auto r = trust_certificate(a.dir, b.dir / node_cert_file); !r)
    return r.error();
  if (auto r = trust_certificate(b.dir, a.dir / node_cert_file); !r)
    return r.error();
  return caf::none;
}

caf::expected<envelope> ask(client& c, const node& n, const std::string& role, envelope req) {
  auto dst = c.lookup(role + "@" + n.id.hex());
  if (!dst)
    return dst.error();
  return c.request(*dst, std::move(req), std::chrono::seconds(10));
}

caf::expected<uint64_t> height_of(client& c, const node& n) {
  auto r = ask(c, n, "ledger", make_envelope<schema::LedgerQuery>([](auto q) { q.setTip(); }));
  if (!r)
    return r.error();
  opened<schema::TipInfo> t{*r};
  if (!t)
    return t.error();
  return t->getHeight();
}

caf::error connect(client& c, const node& n) {
  caf::expected<node_id> linked = make_error(errc::peer_down, "not tried");
  for (int t = 0; t < 150 && !linked; ++t) {
    linked = c.connect(fmt::format("127.0.0.1:{}", n.port), n.id);
    if (!linked)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return linked ? caf::none : linked.error();
}

/// Members `n` shows up.
caf::expected<std::set<node_id>> members_up(client& c, const node& n) {
  auto r = ask(c, n, "directory", make_envelope<schema::StatusRequest>([](auto) {}));
  if (!r)
    return r.error();
  opened<schema::StatusResponse> s{*r};
  if (!s)
    return s.error();
  std::set<node_id> out;
  for (auto m : s->getMembers())
    if (m.getUp())
      if (auto id = node_id::from_bytes({m.getNode().begin(), m.getNode().size()}))
        out.insert(*id);
  return out;
}

} // namespace

void add_federation_flags(CLI::App& app, federation_options& opts) {
  app.add_option("--blocks", opts.blocks, "blocks a late host catches up (default 10000)")
    ->check(CLI::Range(1, 1000000));
  app.add_option("--hosts", opts.hosts, "host processes for gossip (default 16)")
    ->check(CLI::Range(3, 64));
  app.add_flag("--quick", opts.quick, "tiny run (ctest)");
}

int run_federation(const federation_options& o_in) {
  auto o = o_in;
  if (o.quick) {
    o.blocks = 200;
    o.hosts = 4;
  }
  auto tmp = temp_dir::create("aicon-bench-federation");
  if (!tmp)
    return fail("temp dir", tmp.error());
  auto root = tmp->path();

  // --- 1. Catch-up --------------------------------------------------------
  auto server = make_node(root / "server");
  auto late = make_node(root / "late");
  auto cli = make_node(root / "client");
  if (!server || !late || !cli)
    return fail("keys", make_error(errc::io_error, "cannot create identities"));
  for (auto* pair : {&*late, &*cli})
    if (auto err = trust_both(*server, *pair))
      return fail("certificates", err);
  if (auto err = trust_both(*late, *cli))
    return fail("certificates", err);
  auto signer = create_identity(root / "authority");
  if (!signer)
    return fail("keys", signer.error());
  ledger::genesis_config g;
  g.time_ms = 1'700'000'000'000;
  g.candidates = {{server->id, 1}};
  g.authorities = {signer->id()};
  g.committee_size = 1;
  g.initial_difficulty = 1;
  auto genesis = root / "genesis.toml";
  if (auto err = write_file_atomic(genesis, ledger::to_toml(g), 0644))
    return fail("genesis", err);
  auto server_key = load_identity(server->dir);
  if (!server_key)
    return fail("keys", server_key.error());
  // The server's chain, built in its own store before it starts.
  std::vector<envelope> blocks;
  {
    auto store = chain::open(server->dir, g);
    if (!store)
      return fail("server store", store.error());
    auto t0 = clock_type::now();
    for (int b = 0; b < o.blocks; ++b) {
      ledger::block_draft d;
      d.time_ms = g.time_ms + 2000 * static_cast<uint64_t>(b + 1);
      d.receipts = {ledger::make_work_receipt(
        *signer, *signer, ledger::work_facts{.seq = static_cast<uint64_t>(b + 1), .units = 1u << 30})};
      std::vector<std::pair<size_t, caf::error>> refused;
      auto blk = (*store)->propose(*server_key, d, &refused);
      if (!blk || !refused.empty())
        return fail(fmt::format("building block {}", b + 1),
                    blk ? make_error(errc::internal, "refused") : blk.error());
      auto voted = chain::add_vote(*blk, *server_key);
      if (auto err = (*store)->append(voted))
        return fail("building", err);
      blocks.push_back(std::move(voted));
      if ((b + 1) % 100 == 0 || b + 1 == o.blocks)
        progress("building the chain", static_cast<uint64_t>(b + 1),
                 static_cast<uint64_t>(o.blocks), t0);
    }
  }
  // Baseline: the same blocks appended to a fresh local store.
  double local_s = 0;
  {
    auto store = chain::open(root / "local", g);
    if (!store)
      return fail("local store", store.error());
    auto t0 = clock_type::now();
    for (size_t b = 0; b < blocks.size(); ++b) {
      if (auto err = (*store)->append(blocks[b]))
        return fail(fmt::format("verifying block {} locally", b + 1), err);
      if ((b + 1) % 100 == 0 || b + 1 == blocks.size())
        progress("verifying locally", b + 1, blocks.size(), t0);
    }
    local_s = seconds_since(t0);
  }
  // The late host: starts empty, peers with the server, catches up.
  auto host_cfg = [&](const node& n, const std::string& peers, const std::string& allow) {
    auto path = n.dir.parent_path() / (n.dir.filename().string() + ".toml");
    std::ofstream{path} << fmt::format(
      "[host]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n"
      "roles = [\"directory\", \"ledger\"]\n[peers]\nallow = [{}]\nconnect = [\n{}]\n"
      "[chain]\ngenesis = \"{}\"\n[limits]\nledger_sync_ms = 50\nsync_blocks_max = 100000\n",
      n.dir.string(), n.port, allow, peers, genesis.string());
    return path;
  };
  double catchup_s = 0;
  {
    host_process hs, hl;
    if (auto err = start_host(hs, host_cfg(*server, "",
                                           fmt::format("\"{}\", \"{}\"", late->id.hex(),
                                                       cli->id.hex())),
                              root / "server.log"))
      return fail("server host", err);
    client::options co;
    co.data_dir = cli->dir;
    co.threads = 1;
    auto c = client::start(co);
    if (!c)
      return fail("client", c.error());
    if (auto err = connect(**c, *server))
      return fail("linking to the server", err);
    auto t0 = clock_type::now();
    if (auto err = start_host(
          hl,
          host_cfg(*late,
                   fmt::format("  {{ address = \"127.0.0.1:{}\", node = \"{}\" }},\n",
                               server->port, server->id.hex()),
                   fmt::format("\"{}\"", cli->id.hex())),
          root / "late.log"))
      return fail("late host", err);
    if (auto err = connect(**c, *late))
      return fail("linking to the late host", err);
    uint64_t h = 0;
    auto deadline = clock_type::now() + std::chrono::minutes(10);
    while (h < blocks.size() && clock_type::now() < deadline) {
      auto got = height_of(**c, *late);
      if (got)
        h = *got;
      progress("late host catching up", h, blocks.size(), t0);
      if (h < blocks.size())
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    catchup_s = seconds_since(t0);
    if (h < blocks.size())
      return fail("catch-up", make_error(errc::timeout, fmt::format("stopped at {}", h)));
  }

  // --- 2. Gossip ----------------------------------------------------------
  // H hosts; each dials its next two on a ring and one across (a sparse
  // mesh: most hosts learn of a join only through gossip).
  const int n = o.hosts;
  std::vector<node> hosts;
  for (int i = 0; i < n; ++i) {
    auto x = make_node(root / fmt::format("g{}", i));
    if (!x)
      return fail("keys", x.error());
    hosts.push_back(*x);
  }
  auto gcli = make_node(root / "gclient");
  if (!gcli)
    return fail("keys", gcli.error());
  auto dials = [&](int i) {
    std::set<int> out{(i + 1) % n, (i + 2) % n, (i + n / 2) % n};
    out.erase(i);
    return out;
  };
  for (int i = 0; i < n; ++i) {
    if (auto err = trust_both(hosts[i], *gcli))
      return fail("certificates", err);
    for (int k : dials(i))
      if (auto err = trust_both(hosts[i], hosts[k]))
        return fail("certificates", err);
  }
  const uint32_t gossip_ms = 200, member_down_ms = 2000;
  std::vector<host_process> procs(n);
  auto start = [&](int i) -> caf::error {
    std::string connect, allow = fmt::format("\"{}\"", gcli->id.hex());
    for (int k : dials(i))
      connect += fmt::format("  {{ address = \"127.0.0.1:{}\", node = \"{}\" }},\n",
                             hosts[k].port, hosts[k].id.hex());
    for (int k = 0; k < n; ++k)
      if (k != i && dials(k).count(i))
        allow += fmt::format(", \"{}\"", hosts[k].id.hex());
    auto path = root / fmt::format("g{}.toml", i);
    std::ofstream{path} << fmt::format(
      "[host]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\n[peers]\nallow = [{}]\n"
      "connect = [\n{}]\n[limits]\ngossip_ms = {}\nmember_down_ms = {}\nreconnect_max_ms = 500\n",
      hosts[i].dir.string(), hosts[i].port, allow, connect, gossip_ms, member_down_ms);
    return start_host(procs[i], path, root / fmt::format("g{}.log", i));
  };
  // All but the last first; wait until they agree.
  for (int i = 0; i + 1 < n; ++i)
    if (auto err = start(i))
      return fail("gossip host", err);
  client::options gco;
  gco.data_dir = gcli->dir;
  gco.threads = 2;
  auto gc = client::start(gco);
  if (!gc)
    return fail("client", gc.error());
  for (int i = 0; i + 1 < n; ++i)
    if (auto err = connect(**gc, hosts[i]))
      return fail(fmt::format("linking to g{}", i), err);
  auto wait_all = [&](const std::set<node_id>& want, std::chrono::seconds limit,
                      double* direct_ms) -> caf::expected<double> {
    auto t0 = clock_type::now();
    while (clock_type::now() - t0 < limit) {
      bool all = true;
      auto round0 = clock_type::now();
      for (int i = 0; i + 1 < n && all; ++i) {
        auto up = members_up(**gc, hosts[i]);
        all = up && *up == want;
      }
      if (all) {
        if (direct_ms)
          *direct_ms = std::chrono::duration<double, std::milli>(clock_type::now() - round0).count();
        return std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return make_error(errc::timeout, "no convergence");
  };
  std::set<node_id> first;
  for (int i = 0; i + 1 < n; ++i)
    first.insert(hosts[i].id);
  if (auto r = wait_all(first, std::chrono::seconds(60), nullptr); !r)
    return fail(fmt::format("{} hosts agreeing on each other", n - 1), r.error());
  // The join.
  auto all = first;
  all.insert(hosts[n - 1].id);
  auto t_join0 = clock_type::now();
  if (auto err = start(n - 1))
    return fail("the joining host", err);
  double direct_ms = 0;
  auto join = wait_all(all, std::chrono::seconds(60), &direct_ms);
  if (!join)
    return fail("join convergence", join.error());
  double join_ms = std::chrono::duration<double, std::milli>(clock_type::now() - t_join0).count();
  // Its own start-up (process, key, TLS, first link) is part of that; the
  // first moment any host saw it is the reference for spreading.
  // The kill.
  ::kill(procs[n - 1].pid, SIGKILL);
  ::waitpid(procs[n - 1].pid, nullptr, 0);
  procs[n - 1].pid = -1;
  auto t_kill0 = clock_type::now();
  auto kill = wait_all(first, std::chrono::seconds(60), nullptr);
  if (!kill)
    return fail("kill convergence", kill.error());
  double kill_ms = std::chrono::duration<double, std::milli>(clock_type::now() - t_kill0).count();

  std::printf("bench federation (host processes on 127.0.0.1, 2 cores)\n\n");
  std::printf("%-44s %12s %12s %8s\n", "catch-up", "aicon s", "baseline s", "ratio");
  std::printf("%-44s %12.2f %12.2f %8.2f\n",
              fmt::format("late host, {} blocks over TLS", o.blocks).c_str(), catchup_s, local_s,
              catchup_s / std::max(local_s, 1e-9));
  std::printf("# baseline: the same blocks appended to a fresh local store (every block "
              "verified, one LMDB commit with fsync each): %.0f blocks/s; catch-up %.0f "
              "blocks/s\n\n",
              o.blocks / std::max(local_s, 1e-9), o.blocks / std::max(catchup_s, 1e-9));
  std::printf("%-44s %12s %12s %8s\n", "gossip", "aicon ms", "baseline ms", "ratio");
  std::printf("%-44s %12.0f %12.1f %8.1f\n",
              fmt::format("join seen by all {} hosts", n - 1).c_str(), join_ms, direct_ms,
              join_ms / std::max(direct_ms, 1e-9));
  std::printf("%-44s %12.0f %12.1f %8.1f\n",
              fmt::format("kill seen by all {} hosts", n - 1).c_str(), kill_ms, direct_ms,
              kill_ms / std::max(direct_ms, 1e-9));
  std::printf("# %d hosts, each dialing 3 (ring +1, +2 and one across); gossip_ms %u, "
              "member_down_ms %u (a member is down that long after its last heartbeat); join includes the new "
              "process's start-up. baseline: one client asking all %d hosts for their status "
              "in turn (a direct fan-out)\n",
              n, gossip_ms, member_down_ms, n - 1);
  return 0;
}

} // namespace aicon::bench
