#include "cli/train_cmd.hpp"

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include <thread>

#include <sodium.h>

#include "actors/data_node/custody.hpp"
#include "actors/data_node/remote.hpp"
#include "actors/job/economy.hpp"
#include "actors/job/job_role.hpp"
#include "actors/trainer/model.hpp"
#include "cli/plot.hpp"
#include "runtime/error.hpp"
#include "schemas/job.capnp.h"
#include "schemas/trainer.capnp.h"

namespace aicon {

namespace {

using namespace std::chrono_literals;

int fail(const caf::error& err) {
  std::fprintf(stderr, "aicon: %s\n", describe(err).c_str());
  return 1;
}

uint64_t wall_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
}

/// The loss curve as CSV and SVG, and the progress line, for a job run here
/// or on a job host.
struct curve {
  const train_cmd_options& o;
  uint64_t steps;
  std::ofstream csv;
  std::vector<double> losses;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now(), last = t0;
  uint64_t first_step = 0;

  curve(const train_cmd_options& opts, uint64_t n) : o(opts), steps(n) {
    if (!o.csv.empty()) {
      csv.open(o.csv);
      csv << "step,loss,samples_per_s,allreduce_ms,trainers\n";
    }
  }

  /// `allreduce_ms` < 0: not known (a job host reports no per-step
  /// allreduce time), left empty in the CSV.
  void add(uint64_t step, double loss, double samples_per_s, double allreduce_ms,
           uint32_t trainers) {
    losses.push_back(loss);
    if (csv)
      csv << fmt::format("{},{:.6f},{:.1f},{},{}\n", step, loss, samples_per_s,
                         allreduce_ms < 0 ? std::string{} : fmt::format("{:.3f}", allreduce_ms),
                         trainers);
    auto now = std::chrono::steady_clock::now();
    if (now - last < 500ms && step + 1 != steps)
      return;
    last = now;
    double secs = std::chrono::duration<double>(now - t0).count();
    double rate = static_cast<double>(step + 1 - first_step) / secs;
    std::string reduce = allreduce_ms < 0 ? "" : fmt::format("  allreduce {:.2f} ms", allreduce_ms);
    std::fprintf(stderr, "\rstep %llu/%llu  loss %.4f  %.0f samples/s%s  %u trainers  ETA %.0f s   ",
                 static_cast<unsigned long long>(step + 1), static_cast<unsigned long long>(steps),
                 loss, samples_per_s, reduce.c_str(), trainers,
                 rate > 0 ? static_cast<double>(steps - step - 1) / rate : 0.0);
  }

  caf::error finish() {
    std::fprintf(stderr, "\n");
    if (o.plot.empty())
      return caf::none;
    if (auto err = write_loss_svg(o.plot, losses))
      return err;
    std::printf("wrote the loss plot to %s\n", o.plot.c_str());
    return caf::none;
  }
};

/// The first host of `o.job.hosts` that runs the job role, if any.
std::optional<node_id> find_job_host(client& c, const std::vector<node_id>& hosts) {
  for (auto& h : hosts)
    if (c.lookup("job@" + h.hex()))
      return h;
  return std::nullopt;
}

/// Submits the job to job host `agent` (unpaid: the trainer hosts list it
/// in their trainer_clients) and follows it to its end; -1 when the job
/// host refuses this client's unpaid jobs (the caller coordinates it).
int run_on_job_host(client& c, const node_id& agent, const train_cmd_options& o,
                    const std::optional<std::array<uint8_t, 32>>& dataset,
                    const std::optional<std::array<uint8_t, 32>>& leases_job) {
  auto ask = [&](envelope req, std::chrono::milliseconds t = 15s) -> caf::expected<envelope> {
    auto dst = c.lookup("job@" + agent.hex());
    if (!dst)
      return dst.error();
    return c.request(*dst, std::move(req), t);
  };
  const auto& jo = o.job;
  std::array<uint8_t, 32> job;
  if (leases_job)
    job = *leases_job; // the job an operator's stored leases are for
  else
    randombytes_buf(job.data(), 32);
  capnp::MallocMessageBuilder mb;
  auto spec = mb.initRoot<schema::JobSpec>();
  fill_job_spec(spec, jo, static_cast<uint32_t>(jo.hosts.size()) * jo.trainers_per_host);
  spec.setStoredLeases(leases_job.has_value());
  auto hosts = spec.initHosts(static_cast<unsigned>(jo.hosts.size()));
  for (unsigned i = 0; i < jo.hosts.size(); ++i)
    hosts.set(i, kj::arrayPtr(jo.hosts[i].bytes.data(), 32));
  auto spares = spec.initSpares(static_cast<unsigned>(jo.spare_hosts.size()));
  for (unsigned i = 0; i < jo.spare_hosts.size(); ++i)
    spares.set(i, kj::arrayPtr(jo.spare_hosts[i].bytes.data(), 32));
  if (auto err = check_job_spec(spec.asReader()))
    return fail(err);
  // On a dataset: this client (its owner) grants its keys to each trainer
  // host, spares included, for this job.
  std::vector<envelope> grants;
  if (dataset && !leases_job) {
    caf::expected<std::array<uint8_t, 32>> chain =
      make_error(errc::not_found, "no data node of --data-connect keeps a chain (ledger role)");
    for (auto& dn : jo.data_nodes) {
      auto ledger = c.lookup("ledger@" + dn.hex());
      if (!ledger)
        continue;
      chain = train::chain_id_of([&](envelope q) { return c.request(*ledger, std::move(q), 10s); });
      if (chain)
        break;
    }
    if (!chain)
      return fail(chain.error());
    for (const auto* list : {&jo.hosts, &jo.spare_hosts})
      for (auto& h : *list)
        grants.push_back(
          data::make_data_grant(c.self(), *chain, job, h, *dataset, wall_ms() + jo.grant_ms));
  }
  auto submitted = ask(sign_job_submit(c.self(), spec.asReader(), job, wall_ms(), grants));
  if (!submitted && code_of(submitted.error()) == errc::forbidden
      && what_of(submitted.error()).find("trainer_clients") != std::string::npos) {
    std::printf("job host %s does not run unpaid jobs for this client (%s); coordinating the "
                "job from here\n",
                agent.short_hex().c_str(), what_of(submitted.error()).c_str());
    return -1;
  }
  if (!submitted && leases_job && code_of(submitted.error()) == errc::already_exists) {
    // The stored leases' job ran on that job host before: run it again here.
    std::printf("job host %s has job %s already (%s); coordinating it again from here\n",
                agent.short_hex().c_str(), to_hex({job.data(), 8}).c_str(),
                what_of(submitted.error()).c_str());
    return -1;
  }
  if (!submitted)
    return fail(submitted.error());
  auto id = to_hex({job.data(), 32});
  std::printf("job %s runs on job host %s (it goes on if this command stops: aicon job wait|"
              "logs|cancel %s --connect <that host>)\n",
              id.c_str(), agent.short_hex().c_str(), id.substr(0, 16).c_str());
  std::fflush(stdout);
  curve cv{o, jo.steps};
  uint64_t posted = 0;
  int misses = 0;
  for (;;) {
    auto r = ask(make_envelope<schema::JobQuery>([&](auto q) {
      q.setLogs(kj::arrayPtr(job.data(), 32));
      q.setSince(UINT32_MAX); // the events at the end
      q.setWithLosses(true);
      q.setLossesSince(static_cast<uint32_t>(std::min<uint64_t>(posted, UINT32_MAX)));
    }));
    if (!r) {
      // A job host that restarts is back within seconds.
      if (++misses < 150) {
        std::this_thread::sleep_for(200ms);
        continue;
      }
      return fail(make_error(code_of(r.error()),
                             fmt::format("job host {} does not answer (the job may go on there): "
                                         "{}",
                                         agent.short_hex(), what_of(r.error()))));
    }
    misses = 0;
    opened<schema::JobInfo> info{*r};
    if (!info)
      return fail(info.error());
    if (info->getLossesFrom() == posted)
      for (auto loss : info->getLosses())
        cv.add(posted++, loss, info->getSamplesPerS(), -1, info->getTrainers());
    std::string phase = info->getPhase();
    if (phase == "done" || phase == "failed" || phase == "cancelled") {
      if (auto err = cv.finish())
        return fail(err);
      auto logs = ask(make_envelope<schema::JobQuery>([&](auto q) {
        q.setLogs(kj::arrayPtr(job.data(), 32));
      }));
      if (logs) {
        opened<schema::JobInfo> all{*logs};
        if (all)
          for (auto e : all->getEvents())
            std::printf("%s\n", e.cStr());
      }
      std::string why = info->getError().cStr();
      if (phase == "failed" && info->getStep() == 0
          && why.find("trainer_clients") != std::string::npos) {
        // The trainer hosts take joins from this client, not from the job
        // host: the job is this client's to coordinate.
        std::printf("the trainer hosts do not take joins from job host %s (%s); coordinating the "
                    "job from here\n",
                    agent.short_hex().c_str(), why.c_str());
        return -1;
      }
      if (phase != "done")
        return fail(make_error(errc::internal, fmt::format("job {} {}: {}", id.substr(0, 16), phase,
                                                           why)));
      if (!o.checkpoint.empty()) {
        auto w = ask(sign_job_weights(c.self(), job, wall_ms()), 60s);
        if (!w)
          return fail(w.error());
        opened<schema::JobWeights> jw{*w};
        if (!jw)
          return fail(jw.error());
        auto cp = train::parse_checkpoint({jw->getCheckpoint().begin(), jw->getCheckpoint().size()},
                                   "the job's checkpoint");
        if (!cp)
          return fail(cp.error());
        if (auto err = train::save_checkpoint(o.checkpoint, *cp))
          return fail(err);
        std::printf("wrote the checkpoint of step %llu to %s\n",
                    static_cast<unsigned long long>(jw->getStep()), o.checkpoint.c_str());
      }
      double secs = info->getFinishedMs() > info->getCreatedMs()
                      ? static_cast<double>(info->getFinishedMs() - info->getCreatedMs()) / 1000
                      : 0;
      train::job_result m;
      m.accuracy = info->getAccuracy();
      m.test_loss = info->getTestLoss();
      m.regression = info->getRegression();
      m.r2 = info->getR2();
      std::printf("trained %llu steps in %.1f s; %s\n",
                  static_cast<unsigned long long>(info->getStep()), secs,
                  train::describe_metrics(m).c_str());
      return 0;
    }
    std::this_thread::sleep_for(200ms);
  }
}

} // namespace

int train_cmd(train_cmd_options o) {
  if (o.connect.empty())
    return fail(make_error(errc::invalid_argument, "--connect host:port is required"));
  if (o.job.data_file.empty() == o.dataset.empty())
    return fail(make_error(errc::invalid_argument, "give either --data FILE or --dataset ID"));
  // The trainers read the file on their hosts: pass an absolute path.
  if (!o.job.data_file.empty())
    o.job.data_file = std::filesystem::absolute(o.job.data_file).string();
  client::options co;
  co.data_dir = o.data_dir;
  co.dev_open = o.dev_open;
  co.threads = 2;
  auto c = client::start(co);
  if (!c)
    return fail(c.error());
  for (auto& addr : o.connect) {
    auto id = (*c)->connect(addr);
    if (!id)
      return fail(id.error());
    o.job.hosts.push_back(*id);
  }
  for (auto& addr : o.spares) {
    auto id = (*c)->connect(addr);
    if (!id)
      return fail(id.error());
    o.job.spare_hosts.push_back(*id);
  }
  std::optional<std::array<uint8_t, 32>> dataset;
  if (!o.dataset.empty()) {
    if (o.data_connect.empty())
      return fail(make_error(errc::invalid_argument, "--dataset needs --data-connect ADDR of its data nodes"));
    for (auto& addr : o.data_connect) {
      auto id = (*c)->connect(addr);
      if (!id)
        return fail(id.error());
      o.job.data_nodes.push_back(*id);
    }
    auto found = data::find_replicas(**c, o.job.data_nodes, o.dataset);
    if (!found)
      return fail(found.error());
    opened<schema::DatasetManifest> m{found->second};
    dataset.emplace();
    std::memcpy(dataset->data(), m->getDatasetId().begin(), 32);
    o.job.dataset = to_hex({m->getDatasetId().begin(), m->getDatasetId().size()});
  }
  std::optional<std::array<uint8_t, 32>> leases_job;
  if (!o.job_hex.empty()) {
    if (!dataset)
      return fail(make_error(errc::invalid_argument,
                             "--job names the job a dataset's stored leases are for: give --dataset"));
    auto job = node_id::from_hex(o.job_hex); // 32 bytes in hex, like a NodeId
    if (!job)
      return fail(make_error(errc::invalid_argument, "--job: " + what_of(job.error())));
    leases_job = job->bytes;
    std::memcpy(o.job.job.data(), job->bytes.data(), 32);
  }
  // A connected job host runs the job (it goes on without this process),
  // unless --local.
  if (!o.local)
    if (auto agent = find_job_host(**c, o.job.hosts))
      if (int rc = run_on_job_host(**c, *agent, o, dataset, leases_job); rc >= 0)
        return rc;
  if (dataset && !leases_job) {
    // Coordinated here on the client's own dataset: its grants (signed by
    // this client, the owner, for a fresh job id) give the trainers the keys.
    o.job.payer = &(*c)->self();
    randombytes_buf(o.job.job.data(), 32);
  }
  if (!o.checkpoint.empty())
    o.job.checkpoint_file = o.checkpoint;
  curve cv{o, o.job.steps};
  auto r = train::run_job(**c, o.job, [&](const train::step_report& s) {
    cv.add(s.step, s.loss, s.samples_per_s, s.allreduce_ms, s.trainers);
  });
  if (!r) {
    std::fprintf(stderr, "\n");
    return fail(r.error());
  }
  if (auto err = cv.finish())
    return fail(err);
  for (auto& e : r->events)
    std::printf("%s\n", e.c_str());
  std::printf("trained %llu steps in %.1f s; %s\n", static_cast<unsigned long long>(r->steps),
              r->seconds, train::describe_metrics(*r).c_str());
  for (auto& line : train::describe_logs(r->logs))
    std::printf("%s\n", line.c_str());
  return 0;
}

} // namespace aicon
