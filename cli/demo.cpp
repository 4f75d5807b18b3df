#include "cli/demo.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/roles.hpp"
#include "runtime/atoms.hpp"
#include "runtime/directory.hpp"
#include "runtime/temp_dir.hpp"
#include "runtime/envelope.hpp"
#include "runtime/error.hpp"
#include "runtime/host.hpp"
#include "runtime/log.hpp"
#include "runtime/tls.hpp"
#include "schemas/echo.capnp.h"
#include "schemas/host.capnp.h"

namespace aicon {

namespace {

using namespace std::chrono_literals;

caf::expected<caf::actor> lookup(host& h, const std::string& name) {
  return lookup_blocking(h.system(), h.directory(), name, 5s);
}

struct rtt_stats {
  double median_ms = 0;
  double p99_ms = 0;
  int wrong = 0;
  std::string error;
};

rtt_stats measure(host& from, const caf::actor& target, int rounds) {
  rtt_stats out;
  std::vector<double> rtts;
  caf::scoped_actor self{from.system()};
  std::vector<uint8_t> payload(64);
  for (size_t i = 0; i < payload.size(); ++i)
    payload[i] = static_cast<uint8_t>(i);
  for (int i = 0; i < rounds; ++i) {
    auto req = make_envelope<schema::EchoRequest>([&](schema::EchoRequest::Builder b) {
      b.setSeq(static_cast<uint64_t>(i));
      b.setPayload(kj::arrayPtr(payload.data(), payload.size()));
    });
    auto t0 = std::chrono::steady_clock::now();
    self->request(target, 5s, std::move(req))
      .receive(
        [&](envelope& reply) {
          rtts.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
              .count());
          opened<schema::EchoResponse> r{reply};
          if (!r || r->getSeq() != static_cast<uint64_t>(i) || r->getPayload().size() != 64)
            ++out.wrong;
        },
        [&](caf::error& e) { out.error = describe(e); });
    if (!out.error.empty())
      return out;
  }
  std::sort(rtts.begin(), rtts.end());
  out.median_ms = rtts[rtts.size() / 2];
  out.p99_ms = rtts[std::min(rtts.size() - 1, rtts.size() * 99 / 100)];
  return out;
}

} // namespace

int run_demo(const demo_options& opts) {
  int n = std::clamp(opts.hosts, 2, 8);
  set_log_level(log_level::warning);
  auto tmp = temp_dir::create("aicon-demo");
  if (!tmp) {
    std::fprintf(stderr, "demo: %s\n", describe(tmp.error()).c_str());
    return 2;
  }
  const auto& root = tmp->path();
  std::printf("aicon demo: %d hosts in one process, each with its own ed25519 key, linked by "
              "mutual TLS on 127.0.0.1\n", n);
  std::vector<node_id> ids;
  for (int i = 0; i < n; ++i) {
    auto id = create_identity(root / fmt::format("host{}", i));
    if (!id) {
      std::fprintf(stderr, "demo: %s\n", describe(id.error()).c_str());
      return 2;
    }
    ids.push_back(id->id());
  }
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j)
      if (i != j)
        if (auto t = trust_certificate(root / fmt::format("host{}", i),
                                       root / fmt::format("host{}", j) / node_cert_file);
            !t) {
          std::fprintf(stderr, "demo: %s\n", describe(t.error()).c_str());
          return 2;
        }
  // Host i dials every host before it; half the hosts play site "east".
  std::vector<std::unique_ptr<host>> hosts;
  for (int i = 0; i < n; ++i) {
    host_config cfg;
    cfg.data_dir = root / fmt::format("host{}", i);
    cfg.site = i < (n + 1) / 2 ? "west" : "east";
    for (int j = 0; j < n; ++j)
      if (j > i)
        cfg.allow.push_back(ids[j]);
    for (int j = 0; j < i; ++j)
      cfg.connect.push_back(peer_entry{net_address{"127.0.0.1", hosts[j]->port()}, ids[j]});
    auto h = host::start(cfg, role_table());
    if (!h) {
      std::fprintf(stderr, "demo: %s\n", describe(h.error()).c_str());
      return 2;
    }
    std::printf("  host%d %s  site=%-4s  port %u\n", i, ids[i].hex().c_str(), cfg.site.c_str(),
                (*h)->port());
    hosts.push_back(std::move(*h));
  }
  // Links form in the background; wait (bounded) for the last host's.
  auto deadline = std::chrono::steady_clock::now() + 15s;
  for (int j = 0; j + 1 < n; ++j)
    while (!lookup(*hosts[n - 1], "echo@" + ids[j].hex())) {
      if (std::chrono::steady_clock::now() > deadline) {
        std::fprintf(stderr, "demo: links did not come up within 15 s\n");
        return 1;
      }
      std::this_thread::sleep_for(20ms);
    }
  std::printf("\nEcho round trips from host%d (64 B payload, %d rounds each), through the "
              "directory: the same call whether the role is local or remote\n",
              n - 1, opts.rounds);
  std::printf("  %-28s %10s %10s %7s\n", "target", "median ms", "p99 ms", "#wrong");
  int failures = 0;
  for (int j = n - 1; j >= 0; --j) {
    auto name = j == n - 1 ? std::string{"echo"} : "echo@" + ids[j].short_hex();
    auto target = lookup(*hosts[n - 1], name);
    if (!target) {
      std::printf("  %-28s %s\n", name.c_str(), describe(target.error()).c_str());
      ++failures;
      continue;
    }
    auto st = measure(*hosts[n - 1], *target, opts.rounds);
    if (!st.error.empty()) {
      std::printf("  %-28s %s\n", name.c_str(), st.error.c_str());
      ++failures;
      continue;
    }
    std::printf("  %-28s %10.3f %10.3f %7d\n",
                (name + (j == n - 1 ? " (local)" : " (host" + std::to_string(j) + ")")).c_str(),
                st.median_ms, st.p99_ms, st.wrong);
    failures += st.wrong;
  }
  // A stranger's view: a NodeId nobody allowed.
  auto stranger = aicon::identity::generate().id();
  auto refused = lookup(*hosts[0], "echo@" + stranger.hex());
  std::printf("\nLookup of a NodeId nobody allowed: %s\n",
              refused ? "resolved (unexpected!)" : describe(refused.error()).c_str());
  std::printf("\nThis demo covers the foundation (hosts, admission, messages). Training, "
              "verification and settlement join it as their roles land.\n");
  set_log_level(log_level::error); // peers going down at shutdown is expected here
  hosts.clear();
  return failures == 0 && !refused ? 0 : 1;
}

} // namespace aicon
