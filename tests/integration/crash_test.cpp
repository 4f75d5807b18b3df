// Kill -9 a process while it commits blocks, again and again: the store must
// always hold a whole prefix of the chain (old or new state, never a mix),
// `aicon chain verify` must pass, and a restart must resume to the same tip
// and state root as a run that was never interrupted.
#include <csignal>
#include <random>
#include <regex>

#include "fixtures.hpp"

using namespace aicon;
using namespace aicon::test;

namespace {

struct verify_result {
  bool ok = false;
  uint64_t blocks = 0;
  std::string root;
  std::string output;
};

verify_result verify(const std::filesystem::path& dir) {
  auto res = run_command({aicon_binary(), "chain", "verify", "--data-dir",
                          (dir / "target").string(), "--genesis",
                          (dir / "genesis.toml").string()},
                         60s);
  verify_result out;
  out.output = res.output;
  out.ok = res.exit_code == 0;
  std::smatch m;
  if (std::regex_search(res.output, m, std::regex{"verified (\\d+) blocks"}))
    out.blocks = std::stoull(m[1]);
  if (std::regex_search(res.output, m, std::regex{"state root ([0-9a-f]{64})"}))
    out.root = m[1];
  return out;
}

std::vector<std::string> writer_args(const std::filesystem::path& dir) {
  return {aicon_binary(), "bench", "chain", "--blocks", "200", "--txs", "50", "--dir",
          dir.string()};
}

} // namespace

BOOST_AUTO_TEST_SUITE(crash)

BOOST_AUTO_TEST_CASE(sigkill_while_committing_never_leaves_a_mix) {
  test::temp_dir root;
  uint64_t seed = std::random_device{}();
  BOOST_TEST_MESSAGE("crash test seed " << seed);
  std::mt19937_64 rng{seed};
  auto dir = root / "killed";
  uint64_t last_height = 0;
  int kills = 0;
  for (int round = 0; round < 8; ++round) {
    auto log = root / fmt::format("writer{}.log", round);
    process writer{writer_args(dir), log};
    // Kill at a random moment once it is committing (or it finishes first).
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (writer.running() && writer.log_text().find("committing") == std::string::npos
           && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(10ms);
    if (writer.running()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 120));
      if (writer.running()) {
        writer.stop(SIGKILL, 5s);
        ++kills;
      }
    }
    writer.wait(60s);
    auto v = verify(dir);
    BOOST_TEST_MESSAGE("round " << round << ": " << v.blocks << " blocks committed");
    BOOST_REQUIRE_MESSAGE(v.ok, "seed " << seed << " round " << round << ": " << v.output);
    BOOST_TEST(v.blocks >= last_height, "the chain went backwards (seed " << seed << ")");
    last_height = v.blocks;
    if (last_height == 200)
      break; // complete: nothing left to interrupt
  }
  BOOST_TEST(kills >= 3, "too few kills landed while committing: " << kills);
  // Let it finish, then compare with a run that was never interrupted.
  auto finish = run_command(writer_args(dir), 120s);
  BOOST_REQUIRE_MESSAGE(finish.exit_code == 0, finish.output);
  auto clean_dir = root / "clean";
  auto clean = run_command(writer_args(clean_dir), 120s);
  BOOST_REQUIRE_MESSAGE(clean.exit_code == 0, clean.output);
  auto a = verify(dir), b = verify(clean_dir);
  BOOST_REQUIRE(a.ok && b.ok);
  BOOST_TEST(a.blocks == 200u);
  BOOST_TEST(b.blocks == 200u);
  BOOST_TEST(a.root == b.root);
}

BOOST_AUTO_TEST_CASE(verify_names_a_corrupted_store) {
  test::temp_dir root;
  auto dir = root / "c";
  auto run = run_command({aicon_binary(), "bench", "chain", "--blocks", "3", "--txs", "20",
                          "--dir", dir.string()}, 60s);
  BOOST_REQUIRE_MESSAGE(run.exit_code == 0, run.output);
  BOOST_REQUIRE(verify(dir).ok);
  // Another genesis is refused by name.
  auto other = write_file(root.path(), "other.toml",
                          "committee_size = 1\n[[candidate]]\nnode = \""
                            + aicon::identity::generate().id().hex() + "\"\n");
  auto res = run_command({aicon_binary(), "chain", "verify", "--data-dir",
                          (dir / "target").string(), "--genesis", other.string()});
  BOOST_TEST(res.exit_code == 1);
  BOOST_TEST(res.output.find("another genesis") != std::string::npos, res.output);
}

BOOST_AUTO_TEST_SUITE_END()
