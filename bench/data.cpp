#include "bench/data.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <fstream>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <sodium.h>

#include "actors/data_node/remote.hpp"
#include "bench/host_process.hpp"
#include "runtime/error.hpp"
#include "runtime/temp_dir.hpp"

namespace aicon::bench {

namespace {

using clock_type = std::chrono::steady_clock;

/// A random dataset of about `bytes` of float32 features (64 per row) and labels.
data::table synthetic(double megabytes) {
  data::table t;
  t.features = 64;
  t.rows = std::max<uint64_t>(16, static_cast<uint64_t>(megabytes * 1e6 / (t.features * 4 + 4)));
  t.classes = 10;
  std::mt19937 rng{42};
  std::normal_distribution<float> nd;
  t.x.resize(t.rows * t.features);
  for (auto& v : t.x)
    v = nd(rng);
  t.y.resize(t.rows);
  for (uint64_t i = 0; i < t.rows; ++i)
    t.y[i] = static_cast<int32_t>(rng() % 10);
  return t;
}

/// Raw LMDB reads plus libsodium decryption of every share, one process:
/// the ceiling. Returns MB/s of share bytes.
caf::expected<double> ceiling(store::environment& env, const data::built_dataset& d) {
  opened<schema::DatasetManifest> m{d.manifest};
  std::vector<uint8_t> plain;
  auto t0 = clock_type::now();
  uint64_t bytes = 0;
  auto txn = store::txn::begin(env, false);
  if (!txn)
    return txn.error();
  for (auto ref : m->getShards()) {
    std::span<const uint8_t> h{ref.getHash().begin(), 32};
    auto share = txn->get(store::db::shares, h);
    auto key = txn->get(store::db::shard_keys, h);
    if (!share || !*share || !key || !*key)
      return make_error(errc::not_found, "ceiling: a share is missing");
    auto& s = **share;
    constexpr size_t nb = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
    plain.resize(s.size());
    unsigned long long plen = 0;
    static constexpr std::string_view ad = "aicon-shard-v1";
    if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          plain.data(), &plen, nullptr, s.data() + nb, s.size() - nb,
          reinterpret_cast<const uint8_t*>(ad.data()), ad.size(), s.data(), (*key)->data())
        != 0)
      return make_error(errc::bad_signature, "ceiling: a share does not decrypt");
    bytes += s.size();
  }
  double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
  return bytes / secs / 1e6;
}

} // namespace

void add_data_flags(CLI::App& app, data_options& opts) {
  app.add_option("--mb", opts.megabytes, "dataset size in MB of float32 features (default 64)");
  app.add_option("--rounds", opts.rounds, "best of this many rounds (default 3)");
  app.add_flag("--quick", opts.quick, "tiny run (ctest): 2 MB, one round");
  app.add_option("--csv", opts.csv, "also write the table to this CSV file");
}

int run_data(const data_options& opts_in) {
  auto opts = opts_in;
  if (opts.quick) {
    opts.megabytes = 2;
    opts.rounds = 1;
  }
  std::signal(SIGPIPE, SIG_IGN);
  auto fail = [](const caf::error& err) {
    std::fprintf(stderr, "bench data: %s\n", describe(err).c_str());
    return 2;
  };
  auto tmp = temp_dir::create("aicon-bench-data");
  if (!tmp)
    return fail(tmp.error());
  auto host_dir = *tmp / "host", client_dir = *tmp / "client";
  auto host_id = create_identity(host_dir);
  auto client_id = create_identity(client_dir);
  if (!host_id || !client_id || !trust_certificate(host_dir, client_dir / node_cert_file)
      || !trust_certificate(client_dir, host_dir / node_cert_file))
    return fail(make_error(errc::io_error, "cannot create identities"));
  auto port = loopback_port();
  auto config = *tmp / "host.toml";
  std::ofstream{config} << fmt::format(
    "[host]\ndata_dir = \"{}\"\nlisten = \"127.0.0.1:{}\"\nroles = [\"directory\", \"data_node\"]\n"
    "[peers]\nallow = [\"{}\"]\n",
    host_dir.string(), port, client_id->id().hex());
  host_process host;
  if (auto err = start_host(host, config, *tmp / "host.log"))
    return fail(err);
  client::options co;
  co.data_dir = client_dir;
  auto c = client::start(co);
  if (!c)
    return fail(c.error());
  caf::expected<node_id> linked = make_error(errc::peer_down, "not tried");
  for (int i = 0; i < 100 && !linked; ++i) {
    linked = (*c)->connect(fmt::format("127.0.0.1:{}", port), host_id->id());
    if (!linked)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!linked)
    return fail(linked.error());

  // The dataset: built here, uploaded to the host, also stored in a local
  // store for the ceiling.
  auto t = synthetic(opts.megabytes);
  data::put_options po;
  po.name = "bench";
  auto built = data::build_dataset(*client_id, t, data::transform{}, po);
  if (!built)
    return fail(built.error());
  auto holders = data::upload_dataset(**c, host_id->id(), *built, 1, 8ull << 20,
                                      std::chrono::minutes(5));
  if (!holders)
    return fail(holders.error());
  auto local = store::shared_environment(*tmp / "ceiling");
  if (!local)
    return fail(local.error());
  if (auto err = data::store_dataset(**local, *built))
    return fail(err);
  opened<schema::DatasetManifest> m{built->manifest};
  data::hash256 dataset, job{};
  std::memcpy(dataset.data(), m->getDatasetId().begin(), 32);
  job[0] = 1;
  {
    // The allocator's lease, written into the host's store (LMDB is multi-process).
    auto host_store = store::shared_environment(host_dir);
    if (!host_store)
      return fail(host_store.error());
    if (auto err = data::put_lease(**host_store,
                                   data::lease{job, (*c)->self().id(), dataset, UINT64_MAX}))
      return fail(err);
  }
  auto dst = data::data_node_of(**c, host_id->id());
  if (!dst)
    return fail(dst.error());
  data::replica rep{host_id->id(), *dst, 0};
  auto keys = data::request_keys(**c, rep, (*c)->self(), built->manifest, job);
  if (!keys)
    return fail(keys.error());
  uint64_t share_bytes = 0;
  for (auto& s : built->shares)
    share_bytes += s.size();

  std::printf("# aicon bench data: a trainer pulls %u shares (%.1f MB) from a data node in "
              "another process\n",
              m->getShards().size(), share_bytes / 1e6);
  std::printf("# fetch = FetchShares over mutual TLS on 127.0.0.1 + BLAKE2b verify + "
              "XChaCha20-Poly1305 decrypt into tensors\n");
  std::printf("# ceiling = raw LMDB read + libsodium decrypt of the same shares in one "
              "process; best of %d; %u cores\n",
              opts.rounds, std::thread::hardware_concurrency());
  std::printf("%-8s %12s %14s %7s %9s %16s\n", "credits", "fetch MB/s", "ceiling MB/s", "ratio",
              "exact", "pull-only MB/s");
  std::ofstream csv;
  if (!opts.csv.empty()) {
    csv.open(opts.csv);
    csv << "credits,fetch_mb_s,ceiling_mb_s,ratio,exact,pull_only_mb_s\n";
  }
  int worst = 0;
  for (uint32_t credits : {1u, 2u, 4u}) {
    double best_fetch = 0, best_ceiling = 0, best_pull = 0;
    bool exact = true;
    for (int r = 0; r < opts.rounds; ++r) {
      data::fetch_stats stats;
      auto t0 = clock_type::now();
      auto got = data::fetch_dataset(**c, {rep}, built->manifest, &*keys, credits, stats);
      double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
      if (!got)
        return fail(got.error());
      exact = exact && got->x.size() == t.x.size()
              && std::memcmp(got->x.data(), t.x.data(), t.x.size() * 4) == 0 && got->y == t.y;
      best_fetch = std::max(best_fetch, stats.bytes / secs / 1e6);
      // The same pull without decryption: what the link and the hashing cost.
      data::fetch_stats pull_stats;
      auto p0 = clock_type::now();
      auto pulled = data::fetch_dataset(**c, {rep}, built->manifest, nullptr, credits, pull_stats);
      double psecs = std::chrono::duration<double>(clock_type::now() - p0).count();
      if (!pulled)
        return fail(pulled.error());
      best_pull = std::max(best_pull, pull_stats.bytes / psecs / 1e6);
      auto ceil = ceiling(**local, *built);
      if (!ceil)
        return fail(ceil.error());
      best_ceiling = std::max(best_ceiling, *ceil);
    }
    double ratio = best_ceiling > 0 ? best_fetch / best_ceiling : 0;
    std::printf("%-8u %12.1f %14.1f %7.3f %9s %16.1f%s\n", credits, best_fetch, best_ceiling,
                ratio, exact ? "yes" : "NO", best_pull, ratio < 0.5 ? "  < 0.5" : "");
    std::fflush(stdout);
    if (csv)
      csv << fmt::format("{},{:.1f},{:.1f},{:.4f},{},{:.1f}\n", credits, best_fetch,
                         best_ceiling, ratio, exact, best_pull);
    if (!exact)
      worst = 1;
  }
  return worst;
}

} // namespace aicon::bench
