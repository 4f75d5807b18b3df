// The TOML files a host reads: host.toml, a chain's genesis and the
// run-time peers.toml. The first byte picks which.
#include <fstream>
#include <set>

#include "actors/ledger/chain.hpp"
#include "fuzz/fuzz.hpp"
#include "runtime/config.hpp"
#include "runtime/peers_file.hpp"
#include "runtime/temp_dir.hpp"

using namespace aicon;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0)
    return 0;
  std::string_view text{reinterpret_cast<const char*>(data + 1), size - 1};
  static const std::set<std::string> roles{"directory", "echo",    "ledger",
                                           "block_generator", "data_node", "trainer",
                                           "allocator", "rater", "script"};
  switch (data[0] % 3) {
    case 0: (void) parse_host_config(text, "fuzz.toml", "/nonexistent", roles); break;
    case 1: (void) ledger::parse_genesis(text, "genesis.toml"); break;
    default: {
      static auto d = temp_dir::create("aicon-fuzz-peers");
      std::ofstream{d->path() / "peers.toml", std::ios::binary | std::ios::trunc}
        .write(text.data(), static_cast<std::streamsize>(text.size()));
      (void) load_runtime_peers(d->path());
      break;
    }
  }
  return 0;
}

std::vector<std::string> aicon_fuzz_seeds() {
  std::string id(64, 'a');
  return {
    std::string(1, '\0')
      + "[host]\ndata_dir = \"d\"\nlisten = \"127.0.0.1:7100\"\nroles = [\"directory\", "
        "\"trainer\"]\nsite = \"west\"\ndata_files = [\"/srv\"]\n[peers]\nallow = [\"" + id
      + "\"]\nconnect = [ { address = \"127.0.0.1:7101\", node = \"" + id
      + "\" } ]\n[chain]\ngenesis = \"g.toml\"\n[limits]\ntrainer_slots = 2\n"
        "[[site_rtt]]\na = \"west\"\nb = \"east\"\nms = 40\n[faults]\ntrainer_cheat_percent = 0\n",
    std::string(1, '\x01')
      + "time_ms = 1\ncommittee_size = 1\ninitial_difficulty = 100\nreward_percent = 30\n"
        "slash_percent = 50\nauthorities = [\"" + id + "\"]\n[difficulty]\ntarget_interval_ms = "
        "2000\nwindow_blocks = 10\nclamp_factor = 4\n[[candidate]]\nnode = \"" + id
      + "\"\nweight = 1\n[[allocation]]\nwallet = \"" + id + "\"\nbalance = 10\nstake = 5\n",
    std::string(1, '\x02') + "[[peer]]\naddress = \"127.0.0.1:7000\"\nnode = \"" + id
      + "\"\n[removed]\nnodes = [\"" + id + "\"]\n",
  };
}
