#include "cli/peer_cmd.hpp"

#include <algorithm>
#include <cstdio>
#include <map>

#include <fmt/format.h>

#include "actors/roles.hpp"
#include "runtime/client.hpp"
#include "runtime/config.hpp"
#include "runtime/error.hpp"
#include "runtime/identity.hpp"
#include "runtime/peers_file.hpp"
#include "runtime/tls.hpp"
#include "schemas/host.capnp.h"

namespace aicon {

namespace {

int fail(const char* what, const caf::error& err) {
  std::fprintf(stderr, "aicon peer %s: %s\n", what, describe(err).c_str());
  return 1;
}

/// The host's data dir and configured peers (none without --config).
caf::expected<host_config> host_of(const peer_options& o) {
  if (o.config.empty()) {
    host_config cfg;
    cfg.data_dir = o.data_dir;
    return cfg;
  }
  return load_host_config(o.config, known_roles());
}

} // namespace

int peer_add_cmd(const peer_options& o) {
  auto cfg = host_of(o);
  if (!cfg)
    return fail("add", cfg.error());
  auto addr = net_address::parse(o.address);
  if (!addr)
    return fail("add", make_error(errc::invalid_argument,
                                  fmt::format("address '{}': {}", o.address,
                                              describe(addr.error()))));
  auto node = node_id::from_hex(o.node);
  if (!node)
    return fail("add", make_error(errc::invalid_argument,
                                  fmt::format("NodeId '{}': {}", o.node, describe(node.error()))));
  if (auto self = load_identity(cfg->data_dir); self && self->id() == *node)
    return fail("add", make_error(errc::invalid_argument, "that is this host's own NodeId"));
  // Its certificate: given, already trusted, or taken from its handshake
  // and checked against the NodeId.
  auto crt = cfg->data_dir / peer_cert_dir / (node->hex() + ".crt");
  std::error_code ec;
  if (!o.cert.empty()) {
    auto id = trust_certificate(cfg->data_dir, o.cert);
    if (!id)
      return fail("add", id.error());
    if (*id != *node)
      return fail("add", make_error(errc::forbidden,
                                    fmt::format("{} is the certificate of {}, not {}", o.cert,
                                                id->hex(), node->hex())));
  } else if (!std::filesystem::exists(crt, ec)) {
    auto pem = fetch_peer_certificate(*addr, *node, std::chrono::seconds(5));
    if (!pem)
      return fail("add", pem.error());
    std::filesystem::create_directories(crt.parent_path(), ec);
    if (auto err = write_file_atomic(crt, *pem, 0644))
      return fail("add", err);
    std::printf("fetched the certificate of %s from %s\n", node->short_hex().c_str(),
                addr->to_string().c_str());
  }
  auto p = load_runtime_peers(cfg->data_dir);
  if (!p)
    return fail("add", p.error());
  add_peer(*p, {*addr, *node});
  if (auto err = save_runtime_peers(cfg->data_dir, *p))
    return fail("add", err);
  std::printf("peer %s at %s added to %s; a running host admits and dials it within a second\n",
              node->hex().c_str(), addr->to_string().c_str(),
              (cfg->data_dir / peers_file_name).c_str());
  return 0;
}

int peer_rm_cmd(const peer_options& o) {
  auto cfg = host_of(o);
  if (!cfg)
    return fail("rm", cfg.error());
  auto node = node_id::from_hex(o.node);
  if (!node)
    return fail("rm", make_error(errc::invalid_argument,
                                 fmt::format("NodeId '{}': {}", o.node, describe(node.error()))));
  auto p = load_runtime_peers(cfg->data_dir);
  if (!p)
    return fail("rm", p.error());
  if (std::find(p->removed.begin(), p->removed.end(), *node) != p->removed.end()) {
    std::printf("peer %s was already removed in %s; nothing changed\n", node->hex().c_str(),
                (cfg->data_dir / peers_file_name).c_str());
    return 0;
  }
  // Known: added at run time, admitted by host.toml, or trusted (a
  // certificate in DATA_DIR/peers, as every admitted peer has).
  auto admitted = cfg->admitted(), trusted = trusted_peers(cfg->data_dir);
  bool known = std::any_of(p->added.begin(), p->added.end(),
                           [&](const peer_entry& e) { return e.node == *node; })
               || std::find(admitted.begin(), admitted.end(), *node) != admitted.end()
               || std::find(trusted.begin(), trusted.end(), *node) != trusted.end();
  if (!known)
    return fail("rm", make_error(errc::not_found,
                                 fmt::format("{} is not a peer of this host (not added with "
                                             "`aicon peer add`, not in host.toml's [peers], no "
                                             "certificate in {}); nothing removed",
                                             node->hex(), (cfg->data_dir / "peers").string())));
  remove_peer(*p, *node);
  if (auto err = save_runtime_peers(cfg->data_dir, *p))
    return fail("rm", err);
  std::printf("peer %s removed in %s; a running host closes its link within a second\n",
              node->hex().c_str(), (cfg->data_dir / peers_file_name).c_str());
  return 0;
}

int peer_ls_cmd(const peer_options& o) {
  auto cfg = host_of(o);
  if (!cfg)
    return fail("ls", cfg.error());
  auto p = load_runtime_peers(cfg->data_dir);
  if (!p)
    return fail("ls", p.error());
  // Live state from the running host, when asked.
  std::map<node_id, std::tuple<bool, double, std::string>> live; // up, rtt, site
  if (!o.connect.empty()) {
    client::options co;
    co.data_dir = cfg->data_dir;
    co.threads = 1;
    auto c = client::start(co);
    if (!c)
      return fail("ls", c.error());
    auto host = (*c)->connect(o.connect);
    if (!host)
      return fail("ls", host.error());
    auto dir = (*c)->lookup("directory@" + host->hex());
    if (!dir)
      return fail("ls", dir.error());
    auto st = (*c)->request(*dir, make_envelope<schema::StatusRequest>([](auto) {}),
                            std::chrono::seconds(5));
    if (!st)
      return fail("ls", st.error());
    opened<schema::StatusResponse> s{*st};
    if (!s)
      return fail("ls", s.error());
    for (auto x : s->getPeers())
      if (auto id = node_id::from_bytes({x.getNode().begin(), x.getNode().size()}))
        live[*id] = {x.getUp(), x.getRttMs(), x.getSite().cStr()};
  }
  auto dialed = effective_connect(*cfg, *p);
  auto admitted = effective_admitted(*cfg, *p);
  std::printf("%-64s  %-21s  %-10s  %s\n", "node", "address", "from", o.connect.empty() ? "" : "link");
  for (auto& id : admitted) {
    std::string address = "(admitted only)";
    for (auto& e : dialed)
      if (e.node == id)
        address = e.address.to_string();
    bool added = false;
    for (auto& e : p->added)
      added = added || e.node == id;
    std::string state;
    if (!o.connect.empty()) {
      auto l = live.find(id);
      state = l == live.end() ? "not linked"
                              : fmt::format("{} rtt {:.2f} ms site {}",
                                            std::get<0>(l->second) ? "up" : "down",
                                            std::get<1>(l->second), std::get<2>(l->second));
    }
    std::printf("%s  %-21s  %-10s  %s\n", id.hex().c_str(), address.c_str(),
                added ? "peer add" : "host.toml", state.c_str());
  }
  for (auto& id : p->removed)
    std::printf("%s  %-21s  %-10s  %s\n", id.hex().c_str(), "-", "removed", "");
  return 0;
}

} // namespace aicon
