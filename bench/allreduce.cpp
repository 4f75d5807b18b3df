#include "bench/allreduce.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <sodium.h>

#include "actors/job/job.hpp"
#include "actors/trainer/trainer.hpp"
#include "bench/host_process.hpp"
#include "runtime/client.hpp"
#include "runtime/error.hpp"
#include "runtime/temp_dir.hpp"
#include "schemas/trainer.capnp.h"

namespace aicon::bench {

namespace {

std::filesystem::path beside_me(const std::string& name) {
  char exe[4096];
  auto n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0)
    return name;
  exe[n] = '\0';
  return std::filesystem::path{exe}.parent_path() / name;
}

uint64_t parse_size(const std::string& s) {
  uint64_t v = std::stoull(s);
  if (s.find_first_of("kK") != std::string::npos)
    v <<= 10;
  if (s.find_first_of("mM") != std::string::npos)
    v <<= 20;
  return v;
}

std::string human(uint64_t bytes) {
  if (bytes >= (1u << 20))
    return fmt::format("{} MiB", bytes >> 20);
  return fmt::format("{} KiB", bytes >> 10);
}

/// The mesh plus a ring-only session over it.
struct ring_cluster : trainer_mesh {
  std::array<uint8_t, 32> session{};
  std::array<uint8_t, 32> token{}; ///< the session's capability (TrainerJoin.token)
};

/// A fresh ring-only session over the mesh with `transport`; joins retry
/// while the hosts are still linking up.
caf::error join_session(ring_cluster& rc, uint32_t n, const allreduce_options& o,
                        const std::string& transport) {
  randombytes_buf(rc.session.data(), 32);
  randombytes_buf(rc.token.data(), 32);
  std::array<uint8_t, 32> key;
  randombytes_buf(key.data(), 32);
  std::vector<envelope> acks;
  for (uint32_t r = 0; r < n; ++r) {
    caf::expected<envelope> ack = make_error(errc::internal, "not tried");
    for (int t = 0; t < 50 && !ack; ++t) {
      auto join = make_envelope<schema::TrainerJoin>([&](schema::TrainerJoin::Builder b) {
        b.setSession(kj::arrayPtr(rc.session.data(), 32));
        b.setRank(r);
        b.setSize(n);
        b.setRight(kj::arrayPtr(rc.ids[(r + 1) % n].bytes.data(), 32));
        b.setToken(kj::arrayPtr(rc.token.data(), 32));
        auto cfg = b.initConfig();
        cfg.setChunkBytes(o.chunk_bytes);
        cfg.setCredits(o.credits);
        cfg.setRingTimeoutMs(10000);
        cfg.setTransport(*train::parse_transport(transport)); // checked by run_allreduce
        cfg.setLinkKey(kj::arrayPtr(key.data(), 32));
      });
      auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::system_clock::now().time_since_epoch())
                                         .count());
      ack = rc.c->request(rc.roles[r],
                          sign_trainer_join(rc.c->self(), opened<schema::TrainerJoin>{join}.root(), now),
                          std::chrono::seconds(10));
      if (!ack)
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (!ack)
      return ack.error();
    acks.push_back(*ack);
  }
  if (transport != "actor")
    return train::link_streams(*rc.c, rc.session, rc.token, rc.roles, acks);
  return caf::none;
}

/// Ends the session's trainers (each host runs at most trainer_slots).
void drop_session(ring_cluster& rc) {
  for (uint32_t r = 0; r < rc.roles.size(); ++r)
    (void) rc.c->request(rc.roles[r], make_envelope<schema::TrainQuery>([&](auto q) {
                           q.setSession(kj::arrayPtr(rc.session.data(), 32));
                           q.setRank(r);
                           q.setToken(kj::arrayPtr(rc.token.data(), 32));
                           q.setDrop();
                         }),
                         std::chrono::seconds(10));
}

struct cell {
  double micros = 0; ///< median of the slowest rank
  uint64_t wrong = 0;
};

caf::expected<cell> ring_cell(ring_cluster& rc, uint64_t bytes, uint32_t iterations) {
  auto n = static_cast<uint32_t>(rc.roles.size());
  std::vector<std::future<caf::expected<envelope>>> futures;
  for (uint32_t r = 0; r < n; ++r)
    futures.push_back(std::async(std::launch::async, [&, r] {
      auto run = make_envelope<schema::RingRun>([&](schema::RingRun::Builder b) {
        b.setSession(kj::arrayPtr(rc.session.data(), 32));
        b.setRank(r);
        b.setToken(kj::arrayPtr(rc.token.data(), 32));
        b.setFloats(bytes / 4);
        b.setIterations(iterations);
        b.setWarmup(1);
      });
      return rc.c->request(rc.roles[r], std::move(run), std::chrono::minutes(5));
    }));
  cell out;
  for (auto& f : futures) {
    auto reply = f.get();
    if (!reply)
      return reply.error();
    opened<schema::RingTimes> t{*reply};
    if (!t)
      return t.error();
    std::vector<uint64_t> m;
    for (auto v : t->getMicros())
      m.push_back(v);
    std::sort(m.begin(), m.end());
    if (!m.empty())
      out.micros = std::max(out.micros, static_cast<double>(m[m.size() / 2]));
    out.wrong += t->getWrong();
  }
  return out;
}

/// bytes -> median microseconds from aicon-mpi-allreduce under mpirun.
std::map<uint64_t, double> mpi_cells(uint32_t n, const std::vector<uint64_t>& sizes, bool tcp) {
  std::map<uint64_t, double> out;
  auto exe = beside_me("aicon-mpi-allreduce");
  if (!std::filesystem::exists(exe))
    return out;
  std::string cmd = fmt::format("mpirun --allow-run-as-root --oversubscribe -np {} {} {} 10", n,
                                tcp ? "--mca pml ob1 --mca btl tcp,self --mca btl_tcp_if_include lo"
                                    : "",
                                exe.string());
  for (auto s : sizes)
    cmd += " " + std::to_string(s);
  cmd += " 2>/dev/null";
  if (FILE* p = ::popen(cmd.c_str(), "r")) {
    unsigned long long b = 0;
    double us = 0;
    while (std::fscanf(p, "%llu %lf", &b, &us) == 2)
      out[b] = us;
    ::pclose(p);
  }
  return out;
}

} // namespace

void add_allreduce_flags(CLI::App& app, allreduce_options& opts) {
  app.add_option("--ranks", opts.ranks, "process counts (default 2,4)");
  app.add_option("--max-size", opts.max_size, "largest buffer (default 64M)");
  app.add_option("--seconds", opts.seconds, "measuring time per cell, about (default 0.5)");
  app.add_flag("--quick", opts.quick, "tiny run (ctest): 2 ranks up to 64 KiB, no MPI");
  app.add_flag("--no-mpi", opts.no_mpi, "skip the MPI baseline");
  app.add_option("--csv", opts.csv, "also write the table to this CSV file");
  app.add_option("--chunk-bytes", opts.chunk_bytes, "actor ring chunk (default 262144)");
  app.add_option("--credits", opts.credits, "actor ring chunks in flight per link (default 4)");
  app.add_option("--transport", opts.transports,
                 "ring transports to measure, comma-separated (default stream,stream-plain,actor)");
}

int run_allreduce(const allreduce_options& opts_in) {
  auto opts = opts_in;
  if (opts.quick) {
    opts.ranks = "2";
    opts.max_size = "64K";
    opts.seconds = 0.05;
    opts.no_mpi = true;
  }
  auto fail = [](const caf::error& err) {
    std::fprintf(stderr, "bench allreduce: %s\n", describe(err).c_str());
    return 2;
  };
  std::vector<uint32_t> ranks;
  {
    std::stringstream ss{opts.ranks};
    for (std::string part; std::getline(ss, part, ',');)
      ranks.push_back(static_cast<uint32_t>(std::stoul(part)));
  }
  std::vector<uint64_t> sizes;
  for (uint64_t s = 4 << 10; s <= parse_size(opts.max_size); s *= 4)
    sizes.push_back(s);
  bool have_mpi = !opts.no_mpi && std::filesystem::exists(beside_me("aicon-mpi-allreduce"));
  std::vector<std::string> transports;
  {
    std::stringstream ss{opts.transports};
    for (std::string part; std::getline(ss, part, ',');) {
      if (part != "stream" && part != "stream-plain" && part != "actor" && part != "nccl") {
        std::fprintf(stderr,
                     "bench allreduce: --transport: '%s' is not stream, stream-plain, actor or nccl\n",
                     part.c_str());
        return 2;
      }
      transports.push_back(part);
    }
  }
  std::printf("# aicon bench allreduce: float32 sum, ring of trainers (one `aicon host` per rank, "
              "127.0.0.1, chunk %u B)\n",
              opts.chunk_bytes);
  std::printf("# via stream = one direct TCP stream per ring link, authenticated handshake, "
              "AES-128-GCM frames; plain = the same in clear (trusted networks, like MPI/NCCL); "
              "actor = RingChunk messages over the hosts' mutual-TLS links, %u credits\n",
              opts.credits);
  std::printf("# vs MPI_Allreduce (OpenMPI, mpirun on this machine, same run): tcp = btl tcp,self "
              "on lo; shm = its default. %u cores\n",
              std::thread::hardware_concurrency());
  std::printf("# time = median of the slowest rank; busbw = algbw x 2(n-1)/n (nccl-tests)%s\n",
              have_mpi ? "" : "; MPI baseline not run");
  std::printf("%-3s %-7s %-8s %11s %9s %9s %11s %7s %11s %7s %6s\n", "n", "via", "size", "aicon us",
              "algbw", "busbw", "mpi-tcp bw", "ratio", "mpi-shm bw", "ratio", "wrong");
  std::ofstream csv;
  if (!opts.csv.empty()) {
    csv.open(opts.csv);
    csv << "ranks,transport,bytes,aicon_us,algbw_gb_s,busbw_gb_s,mpi_tcp_busbw_gb_s,ratio_tcp,"
           "mpi_shm_busbw_gb_s,ratio_shm,wrong\n";
  }
  int misses = 0;
  uint64_t wrong_total = 0;
  for (auto n : ranks) {
    auto tmp = temp_dir::create("aicon-bench-allreduce");
    if (!tmp)
      return fail(tmp.error());
    std::map<uint64_t, double> tcp, shm;
    if (have_mpi) {
      tcp = mpi_cells(n, sizes, true);
      shm = mpi_cells(n, sizes, false);
    }
    ring_cluster rc;
    if (auto err = start_trainer_mesh(rc, tmp->path(), n))
      return fail(err);
    for (auto& via : transports) {
    if (auto err = join_session(rc, n, opts, via))
      return fail(err);
    for (auto bytes : sizes) {
      auto probe = ring_cell(rc, bytes, 1);
      if (!probe)
        return fail(probe.error());
      auto iterations = static_cast<uint32_t>(
        std::clamp(opts.seconds * 1e6 / std::max(1.0, probe->micros), 3.0, 200.0));
      auto c = ring_cell(rc, bytes, iterations);
      if (!c)
        return fail(c.error());
      double factor = 2.0 * (n - 1) / n;
      double algbw = bytes / c->micros / 1e3; // GB/s
      double busbw = algbw * factor;
      auto bw = [&](std::map<uint64_t, double>& m) {
        auto it = m.find(bytes);
        return it == m.end() ? 0.0 : bytes / it->second / 1e3 * factor;
      };
      double tcp_bw = bw(tcp), shm_bw = bw(shm);
      double r_tcp = tcp_bw > 0 ? busbw / tcp_bw : 0, r_shm = shm_bw > 0 ? busbw / shm_bw : 0;
      bool miss = via == "stream-plain" && tcp_bw > 0 && bytes >= (4u << 20) && r_tcp < 0.8;
      misses += miss ? 1 : 0;
      wrong_total += c->wrong + probe->wrong;
      std::printf("%-3u %-7s %-8s %11.0f %9.3f %9.3f %11.3f %7.2f %11.3f %7.2f %6llu%s\n", n,
                  via == "stream-plain" ? "plain" : via.c_str(), human(bytes).c_str(), c->micros, algbw, busbw, tcp_bw, r_tcp, shm_bw, r_shm,
                  static_cast<unsigned long long>(c->wrong + probe->wrong),
                  miss ? "  < 0.8" : "");
      std::fflush(stdout);
      if (csv)
        csv << fmt::format("{},{},{},{:.1f},{:.4f},{:.4f},{:.4f},{:.3f},{:.4f},{:.3f},{}\n", n, via, bytes,
                           c->micros, algbw, busbw, tcp_bw, r_tcp, shm_bw, r_shm,
                           c->wrong + probe->wrong);
    }
    drop_session(rc);
    }
  }
  std::printf("# %llu wrong elements; target >= 0.8 of MPI over TCP at >= 4 MiB, like for like "
              "(plain: both in clear): %s\n",
              static_cast<unsigned long long>(wrong_total),
              !have_mpi ? "not measured" : misses ? "missed" : "met");
  return wrong_total == 0 ? 0 : 1;
}

} // namespace aicon::bench
