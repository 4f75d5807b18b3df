#include <boost/test/unit_test.hpp>

#include "runtime/config.hpp"
#include "runtime/error.hpp"

#include "test_util.hpp"

using namespace aicon;

namespace {

const std::set<std::string> roles{"directory", "echo"};
const std::string id_a(64, 'a');
const std::string id_b(64, 'b');

caf::expected<host_config> parse(const std::string& text) {
  return parse_host_config(text, "host.toml", "/base", roles);
}

void expect_error(const std::string& text, const std::string& needle) {
  auto cfg = parse(text);
  BOOST_REQUIRE_MESSAGE(!cfg, "accepted: " << text);
  BOOST_TEST(code_of(cfg.error()) == errc::config_invalid);
  auto msg = describe(cfg.error());
  BOOST_TEST(msg.find(needle) != std::string::npos, "'" << msg << "' lacks '" << needle << "'");
}

} // namespace

BOOST_AUTO_TEST_SUITE(config)

BOOST_AUTO_TEST_CASE(full_config_parses) {
  auto cfg = parse(R"(
[host]
data_dir = "data"
listen = "127.0.0.1:7100"
roles = ["directory", "echo"]
site = "lab-a"

[peers]
allow = [")" + id_a + R"("]
connect = [ { address = "127.0.0.1:7101", node = ")" + id_b + R"(" } ]

[limits]
request_timeout_ms = 2500
idle_connection_ms = 4000
)");
  BOOST_REQUIRE_MESSAGE(cfg, test::why(cfg));
  BOOST_TEST(cfg->data_dir == std::filesystem::path{"/base/data"});
  BOOST_TEST(cfg->listen.port == 7100);
  BOOST_TEST(cfg->site == "lab-a");
  BOOST_TEST(cfg->allow.size() == 1u);
  BOOST_TEST(cfg->connect.size() == 1u);
  BOOST_TEST(cfg->connect[0].address.to_string() == "127.0.0.1:7101");
  BOOST_TEST(cfg->admitted().size() == 2u);
  BOOST_TEST(cfg->lim.request_timeout_ms == 2500u);
  BOOST_TEST(!cfg->dev_open);
}

BOOST_AUTO_TEST_CASE(model_owners_parse_and_bad_ones_are_named) {
  auto cfg = parse("[host]\nmodel_owners = [\"" + id_a + "\"]\n");
  BOOST_REQUIRE_MESSAGE(cfg, test::why(cfg));
  BOOST_TEST(cfg->model_owners.size() == 1u);
  BOOST_TEST(cfg->model_owners[0].hex() == id_a);
  auto none = parse("[host]\n");
  BOOST_REQUIRE(none);
  BOOST_TEST(none->model_owners.empty()); // anyone's model assets
  expect_error("[host]\nmodel_owners = [\"xyz\"]\n", "host.model_owners");
}

BOOST_AUTO_TEST_CASE(torch_cpu_capability_is_one_of_libtorchs) {
  auto cfg = parse("[host]\ntorch_cpu_capability = \"avx2\"\n");
  BOOST_REQUIRE_MESSAGE(cfg, test::why(cfg));
  BOOST_TEST(cfg->torch_cpu_capability == "avx2");
  auto none = parse("[host]\n");
  BOOST_REQUIRE(none);
  BOOST_TEST(none->torch_cpu_capability.empty()); // auto-detected
  expect_error("[host]\ntorch_cpu_capability = \"sse9\"\n",
               "host.torch_cpu_capability: 'sse9' is not one of default, avx2, avx512");
}

BOOST_AUTO_TEST_CASE(empty_config_gives_defaults) {
  auto cfg = parse("");
  BOOST_REQUIRE(cfg);
  BOOST_TEST(cfg->roles.size() == 2u);
  BOOST_TEST(cfg->listen.host == "127.0.0.1");
}

BOOST_AUTO_TEST_CASE(syntax_errors_name_the_line) {
  expect_error("[host]\nsite = \"x\"\nlisten = \n", "host.toml:3");
}

BOOST_AUTO_TEST_CASE(unknown_keys_name_key_and_line) {
  expect_error("[host]\nsite = \"x\"\nlsiten = \"127.0.0.1:1\"\n", "host.toml:3: host.lsiten: unknown key");
  expect_error("[hots]\n", "host.toml:1: hots: unknown key");
  expect_error("[limits]\nrequest_timeout = 5\n", "limits.request_timeout: unknown key");
}

BOOST_AUTO_TEST_CASE(bad_values_name_key_and_line) {
  expect_error("[host]\n\nlisten = \"127.0.0.1\"\n", "host.toml:3: host.listen");
  expect_error("[host]\nlisten = \"127.0.0.1:99999\"\n", "invalid port");
  expect_error("[host]\nroles = [\"echo\", \"trainr\"]\n", "host.toml:2: host.roles[1]: unknown role 'trainr'");
  expect_error("[peers]\nallow = [\"" + id_a + "\", \"xyz\"]\n",
               "host.toml:2: peers.allow[1]: NodeId 'xyz' must be 64 hex digits");
  expect_error("[peers]\nconnect = [ { address = \"h:1\" } ]\n", "peers.connect[0].node: missing");
  expect_error("[host]\nsite = 5\n", "host.site: expected a string");
  expect_error("[limits]\nrequest_timeout_ms = -1\n", "limits.request_timeout_ms: -1 is out of range");
  expect_error("[limits]\nheartbeat_interval_ms = 1000\nconnection_timeout_ms = 500\n",
               "limits.connection_timeout_ms");
  expect_error("[limits]\nmodel_bytes_per_owner = 1000\n",
               "limits.model_bytes_per_owner: must be at least model_bytes_max");
}

BOOST_AUTO_TEST_CASE(addresses_parse) {
  BOOST_TEST(net_address::parse("127.0.0.1:80")->port == 80);
  BOOST_TEST(!net_address::parse(":80"));
  BOOST_TEST(!net_address::parse("host:"));
  BOOST_TEST(!net_address::parse("host:8x"));
}

BOOST_AUTO_TEST_CASE(documented_example_config_parses) {
  auto cfg = load_host_config(std::filesystem::path{AICON_SOURCE_DIR} / "examples" / "host.toml",
                              roles);
  BOOST_REQUIRE_MESSAGE(cfg, test::why(cfg));
  BOOST_TEST(cfg->listen.port == 7100);
  BOOST_TEST(cfg->connect.size() == 1u);
  BOOST_TEST(cfg->genesis.filename() == "genesis.toml");
  // The documented defaults are the real defaults.
  limits defaults;
  BOOST_TEST(cfg->lim.envelope_bytes_max == defaults.envelope_bytes_max);
  BOOST_TEST(cfg->lim.traversal_words_max == defaults.traversal_words_max);
  BOOST_TEST(cfg->lim.request_timeout_ms == defaults.request_timeout_ms);
  BOOST_TEST(cfg->lim.idle_connection_ms == defaults.idle_connection_ms);
  BOOST_TEST(cfg->lim.connections_per_address_max == defaults.connections_per_address_max);
  BOOST_TEST(cfg->lim.echo_delay_ms_max == defaults.echo_delay_ms_max);
  BOOST_TEST(cfg->lim.echo_delayed_max == defaults.echo_delayed_max);
  BOOST_TEST(cfg->lim.handshake_bytes_min == defaults.handshake_bytes_min);
  BOOST_TEST(cfg->lim.handshake_deadline_ms == defaults.handshake_deadline_ms);
}

BOOST_AUTO_TEST_CASE(site_rtts_and_trainer_offers) {
  auto cfg = parse("[limits]\ntrainer_slots = 4\ntrainer_price = 7\noffer_heartbeat_ms = 500\n"
                   "[[site_rtt]]\na = \"west\"\nb = \"east\"\nms = 40\n");
  BOOST_REQUIRE_MESSAGE(cfg, test::why(cfg));
  BOOST_TEST(cfg->lim.trainer_slots == 4u);
  BOOST_TEST(cfg->lim.trainer_price == 7u);
  BOOST_REQUIRE(cfg->site_rtts.size() == 1u);
  BOOST_TEST(std::get<2>(cfg->site_rtts[0]) == 40.0);
  expect_error("[[site_rtt]]\na = \"west\"\nb = \"west\"\nms = 1\n", "two different sites");
  expect_error("[[site_rtt]]\na = \"west\"\nb = \"east\"\nmsec = 1\n", "site_rtt[0].msec");
  expect_error("[limits]\ntrainer_slots = 0\n", "trainer_slots");
  expect_error("[limits]\nscript_memory_bytes = 1000\n", "script_memory_bytes must be >= 1 MiB");
  expect_error("[limits]\nscript_instructions_max = 5\n", "script_instructions_max >= 10000");
}

BOOST_AUTO_TEST_CASE(the_documented_examples_parse) {
  std::set<std::string> all{"directory", "echo",    "ledger",    "block_generator",
                            "data_node", "trainer", "allocator", "rater", "script"};
  auto examples = std::filesystem::path{AICON_SOURCE_DIR} / "examples";
  auto cfg = load_host_config(examples / "host.toml", all);
  BOOST_REQUIRE_MESSAGE(cfg, test::why(cfg));
  BOOST_TEST(cfg->site_rtts.size() == 1u);
  auto chain = load_host_config(examples / "chain-host.toml", all);
  BOOST_REQUIRE_MESSAGE(chain, test::why(chain));
  BOOST_TEST((chain->roles == std::vector<std::string>{"directory", "ledger", "block_generator",
                                                        "allocator", "rater", "script"}));
  auto trainer = load_host_config(examples / "trainer-host.toml", all);
  BOOST_REQUIRE_MESSAGE(trainer, test::why(trainer));
  BOOST_TEST(trainer->lim.trainer_slots == 2u);
  auto data = load_host_config(examples / "data-host.toml", all);
  BOOST_REQUIRE_MESSAGE(data, test::why(data));
  BOOST_TEST(data->lim.data_replicas == 2u);
}

BOOST_AUTO_TEST_SUITE_END()
