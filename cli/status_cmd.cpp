#include "cli/status_cmd.hpp"

#include <chrono>
#include <cstdio>
#include <set>

#include <fmt/format.h>

#include "runtime/client.hpp"
#include "runtime/error.hpp"
#include "schemas/alloc.capnp.h"
#include "schemas/chain.capnp.h"
#include "schemas/data.capnp.h"
#include "schemas/host.capnp.h"
#include "schemas/script.capnp.h"

namespace aicon {

namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\';
    if (static_cast<unsigned char>(c) < 0x20)
      out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
    else
      out += c;
  }
  return out + "\"";
}

std::string json_list(capnp::List<capnp::Text>::Reader l) {
  std::string out = "[";
  for (unsigned i = 0; i < l.size(); ++i)
    out += (i ? ", " : "") + json_string(l[i].cStr());
  return out + "]";
}

std::string joined(capnp::List<capnp::Text>::Reader l) {
  std::string out;
  for (unsigned i = 0; i < l.size(); ++i) {
    if (i)
      out += ',';
    out += l[i].cStr();
  }
  return out;
}

} // namespace

int status_cmd(const status_options& o) {
  auto fail = [](const caf::error& err) {
    std::fprintf(stderr, "aicon status: %s\n", describe(err).c_str());
    return 1;
  };
  client::options co;
  co.data_dir = o.data_dir;
  co.dev_open = o.dev_open;
  co.threads = 2;
  auto c = client::start(co);
  if (!c)
    return fail(c.error());
  auto node = (*c)->connect(o.connect);
  if (!node)
    return fail(node.error());
  auto ask = [&](const std::string& role, envelope req) -> caf::expected<envelope> {
    auto dst = (*c)->lookup(role + "@" + node->hex());
    if (!dst)
      return dst.error();
    return (*c)->request(*dst, std::move(req), std::chrono::seconds(10));
  };
  auto t0 = std::chrono::steady_clock::now();
  auto st = ask("directory", make_envelope<schema::StatusRequest>([](auto) {}));
  double rtt_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (!st)
    return fail(st.error());
  opened<schema::StatusResponse> s{*st};
  if (!s)
    return fail(s.error());
  bool has_ledger = false, has_data = false, has_alloc = false, has_script = false;
  for (auto r : s->getRoles()) {
    has_ledger |= std::string{r.cStr()} == "ledger";
    has_data |= std::string{r.cStr()} == "data_node";
    has_alloc |= std::string{r.cStr()} == "allocator";
    has_script |= std::string{r.cStr()} == "script";
  }
  // Console sessions whose on(event, fn) handlers run here.
  struct session_row {
    std::string id, events;
    uint64_t handled, memory, idle_ms;
  };
  std::optional<std::vector<session_row>> scripts;
  if (has_script)
    if (auto r = ask("script", make_envelope<schema::ScriptList>([](auto) {}))) {
      opened<schema::ScriptSessions> l{*r};
      if (l) {
        scripts.emplace();
        for (auto e : l->getSessions())
          scripts->push_back({e.getId().cStr(), joined(e.getEvents()), e.getHandled(),
                              e.getMemoryBytes(), e.getIdleMs()});
      }
    }
  // The chain tip and the data stored, where the host runs those roles.
  std::optional<std::pair<uint64_t, std::string>> tip;
  if (has_ledger)
    if (auto r = ask("ledger", make_envelope<schema::LedgerQuery>([](auto q) { q.setTip(); }))) {
      opened<schema::TipInfo> t{*r};
      if (t)
        tip = {t->getHeight(), to_hex({t->getHash().begin(), t->getHash().size()})};
    }
  std::optional<std::tuple<uint64_t, uint64_t, uint64_t>> stored; // datasets, shares, bytes
  if (has_data)
    if (auto r = ask("data_node", make_envelope<schema::DataQuery>([](auto q) { q.setList(); }))) {
      opened<schema::DatasetList> l{*r};
      if (l) {
        uint64_t shares = 0, bytes = 0;
        for (auto m : l->getManifests())
          for (auto sh : m.getShards()) {
            ++shares;
            bytes += sh.getBytes();
          }
        stored = {l->getManifests().size(), shares, bytes};
      }
    }
  // The allocator's book: offers (trainer hosts, slots, price, site) and
  // leases (jobs holding trainers).
  struct offer_row {
    std::string trainer, device, site;
    uint32_t slots;
    uint64_t price;
    double speed;
  };
  struct lease_row {
    std::string job, trainer;
    uint32_t count, priority;
  };
  std::optional<std::pair<std::vector<offer_row>, std::vector<lease_row>>> book;
  if (has_alloc)
    if (auto r = ask("allocator", make_envelope<schema::AllocQuery>([](auto q) { q.setBook(); }))) {
      opened<schema::AllocBook> b{*r};
      if (b) {
        book.emplace();
        for (auto of : b->getOffers())
          book->first.push_back({to_hex({of.getTrainer().begin(), of.getTrainer().size()}),
                                 of.getDevice().cStr(), of.getSite().cStr(), of.getSlots(),
                                 of.getPrice(), of.getSamplesPerS()});
        for (auto l : b->getLeases())
          book->second.push_back({to_hex({l.getJob().begin(), l.getJob().size()}),
                                  to_hex({l.getLease().getTrainer().begin(),
                                          l.getLease().getTrainer().size()}),
                                  l.getLease().getCount(), l.getPriority()});
      }
    }
  auto id = to_hex({s->getNode().begin(), s->getNode().size()});
  if (o.json) {
    std::string peers;
    for (auto p : s->getPeers())
      peers += fmt::format("{}{{\"node\": {}, \"address\": {}, \"up\": {}, \"rtt_ms\": {:.3f}, \"site\": {}, \"roles\": {}}}",
                           peers.empty() ? "" : ", ",
                           json_string(to_hex({p.getNode().begin(), p.getNode().size()})),
                           json_string(p.getAddress().cStr()), p.getUp() ? "true" : "false",
                           p.getRttMs(),
                           json_string(p.getSite().cStr()), json_list(p.getRoles()));
    std::string members;
    for (auto m : s->getMembers())
      members += fmt::format("{}{{\"node\": {}, \"address\": {}, \"up\": {}, \"site\": {}, "
                             "\"roles\": {}, \"heartbeat\": {}, \"since_ms\": {}}}",
                             members.empty() ? "" : ", ",
                             json_string(to_hex({m.getNode().begin(), m.getNode().size()})),
                             json_string(m.getAddress().cStr()), m.getUp() ? "true" : "false",
                             json_string(m.getSite().cStr()), json_list(m.getRoles()),
                             m.getHeartbeat(), m.getSinceMs());
    std::printf("{\"node\": %s, \"address\": %s, \"site\": %s, \"rtt_ms\": %.3f, \"roles\": %s, "
                "\"peers\": [%s], \"members\": [%s], \"bad_blocks\": %llu, "
                "\"running_actors\": %u, \"requests_served\": %llu, "
                "\"malformed_dropped\": %llu",
                json_string(id).c_str(), json_string(o.connect).c_str(),
                json_string(s->getSite().cStr()).c_str(), rtt_ms, json_list(s->getRoles()).c_str(),
                peers.c_str(), members.c_str(),
                static_cast<unsigned long long>(s->getBadBlocks()), s->getRunningActors(),
                static_cast<unsigned long long>(s->getRequestsServed()),
                static_cast<unsigned long long>(s->getMalformedDropped()));
    if (tip)
      std::printf(", \"chain\": {\"height\": %llu, \"hash\": %s}",
                  static_cast<unsigned long long>(tip->first), json_string(tip->second).c_str());
    if (stored)
      std::printf(", \"data\": {\"datasets\": %llu, \"shares\": %llu, \"bytes\": %llu}",
                  static_cast<unsigned long long>(std::get<0>(*stored)),
                  static_cast<unsigned long long>(std::get<1>(*stored)),
                  static_cast<unsigned long long>(std::get<2>(*stored)));
    if (book) {
      std::string offers, leases;
      for (auto& of : book->first)
        offers += fmt::format("{}{{\"trainer\": {}, \"device\": {}, \"slots\": {}, \"price\": {}, "
                              "\"site\": {}, \"samples_per_s\": {:.0f}}}",
                              offers.empty() ? "" : ", ", json_string(of.trainer),
                              json_string(of.device), of.slots, of.price, json_string(of.site),
                              of.speed);
      for (auto& l : book->second)
        leases += fmt::format("{}{{\"job\": {}, \"trainer\": {}, \"count\": {}, \"priority\": {}}}",
                              leases.empty() ? "" : ", ", json_string(l.job), json_string(l.trainer),
                              l.count, l.priority);
      std::printf(", \"allocator\": {\"offers\": [%s], \"leases\": [%s]}", offers.c_str(),
                  leases.c_str());
    }
    if (scripts) {
      std::string rows;
      for (auto& r : *scripts)
        rows += fmt::format("{}{{\"session\": {}, \"events\": {}, \"handled\": {}, "
                            "\"memory_bytes\": {}, \"idle_ms\": {}}}",
                            rows.empty() ? "" : ", ", json_string(r.id), json_string(r.events),
                            r.handled, r.memory, r.idle_ms);
      std::printf(", \"script\": {\"sessions\": [%s]}", rows.c_str());
    }
    std::printf("}\n");
    return 0;
  }
  std::printf("host      %s  site %s  at %s  (round trip %.2f ms)\n", id.c_str(),
              s->getSite().cStr(), o.connect.c_str(), rtt_ms);
  std::printf("roles     %s\n", joined(s->getRoles()).c_str());
  if (tip)
    std::printf("chain     height %llu, tip %s\n", static_cast<unsigned long long>(tip->first),
                tip->second.substr(0, 16).c_str());
  if (stored)
    std::printf("data      %llu datasets, %llu shares, %llu bytes\n",
                static_cast<unsigned long long>(std::get<0>(*stored)),
                static_cast<unsigned long long>(std::get<1>(*stored)),
                static_cast<unsigned long long>(std::get<2>(*stored)));
  if (book) {
    std::printf("offers    %zu trainer hosts\n", book->first.size());
    for (auto& of : book->first)
      std::printf("  %s  %-10s %u slots  price %llu  site %-8s  %.0f samples/s\n",
                  of.trainer.substr(0, 8).c_str(), of.device.c_str(), of.slots,
                  static_cast<unsigned long long>(of.price), of.site.c_str(), of.speed);
    std::set<std::string> jobs;
    for (auto& l : book->second)
      jobs.insert(l.job);
    std::printf("jobs      %zu holding leases\n", jobs.size());
    for (auto& l : book->second)
      std::printf("  job %s  %u trainer(s) on %s  priority %u\n", l.job.substr(0, 16).c_str(),
                  l.count, l.trainer.substr(0, 8).c_str(), l.priority);
  }
  if (scripts) {
    std::printf("scripts   %zu console session(s) with handlers here\n", scripts->size());
    for (auto& r : *scripts)
      std::printf("  %s  on %-22s handled %llu  memory %llu KiB  polled %llu ms ago\n",
                  r.id.c_str(), r.events.c_str(), static_cast<unsigned long long>(r.handled),
                  static_cast<unsigned long long>(r.memory / 1024),
                  static_cast<unsigned long long>(r.idle_ms));
  }
  std::printf("counters  %u actors, %llu requests served, %llu malformed dropped, %llu bad "
              "blocks from peers\n",
              s->getRunningActors(), static_cast<unsigned long long>(s->getRequestsServed()),
              static_cast<unsigned long long>(s->getMalformedDropped()),
              static_cast<unsigned long long>(s->getBadBlocks()));
  std::printf("peers     %u\n", s->getPeers().size());
  for (auto p : s->getPeers())
    std::printf("  %s  %-4s  %-21s  rtt %6.2f ms  site %-8s  %s\n",
                to_hex({p.getNode().begin(), p.getNode().size()}).substr(0, 16).c_str(),
                p.getUp() ? "up" : "down", p.getAddress().cStr(), p.getRttMs(),
                p.getSite().cStr(), joined(p.getRoles()).c_str());
  unsigned up = 0;
  for (auto m : s->getMembers())
    up += m.getUp() ? 1 : 0;
  std::printf("members   %u up of %u known (gossip)\n", up, s->getMembers().size());
  for (auto m : s->getMembers())
    std::printf("  %s  %-4s  %-21s  site %-8s  heartbeat %llu, %llu ms ago  %s\n",
                to_hex({m.getNode().begin(), m.getNode().size()}).substr(0, 16).c_str(),
                m.getUp() ? "up" : "down", m.getAddress().cStr(), m.getSite().cStr(),
                static_cast<unsigned long long>(m.getHeartbeat()),
                static_cast<unsigned long long>(m.getSinceMs()), joined(m.getRoles()).c_str());
  return 0;
}

} // namespace aicon
