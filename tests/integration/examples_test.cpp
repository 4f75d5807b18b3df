// The README's quick starts, exactly as written: examples/two-hosts.sh with
// two `aicon host` processes and `aicon ping`; examples/chain-hosts.sh with
// three hosts driven by `aicon wallet` and `aicon chain receipt`.
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "actors/ledger/chain.hpp"
#include "fixtures.hpp"

using namespace aicon;
using namespace aicon::test;

BOOST_AUTO_TEST_SUITE(examples)

BOOST_AUTO_TEST_CASE(two_hosts_quick_start) {
  test::temp_dir root;
  auto port_a = free_port(), port_b = free_port();
  ::setenv("AICON", aicon_binary().c_str(), 1);
  ::setenv("AICON_PORT_A", std::to_string(port_a).c_str(), 1);
  ::setenv("AICON_PORT_B", std::to_string(port_b).c_str(), 1);
  auto setup = run_command({"/bin/bash", std::string{AICON_SOURCE_DIR} + "/examples/two-hosts.sh",
                            (root / "th").string()});
  BOOST_REQUIRE_MESSAGE(setup.exit_code == 0, setup.output);
  auto b = start_host(root / "th" / "b.toml", root / "b.log");
  auto a = start_host(root / "th" / "a.toml", root / "a.log");
  BOOST_TEST(a.port == port_a);
  BOOST_TEST(b.port == port_b);
  BOOST_REQUIRE_MESSAGE(a.proc->wait_for_log("peer up", 15s), a.proc->log_text());
  auto ping = run_command({aicon_binary(), "ping", fmt::format("127.0.0.1:{}", port_b),
                           "--data-dir", (root / "th" / "a").string(), "--count", "5"});
  BOOST_TEST(ping.exit_code == 0, ping.output);
  BOOST_TEST(ping.output.find("0 wrong") != std::string::npos, ping.output);
  // Running the script again keeps the keys (idempotent).
  auto again = run_command({"/bin/bash", std::string{AICON_SOURCE_DIR} + "/examples/two-hosts.sh",
                            (root / "th").string()});
  BOOST_TEST(again.exit_code == 0, again.output);
  BOOST_TEST(again.output.find(setup.output.substr(7, 64)) != std::string::npos, again.output);
}

BOOST_AUTO_TEST_CASE(chain_quick_start) {
  test::temp_dir root;
  std::vector<uint16_t> ports{free_port(), free_port(), free_port()};
  ::setenv("AICON", aicon_binary().c_str(), 1);
  ::setenv("AICON_PORT_A", std::to_string(ports[0]).c_str(), 1);
  ::setenv("AICON_PORT_B", std::to_string(ports[1]).c_str(), 1);
  ::setenv("AICON_PORT_C", std::to_string(ports[2]).c_str(), 1);
  auto dir = root / "ch";
  auto setup = run_command({"/bin/bash", std::string{AICON_SOURCE_DIR} + "/examples/chain-hosts.sh",
                            dir.string()});
  BOOST_REQUIRE_MESSAGE(setup.exit_code == 0, setup.output);
  std::vector<running_host> hosts;
  for (auto n : {"a", "b", "c"})
    hosts.push_back(start_host(dir / (std::string{n} + ".toml"), root / (std::string{n} + ".log")));
  for (auto& h : hosts)
    BOOST_REQUIRE_MESSAGE(h.proc->wait_for_log("peer up", 15s), h.proc->log_text());
  auto read = [&](const std::string& file) {
    std::ifstream in{dir / file};
    std::string line;
    std::getline(in, line);
    return line;
  };
  auto bob = read("wallets/bob.id");
  auto addr = fmt::format("127.0.0.1:{}", ports[0]);
  auto client_dir = (dir / "client").string();
  auto transfer = run_command({aicon_binary(), "wallet", "transfer", "--key",
                               (dir / "wallets/alice.key").string(), "--to", bob, "--amount", "25",
                               "--wait", "0", "--connect", addr, "--data-dir", client_dir});
  BOOST_REQUIRE_MESSAGE(transfer.exit_code == 0, transfer.output);
  // Blocks need verified work: feed receipts until bob is paid.
  std::string balance;
  auto deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    auto r = run_command({aicon_binary(), "chain", "receipt", "--trainer-key",
                          (dir / "keys/trainer.key").string(), "--verifier-key",
                          (dir / "keys/rater.key").string(), "--units", "100", "--connect",
                          fmt::format("127.0.0.1:{}", ports[1]), "--data-dir", client_dir});
    BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.output);
    auto b = run_command({aicon_binary(), "wallet", "balance", bob, "--connect",
                          fmt::format("127.0.0.1:{}", ports[2]), "--data-dir", client_dir});
    BOOST_REQUIRE_MESSAGE(b.exit_code == 0, b.output);
    balance = b.output;
    if (balance.find("balance  25") != std::string::npos)
      break;
  }
  BOOST_REQUIRE_MESSAGE(balance.find("balance  25") != std::string::npos, balance);
  // Retrying a transfer whose outcome was unknown never pays twice: the
  // same nonce signs the same transaction, final at most once.
  auto wallet_transfer = [&](std::vector<std::string> extra) {
    std::vector<std::string> args{aicon_binary(), "wallet", "transfer", "--key",
                                  (dir / "wallets/alice.key").string(), "--to", bob,
                                  "--connect", addr, "--data-dir", client_dir};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_command(args);
  };
  auto retry = wallet_transfer({"--amount", "25", "--nonce", "1", "--wait", "0"});
  BOOST_TEST(retry.exit_code == 0, retry.output);
  BOOST_TEST(retry.output.find("final already: nonce 1") != std::string::npos, retry.output);
  auto ahead = wallet_transfer({"--amount", "5", "--nonce", "9", "--wait", "0"});
  BOOST_TEST(ahead.exit_code != 0);
  BOOST_TEST(ahead.output.find("--nonce 9 skips ahead") != std::string::npos, ahead.output);
  auto slow = wallet_transfer({"--amount", "5", "--wait", "1"});
  BOOST_TEST((slow.exit_code == 3 || slow.exit_code == 0), slow.output);
  if (slow.exit_code == 3)
    BOOST_TEST(slow.output.find("--nonce 2") != std::string::npos, slow.output);
  for (int i = 0; i < 2; ++i) { // the retries a worried user makes
    auto again = wallet_transfer({"--amount", "5", "--nonce", "2", "--wait", "0"});
    BOOST_TEST(again.exit_code == 0, again.output);
    BOOST_TEST((again.output.find("already pending") != std::string::npos
                || again.output.find("final already") != std::string::npos),
               again.output);
  }
  deadline = std::chrono::steady_clock::now() + 60s;
  while (std::chrono::steady_clock::now() < deadline) {
    run_command({aicon_binary(), "chain", "receipt", "--trainer-key",
                 (dir / "keys/trainer.key").string(), "--verifier-key",
                 (dir / "keys/rater.key").string(), "--units", "100", "--connect",
                 fmt::format("127.0.0.1:{}", ports[1]), "--data-dir", client_dir});
    balance = run_command({aicon_binary(), "wallet", "balance", bob, "--connect",
                           fmt::format("127.0.0.1:{}", ports[2]), "--data-dir", client_dir})
                .output;
    if (balance.find("nonce    0") != std::string::npos
        && balance.find("balance  30") != std::string::npos)
      break;
  }
  BOOST_TEST(balance.find("balance  30") != std::string::npos, balance); // 25 + 5, once
  // A transfer with no funds behind it is refused by name.
  auto broke = run_command({aicon_binary(), "wallet", "transfer", "--key",
                            (dir / "wallets/bob.key").string(), "--to", read("wallets/alice.id"),
                            "--amount", "1000", "--wait", "0", "--connect", addr, "--data-dir",
                            client_dir});
  BOOST_TEST(broke.exit_code != 0);
  BOOST_TEST(broke.output.find("rule overdraft") != std::string::npos, broke.output);
  // The training quick start on the same hosts: 2 trainers on each of a and b.
  auto trained = run_command(
    {aicon_binary(), "train", "--data",
     (std::filesystem::path{AICON_SOURCE_DIR} / "tests/data/digits.csv.gz").string(), "--connect",
     fmt::format("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]), "--trainers-per-host", "2",
     "--steps", "300", "--data-dir", client_dir, "--csv", (root / "loss.csv").string(),
     "--plot", (root / "loss.svg").string()},
    120s);
  BOOST_REQUIRE_MESSAGE(trained.exit_code == 0, trained.output);
  BOOST_TEST(trained.output.find("ring of 4 trainers on 2 hosts") != std::string::npos);
  auto acc_at = trained.output.find("held-out accuracy ");
  BOOST_REQUIRE(acc_at != std::string::npos);
  BOOST_TEST(std::stod(trained.output.substr(acc_at + 18)) >= 0.95, trained.output);
  BOOST_TEST(std::filesystem::file_size(root / "loss.csv") > 300u * 10);
  {
    std::ifstream svg{root / "loss.svg"};
    std::string text((std::istreambuf_iterator<char>(svg)), std::istreambuf_iterator<char>());
    BOOST_TEST(text.rfind("<svg", 0) == 0u);
    BOOST_TEST(text.find("<polyline") != std::string::npos);
    BOOST_TEST(text.find("step 299") != std::string::npos);
  }
  for (auto& h : hosts)
    BOOST_TEST(h.proc->stop(SIGTERM, 30s) == 0); // a loaded 2-core CI box is slow to stop 3 roles
  // All three stores verify to the same state root.
  std::set<std::string> roots;
  for (auto n : {"a", "b", "c"}) {
    auto v = run_command({aicon_binary(), "chain", "verify", "--data-dir", (dir / n).string(),
                          "--genesis", (dir / "genesis.toml").string()});
    BOOST_REQUIRE_MESSAGE(v.exit_code == 0, v.output);
    roots.insert(v.output.substr(v.output.find("state root")));
  }
  BOOST_TEST(roots.size() == 1u);
}

BOOST_AUTO_TEST_CASE(each_role_example_config_starts_a_host) {
  // examples/{chain,trainer,data}-host.toml as an operator would use them:
  // copied beside a genesis, with their own key; each host starts with the
  // roles it documents and stops cleanly on SIGTERM.
  test::temp_dir root;
  for (std::string name : {"chain-host", "trainer-host", "data-host"}) {
    std::ifstream in{std::filesystem::path{AICON_SOURCE_DIR} / "examples" / (name + ".toml")};
    std::stringstream text;
    text << in.rdbuf();
    auto dir = root / name;
    std::filesystem::create_directories(dir);
    auto cfg = write_file(dir, name + ".toml", text.str());
    std::string data_dir = name == "chain-host" ? "chain-a" : name == "trainer-host" ? "trainer-a"
                                                                                       : "data-a";
    auto node = make_node(root, name + "/" + data_dir);
    ledger::genesis_config g;
    g.time_ms = 1;
    g.candidates = {{node.id, 1}};
    g.committee_size = 1;
    g.authorities = {node.id};
    write_file(dir, "genesis.toml", ledger::to_toml(g));
    auto h = start_host(cfg, dir / "host.log", {"--listen", "127.0.0.1:0"});
    auto log = h.proc->log_text();
    BOOST_TEST_MESSAGE(name << ":\n" << log);
    std::string roles = name == "chain-host"     ? "roles=allocator,block_generator,directory,ledger,rater"
                        : name == "trainer-host" ? "roles=directory,ledger,trainer"
                                                 : "roles=data_node,directory,ledger";
    BOOST_TEST(log.find(roles) != std::string::npos, name << " should run " << roles);
    BOOST_TEST(h.proc->stop(SIGTERM, 30s) == 0, name);
  }
}

BOOST_AUTO_TEST_SUITE_END()
