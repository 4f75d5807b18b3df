#include "bench/allocator.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>

#include <fmt/format.h>

#include "actors/allocator/pool.hpp"
#include "actors/trainer/model.hpp"

namespace aicon::bench {

namespace {

using clock_type = std::chrono::steady_clock;

struct timing {
  double per_s = 0, p50_us = 0, p99_us = 0;
};

timing summarize(std::vector<double>& us, double total_s) {
  std::sort(us.begin(), us.end());
  timing t;
  t.per_s = static_cast<double>(us.size()) / total_s;
  t.p50_us = us[us.size() / 2];
  t.p99_us = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  return t;
}

} // namespace

void add_allocator_flags(CLI::App& app, allocator_options& opts) {
  app.add_option("--offers", opts.offers, "registered offers (default 100000)");
  app.add_option("--sites", opts.sites, "sites they are spread over (default 32)");
  app.add_option("--decisions", opts.decisions, "decisions timed (default 20000)");
  app.add_option("--k", opts.k, "trainers per ask (default 4)");
  app.add_flag("--quick", opts.quick, "tiny run (ctest)");
  app.add_option("--csv", opts.csv, "also write the table to this CSV file");
}

int run_allocator(const allocator_options& in) {
  auto opts = in;
  if (opts.quick) {
    opts.offers = 2000;
    opts.decisions = 500;
  }
  train::rng gen{2026};
  alloc::pool pool;
  std::vector<std::string> sites;
  for (uint32_t s = 0; s < opts.sites; ++s)
    sites.push_back(fmt::format("site{}", s));
  std::vector<std::string> data_sites{"site0", "site7", "site19", "elsewhere"};
  for (auto& s : sites)
    for (auto& d : data_sites)
      pool.set_rtt(s, d, 1 + gen.uniform() * 80);
  for (uint32_t i = 0; i < opts.offers; ++i) {
    alloc::offer o;
    for (int b = 0; b < 4; ++b)
      o.trainer.bytes[b] = static_cast<uint8_t>(i >> (8 * b));
    o.trainer.bytes[31] = 1;
    o.device = gen.uniform() < 0.7 ? "cpu" : (gen.uniform() < 0.5 ? "gpu:h100" : "gpu:a100");
    o.slots = 1 + static_cast<uint32_t>(gen.uniform() * 8);
    o.memory = (4ull + static_cast<uint64_t>(gen.uniform() * 76)) << 30;
    o.price = 1 + static_cast<uint64_t>(gen.uniform() * 1000);
    o.rating = gen.uniform();
    o.site = sites[static_cast<size_t>(gen.uniform() * sites.size())];
    o.expires_ms = INT64_MAX;
    if (auto err = pool.put_offer(o); !err.empty()) {
      std::fprintf(stderr, "bench allocator: %s\n", err.c_str());
      return 2;
    }
  }
  // The asks: a mix of devices, memory floors, price caps and data sites.
  std::vector<alloc::ask> asks;
  for (uint32_t i = 0; i < opts.decisions; ++i) {
    alloc::ask a;
    for (int b = 0; b < 4; ++b)
      a.job[b] = static_cast<uint8_t>(i >> (8 * b));
    a.k = opts.k;
    double r = gen.uniform();
    a.device = r < 0.6 ? "cpu" : (r < 0.85 ? "gpu:h100" : "gpu:a100");
    a.memory = static_cast<uint64_t>(gen.uniform() * 48) << 30;
    a.max_price = 200 + static_cast<uint64_t>(gen.uniform() * 800);
    a.data_site = data_sites[static_cast<size_t>(gen.uniform() * data_sites.size())];
    asks.push_back(a);
  }
  std::printf("# aicon bench allocator: %u offers over %u sites (3 device kinds, 1-8 slots, "
              "random memory/price/rating), %u asks of k=%u, in process\n",
              opts.offers, opts.sites, opts.decisions, opts.k);
  std::printf("# decision = pool::allocate (indexed gang choice + grant) and release; baseline = "
              "a linear scan over every offer choosing the same trainers\n");

  // Indexed: allocate, then release (the pool stays at full size).
  std::vector<double> idx_us;
  size_t differ = 0, granted = 0;
  auto t0 = clock_type::now();
  for (auto& a : asks) {
    auto s = clock_type::now();
    auto d = pool.allocate(a, 0);
    idx_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - s).count());
    granted += d.what == alloc::decision::kind::granted ? 1 : 0;
    pool.release(a.job, 0);
  }
  double idx_total = std::chrono::duration<double>(clock_type::now() - t0).count();

  // The scan, on the same pool and asks (at most 2,000: it is slow).
  std::vector<double> scan_us;
  auto scan_n = std::min<size_t>(asks.size(), 2000);
  auto t1 = clock_type::now();
  for (size_t i = 0; i < scan_n; ++i) {
    auto s = clock_type::now();
    auto picks = pool.choose_by_scan(asks[i], 0);
    scan_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - s).count());
    // The same choice as the index?
    auto d = pool.allocate(asks[i], 0);
    bool same = d.leases.size() == picks.size();
    for (size_t j = 0; same && j < picks.size(); ++j)
      same = d.leases[j].trainer == picks[j].first && d.leases[j].count == picks[j].second;
    differ += same ? 0 : 1;
    pool.release(asks[i].job, 0);
  }
  double scan_total = std::chrono::duration<double>(clock_type::now() - t1).count();
  // The scan's loop also ran allocate+release for the comparison: take it out.
  double scan_only = 0;
  for (auto v : scan_us)
    scan_only += v / 1e6;
  (void)scan_total;

  auto ti = summarize(idx_us, idx_total);
  auto ts = summarize(scan_us, scan_only);
  std::printf("%-10s %12s %10s %10s %9s\n", "method", "decisions/s", "p50 us", "p99 us", "ratio");
  std::printf("%-10s %12.0f %10.2f %10.2f %9.1f\n", "indexed", ti.per_s, ti.p50_us, ti.p99_us,
              ti.per_s / ts.per_s);
  std::printf("%-10s %12.0f %10.2f %10.2f %9.1f\n", "scan", ts.per_s, ts.p50_us, ts.p99_us, 1.0);
  bool met = ti.per_s >= 50000 && ti.p99_us < 1000;
  std::printf("# %zu of %zu asks granted; %zu of %zu choices differ from the scan; target >= "
              "50000 decisions/s and p99 < 1 ms: %s\n",
              granted, asks.size(), differ, scan_n, met ? "met" : "missed");
  if (!opts.csv.empty()) {
    std::ofstream csv{opts.csv};
    csv << "method,decisions_per_s,p50_us,p99_us\n";
    csv << fmt::format("indexed,{:.0f},{:.2f},{:.2f}\n", ti.per_s, ti.p50_us, ti.p99_us);
    csv << fmt::format("scan,{:.0f},{:.2f},{:.2f}\n", ts.per_s, ts.p50_us, ts.p99_us);
  }
  return differ == 0 ? 0 : 1;
}

} // namespace aicon::bench
