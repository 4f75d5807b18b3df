#include "runtime/config.hpp"

#include <charconv>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "runtime/error.hpp"

namespace aicon {

std::string net_address::to_string() const {
  return fmt::format("{}:{}", host, port);
}

caf::expected<net_address> net_address::parse(std::string_view text) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0)
    return make_error(errc::invalid_argument,
                      fmt::format("address '{}' must be host:port", text));
  auto port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [ptr, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || port > 65535)
    return make_error(errc::invalid_argument,
                      fmt::format("address '{}' has an invalid port '{}'", text, port_text));
  return net_address{std::string{text.substr(0, colon)}, static_cast<uint16_t>(port)};
}

std::vector<node_id> host_config::admitted() const {
  std::vector<node_id> out = allow;
  for (auto& p : connect)
    if (std::find(out.begin(), out.end(), p.node) == out.end())
      out.push_back(p.node);
  return out;
}

namespace {

class parser {
public:
  parser(std::string_view source, const std::filesystem::path& base,
         const std::set<std::string>& known_roles)
    : source_(source), base_(base), known_roles_(known_roles) {
  }

  caf::error fail(const toml::node* node, const std::string& key, const std::string& what) {
    auto line = node ? node->source().begin.line : 0;
    return make_error(errc::config_invalid,
                      fmt::format("{}:{}: {}: {}", source_, line, key, what));
  }

  template <class T>
  caf::error get(const toml::table& tbl, const std::string& prefix, const char* key, T& out) {
    auto node = tbl.get(key);
    if (!node)
      return caf::none;
    auto full = prefix.empty() ? std::string{key} : prefix + "." + key;
    if constexpr (std::is_same_v<T, std::string>) {
      auto v = node->value<std::string>();
      if (!node->is_string() || !v)
        return fail(node, full, "expected a string");
      out = *v;
    } else if constexpr (std::is_same_v<T, bool>) {
      if (!node->is_boolean())
        return fail(node, full, "expected true or false");
      out = *node->value<bool>();
    } else {
      if (!node->is_integer())
        return fail(node, full, "expected an integer");
      auto v = *node->value<int64_t>();
      if (v < 0 || static_cast<uint64_t>(v) > std::numeric_limits<T>::max())
        return fail(node, full,
                    fmt::format("{} is out of range 0..{}", v, std::numeric_limits<T>::max()));
      out = static_cast<T>(v);
    }
    return caf::none;
  }

  /// tbl[key] as an array of NodeIds (64 hex digits each), appended to `out`.
  caf::error node_list(const toml::table& tbl, const char* prefix, const char* key,
                       std::vector<node_id>& out) {
    auto node = tbl.get(key);
    if (!node)
      return caf::none;
    auto full = fmt::format("{}.{}", prefix, key);
    auto arr = node->as_array();
    if (!arr)
      return fail(node, full, "expected an array of NodeIds");
    for (size_t i = 0; i < arr->size(); ++i) {
      auto& item = (*arr)[i];
      auto item_key = fmt::format("{}[{}]", full, i);
      auto text = item.value<std::string>();
      if (!item.is_string() || !text)
        return fail(&item, item_key, "expected a NodeId (64 hex digits)");
      auto id = node_id::from_hex(*text);
      if (!id)
        return fail(&item, item_key, what_of(id.error()));
      out.push_back(*id);
    }
    return caf::none;
  }

  caf::error check_keys(const toml::table& tbl, const std::string& prefix,
                        std::initializer_list<const char*> allowed) {
    for (auto& [k, v] : tbl) {
      bool known = false;
      for (auto a : allowed)
        if (k.str() == a)
          known = true;
      if (!known) {
        auto full = prefix.empty() ? std::string{k.str()} : prefix + "." + std::string{k.str()};
        std::string list;
        for (auto a : allowed)
          list += list.empty() ? a : std::string{", "} + a;
        return fail(&v, full, fmt::format("unknown key (known here: {})", list));
      }
    }
    return caf::none;
  }

  caf::expected<host_config> run(const toml::table& root) {
    host_config cfg;
    if (auto err = check_keys(root, "", {"host", "peers", "limits", "chain", "site_rtt", "faults"}))
      return err;
    if (auto rtts = root.get("site_rtt")) {
      auto arr = rtts->as_array();
      if (!arr)
        return fail(rtts, "site_rtt", "expected [[site_rtt]] tables {a, b, ms}");
      for (size_t i = 0; i < arr->size(); ++i) {
        auto& item = (*arr)[i];
        auto key = fmt::format("site_rtt[{}]", i);
        auto entry = item.as_table();
        if (!entry)
          return fail(&item, key, "expected a table {a = \"site\", b = \"site\", ms = N}");
        if (auto err = check_keys(*entry, key, {"a", "b", "ms"}))
          return err;
        std::string a, b;
        uint32_t ms = 0;
        if (auto err = get(*entry, key, "a", a))
          return err;
        if (auto err = get(*entry, key, "b", b))
          return err;
        if (auto err = get(*entry, key, "ms", ms))
          return err;
        if (a.empty() || b.empty() || a == b)
          return fail(&item, key, "a and b must name two different sites");
        cfg.site_rtts.emplace_back(a, b, static_cast<double>(ms));
      }
    }
    if (auto chain = root.get("chain")) {
      auto tbl = chain->as_table();
      if (!tbl)
        return fail(chain, "chain", "expected a table");
      if (auto err = check_keys(*tbl, "chain", {"genesis"}))
        return err;
      std::string genesis;
      if (auto err = get(*tbl, "chain", "genesis", genesis))
        return err;
      if (!genesis.empty())
        cfg.genesis = std::filesystem::path{genesis}.is_absolute()
                        ? std::filesystem::path{genesis}
                        : base_ / genesis;
    }
    if (auto host = root.get("host")) {
      auto tbl = host->as_table();
      if (!tbl)
        return fail(host, "host", "expected a table");
      if (auto err = check_keys(*tbl, "host",
                                {"data_dir", "listen", "roles", "site", "data_files",
                                 "trainer_clients", "model_owners", "torch_cpu_capability"}))
        return err;
      if (auto err = get(*tbl, "host", "torch_cpu_capability", cfg.torch_cpu_capability))
        return err;
      if (auto& c = cfg.torch_cpu_capability;
          !c.empty() && c != "default" && c != "avx2" && c != "avx512")
        return fail(tbl->get("torch_cpu_capability"), "host.torch_cpu_capability",
                    fmt::format("'{}' is not one of default, avx2, avx512", c));
      if (auto err = node_list(*tbl, "host", "trainer_clients", cfg.trainer_clients))
        return err;
      if (auto err = node_list(*tbl, "host", "model_owners", cfg.model_owners))
        return err;
      if (auto files = tbl->get("data_files")) {
        auto arr = files->as_array();
        if (!arr)
          return fail(files, "host.data_files", "expected an array of directories");
        for (size_t i = 0; i < arr->size(); ++i) {
          auto dir = (*arr)[i].value<std::string>();
          if (!dir || dir->empty())
            return fail(&(*arr)[i], fmt::format("host.data_files[{}]", i),
                        "expected a directory name");
          std::filesystem::path p{*dir};
          cfg.data_files.push_back(p.is_absolute() ? p : base_ / p);
        }
      }
      std::string data_dir;
      if (auto err = get(*tbl, "host", "data_dir", data_dir))
        return err;
      if (!data_dir.empty())
        cfg.data_dir = std::filesystem::path{data_dir}.is_absolute()
                         ? std::filesystem::path{data_dir}
                         : base_ / data_dir;
      else
        cfg.data_dir = base_ / cfg.data_dir;
      std::string listen;
      if (auto err = get(*tbl, "host", "listen", listen))
        return err;
      if (!listen.empty()) {
        auto addr = net_address::parse(listen);
        if (!addr)
          return fail(tbl->get("listen"), "host.listen", what_of(addr.error()));
        cfg.listen = *addr;
      }
      if (auto err = get(*tbl, "host", "site", cfg.site))
        return err;
      if (auto roles = tbl->get("roles")) {
        auto arr = roles->as_array();
        if (!arr)
          return fail(roles, "host.roles", "expected an array of role names");
        cfg.roles.clear();
        for (size_t i = 0; i < arr->size(); ++i) {
          auto& item = (*arr)[i];
          auto key = fmt::format("host.roles[{}]", i);
          auto name = item.value<std::string>();
          if (!item.is_string() || !name)
            return fail(&item, key, "expected a role name");
          if (!known_roles_.count(*name)) {
            std::string list;
            for (auto& r : known_roles_)
              list += list.empty() ? r : ", " + r;
            return fail(&item, key, fmt::format("unknown role '{}' (known: {})", *name, list));
          }
          cfg.roles.push_back(*name);
        }
      }
    } else {
      cfg.data_dir = base_ / cfg.data_dir;
    }
    if (auto peers = root.get("peers")) {
      auto tbl = peers->as_table();
      if (!tbl)
        return fail(peers, "peers", "expected a table");
      if (auto err = check_keys(*tbl, "peers", {"allow", "connect", "dev_open"}))
        return err;
      if (auto err = get(*tbl, "peers", "dev_open", cfg.dev_open))
        return err;
      if (auto err = node_list(*tbl, "peers", "allow", cfg.allow))
        return err;
      if (auto connect = tbl->get("connect")) {
        auto arr = connect->as_array();
        if (!arr)
          return fail(connect, "peers.connect", "expected an array of {address, node} tables");
        for (size_t i = 0; i < arr->size(); ++i) {
          auto& item = (*arr)[i];
          auto key = fmt::format("peers.connect[{}]", i);
          auto entry = item.as_table();
          if (!entry)
            return fail(&item, key, "expected a table {address = \"host:port\", node = \"<hex>\"}");
          if (auto err = check_keys(*entry, key, {"address", "node"}))
            return err;
          std::string address, node;
          if (auto err = get(*entry, key, "address", address))
            return err;
          if (auto err = get(*entry, key, "node", node))
            return err;
          if (address.empty())
            return fail(&item, key + ".address", "missing");
          if (node.empty())
            return fail(&item, key + ".node", "missing");
          auto addr = net_address::parse(address);
          if (!addr)
            return fail(entry->get("address"), key + ".address", what_of(addr.error()));
          auto id = node_id::from_hex(node);
          if (!id)
            return fail(entry->get("node"), key + ".node", what_of(id.error()));
          cfg.connect.push_back(peer_entry{*addr, *id});
        }
      }
    }
    if (auto faults = root.get("faults")) {
      auto tbl = faults->as_table();
      if (!tbl)
        return fail(faults, "faults", "expected a table");
      if (auto err = check_keys(*tbl, "faults", {"trainer_cheat_percent", "job_crash_before_settle",
                                                 "job_crash_after_settle",
                                                 "job_crash_after_rating",
                                                 "trainer_cheat_weights", "rater_crash_after_deciding",
                                                 "trainer_hide_evidence", "trainer_poison_ring"}))
        return err;
      if (auto err = get(*tbl, "faults", "trainer_cheat_percent",
                         cfg.lim.fault_trainer_cheat_percent))
        return err;
      if (cfg.lim.fault_trainer_cheat_percent > 100)
        return fail(tbl->get("trainer_cheat_percent"), "faults.trainer_cheat_percent",
                    "must be a percentage, 0..100");
      if (auto err = get(*tbl, "faults", "job_crash_before_settle",
                         cfg.lim.fault_job_crash_before_settle))
        return err;
      if (auto err = get(*tbl, "faults", "job_crash_after_settle",
                         cfg.lim.fault_job_crash_after_settle))
        return err;
      if (auto err = get(*tbl, "faults", "job_crash_after_rating",
                         cfg.lim.fault_job_crash_after_rating))
        return err;
      if (auto err = get(*tbl, "faults", "rater_crash_after_deciding",
                         cfg.lim.fault_rater_crash_after_deciding))
        return err;
      if (auto err = get(*tbl, "faults", "trainer_cheat_weights",
                         cfg.lim.fault_trainer_cheat_weights))
        return err;
      if (auto err = get(*tbl, "faults", "trainer_hide_evidence",
                         cfg.lim.fault_trainer_hide_evidence))
        return err;
      if (auto err = get(*tbl, "faults", "trainer_poison_ring",
                         cfg.lim.fault_trainer_poison_ring))
        return err;
    }
    if (auto lim = root.get("limits")) {
      auto tbl = lim->as_table();
      if (!tbl)
        return fail(lim, "limits", "expected a table");
      auto& l = cfg.lim;
      if (auto err = check_keys(*tbl, "limits",
                                {"envelope_bytes_max", "traversal_words_max", "nesting_max",
                                 "request_timeout_ms", "heartbeat_interval_ms",
                                 "connection_timeout_ms", "connect_timeout_ms",
                                 "reconnect_min_ms", "reconnect_max_ms", "idle_connection_ms",
                                 "connections_per_address_max", "watchdog_period_ms",
                                 "echo_delay_ms_max", "echo_delayed_max", "handshake_bytes_min",
                                 "handshake_deadline_ms", "block_tick_ms", "block_takeover_ms",
                                 "vote_wait_ms", "block_txs_max", "receipt_pool_max",
                                 "clock_skew_ms_max", "ledger_sync_ms", "sync_blocks_max", "sync_window",
                                 "data_replicas", "stream_credits", "upload_batch_bytes", "model_bytes_max", "model_bytes_per_owner", "model_bytes_total",
                                 "storage_challenge_ms", "offer_heartbeat_ms", "trainer_slots", "trainer_idle_ms", "trainer_evidence_bytes", "jobs_running_max",
                                 "trainer_price", "gossip_ms", "member_down_ms", "ping_ms",
                                 "script_sessions_max", "script_memory_bytes",
                                 "script_instructions_max", "script_wall_ms_max",
                                 "script_idle_ms",
                                 "script_output_max"}))
        return err;
      caf::error err;
      auto p = std::string{"limits"};
      if ((err = get(*tbl, p, "envelope_bytes_max", l.envelope_bytes_max))
          || (err = get(*tbl, p, "traversal_words_max", l.traversal_words_max))
          || (err = get(*tbl, p, "nesting_max", l.nesting_max))
          || (err = get(*tbl, p, "request_timeout_ms", l.request_timeout_ms))
          || (err = get(*tbl, p, "heartbeat_interval_ms", l.heartbeat_interval_ms))
          || (err = get(*tbl, p, "connection_timeout_ms", l.connection_timeout_ms))
          || (err = get(*tbl, p, "connect_timeout_ms", l.connect_timeout_ms))
          || (err = get(*tbl, p, "reconnect_min_ms", l.reconnect_min_ms))
          || (err = get(*tbl, p, "reconnect_max_ms", l.reconnect_max_ms))
          || (err = get(*tbl, p, "idle_connection_ms", l.idle_connection_ms))
          || (err = get(*tbl, p, "connections_per_address_max", l.connections_per_address_max))
          || (err = get(*tbl, p, "watchdog_period_ms", l.watchdog_period_ms))
          || (err = get(*tbl, p, "echo_delay_ms_max", l.echo_delay_ms_max))
          || (err = get(*tbl, p, "echo_delayed_max", l.echo_delayed_max))
          || (err = get(*tbl, p, "handshake_bytes_min", l.handshake_bytes_min))
          || (err = get(*tbl, p, "handshake_deadline_ms", l.handshake_deadline_ms))
          || (err = get(*tbl, p, "block_tick_ms", l.block_tick_ms))
          || (err = get(*tbl, p, "block_takeover_ms", l.block_takeover_ms))
          || (err = get(*tbl, p, "vote_wait_ms", l.vote_wait_ms))
          || (err = get(*tbl, p, "block_txs_max", l.block_txs_max))
          || (err = get(*tbl, p, "receipt_pool_max", l.receipt_pool_max))
          || (err = get(*tbl, p, "clock_skew_ms_max", l.clock_skew_ms_max))
          || (err = get(*tbl, p, "ledger_sync_ms", l.ledger_sync_ms))
          || (err = get(*tbl, p, "sync_blocks_max", l.sync_blocks_max))
          || (err = get(*tbl, p, "sync_window", l.sync_window))
          || (err = get(*tbl, p, "data_replicas", l.data_replicas))
          || (err = get(*tbl, p, "stream_credits", l.stream_credits))
          || (err = get(*tbl, p, "upload_batch_bytes", l.upload_batch_bytes))
          || (err = get(*tbl, p, "model_bytes_max", l.model_bytes_max))
          || (err = get(*tbl, p, "model_bytes_per_owner", l.model_bytes_per_owner))
          || (err = get(*tbl, p, "model_bytes_total", l.model_bytes_total))
          || (err = get(*tbl, p, "storage_challenge_ms", l.storage_challenge_ms))
          || (err = get(*tbl, p, "offer_heartbeat_ms", l.offer_heartbeat_ms))
          || (err = get(*tbl, p, "trainer_slots", l.trainer_slots))
          || (err = get(*tbl, p, "trainer_idle_ms", l.trainer_idle_ms))
          || (err = get(*tbl, p, "trainer_evidence_bytes", l.trainer_evidence_bytes))
          || (err = get(*tbl, p, "jobs_running_max", l.jobs_running_max))
          || (err = get(*tbl, p, "trainer_price", l.trainer_price))
          || (err = get(*tbl, p, "gossip_ms", l.gossip_ms))
          || (err = get(*tbl, p, "member_down_ms", l.member_down_ms))
          || (err = get(*tbl, p, "ping_ms", l.ping_ms))
          || (err = get(*tbl, p, "script_sessions_max", l.script_sessions_max))
          || (err = get(*tbl, p, "script_memory_bytes", l.script_memory_bytes))
          || (err = get(*tbl, p, "script_instructions_max", l.script_instructions_max))
          || (err = get(*tbl, p, "script_wall_ms_max", l.script_wall_ms_max))
          || (err = get(*tbl, p, "script_idle_ms", l.script_idle_ms))
          || (err = get(*tbl, p, "script_output_max", l.script_output_max)))
        return err;
      if (l.script_memory_bytes < (1u << 20) || l.script_instructions_max < 10000
          || l.script_idle_ms == 0 || l.script_output_max == 0 || l.script_wall_ms_max == 0)
        return fail(tbl, "limits", "script_memory_bytes must be >= 1 MiB, "
                                   "script_instructions_max >= 10000, script_wall_ms_max, script_idle_ms and "
                                   "script_output_max > 0");
      if (l.sync_window == 0 || l.sync_window > 256)
        return fail(tbl, "limits", "sync_window must be in 1..256");
      if (l.gossip_ms == 0 || l.ping_ms == 0 || l.member_down_ms < 2 * l.gossip_ms)
        return fail(tbl, "limits", "gossip_ms and ping_ms must be > 0 and member_down_ms at "
                                   "least twice gossip_ms");
      if (l.offer_heartbeat_ms == 0 || l.trainer_slots == 0 || l.trainer_idle_ms == 0)
        return fail(tbl, "limits", "offer_heartbeat_ms, trainer_slots and trainer_idle_ms must be > 0");
      if (l.trainer_evidence_bytes < (1u << 20))
        return fail(tbl, "limits", "trainer_evidence_bytes must be >= 1 MiB");
      if (l.data_replicas == 0 || l.stream_credits == 0 || l.storage_challenge_ms == 0)
        return fail(tbl, "limits", "data_replicas, stream_credits and storage_challenge_ms must "
                                   "be > 0");
      if (l.upload_batch_bytes == 0 || l.upload_batch_bytes * 2 > l.envelope_bytes_max)
        return fail(tbl, "limits.upload_batch_bytes",
                    "must be > 0 and at most half of envelope_bytes_max");
      if (l.model_bytes_max == 0 || l.model_bytes_max * 2 > l.envelope_bytes_max)
        return fail(tbl, "limits.model_bytes_max",
                    "must be > 0 and at most half of envelope_bytes_max");
      if (l.model_bytes_per_owner < l.model_bytes_max)
        return fail(tbl, "limits.model_bytes_per_owner",
                    "must be at least model_bytes_max (one model of the largest size)");
      if (l.model_bytes_total < l.model_bytes_per_owner)
        return fail(tbl, "limits.model_bytes_total", "must be at least model_bytes_per_owner");
      if (l.block_tick_ms == 0 || l.ledger_sync_ms == 0 || l.block_takeover_ms == 0)
        return fail(tbl, "limits", "block_tick_ms, block_takeover_ms and ledger_sync_ms must be "
                                   "> 0");
      if (l.vote_wait_ms == 0)
        return fail(tbl, "limits.vote_wait_ms",
                    "must be > 0 (rounds need a timeout to move on when votes are missing)");
      if (l.heartbeat_interval_ms == 0 || l.connection_timeout_ms <= l.heartbeat_interval_ms)
        return fail(tbl, "limits.connection_timeout_ms",
                    "must be greater than a non-zero heartbeat_interval_ms");
      if (l.idle_connection_ms <= l.heartbeat_interval_ms)
        return fail(tbl, "limits.idle_connection_ms",
                    "must be greater than heartbeat_interval_ms, or healthy links are cut");
    }
    return cfg;
  }

private:
  std::string source_;
  std::filesystem::path base_;
  const std::set<std::string>& known_roles_;
};

} // namespace

caf::expected<host_config> parse_host_config(std::string_view text,
                                             std::string_view source_name,
                                             const std::filesystem::path& base_dir,
                                             const std::set<std::string>& known_roles) {
  toml::table root;
  try {
    root = toml::parse(text, source_name);
  } catch (const toml::parse_error& e) {
    return make_error(errc::config_invalid,
                      fmt::format("{}:{}: {}", source_name, e.source().begin.line,
                                  e.description()));
  }
  return parser{source_name, base_dir, known_roles}.run(root);
}

caf::expected<host_config> load_host_config(const std::filesystem::path& path,
                                            const std::set<std::string>& known_roles) {
  std::ifstream in{path, std::ios::binary};
  if (!in)
    return make_error(errc::config_invalid, fmt::format("cannot read config {}", path.string()));
  std::ostringstream ss;
  ss << in.rdbuf();
  auto base = path.has_parent_path() ? path.parent_path() : std::filesystem::path{"."};
  return parse_host_config(ss.str(), path.string(), base, known_roles);
}

} // namespace aicon
