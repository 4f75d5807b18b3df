#include "cli/train_cmd.hpp"

#include <cstdio>
#include <algorithm>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "actors/data_node/remote.hpp"
#include "cli/plot.hpp"
#include "runtime/error.hpp"
#include "schemas/trainer.capnp.h"

namespace aicon {

int train_cmd(train_cmd_options o) {
  auto fail = [](const caf::error& err) {
    std::fprintf(stderr, "aicon: %s\n", describe(err).c_str());
    return 1;
  };
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
  if (!o.dataset.empty()) {
    if (o.data_connect.empty())
      return fail(make_error(errc::invalid_argument, "--dataset needs --data-connect ADDR of its data nodes"));
    auto job = node_id::from_hex(o.job_hex); // 32 bytes in hex, like a NodeId
    if (!job)
      return fail(make_error(errc::invalid_argument, "--job: " + what_of(job.error())));
    std::memcpy(o.job.job.data(), job->bytes.data(), 32);
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
    o.job.dataset = to_hex({m->getDatasetId().begin(), m->getDatasetId().size()});
  }
  if (!o.checkpoint.empty())
    o.job.checkpoint_file = o.checkpoint;
  std::ofstream csv;
  if (!o.csv.empty()) {
    csv.open(o.csv);
    csv << "step,loss,samples_per_s,allreduce_ms,trainers\n";
  }
  auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  auto steps = o.job.steps;
  std::vector<double> losses;
  auto r = train::run_job(**c, o.job, [&](const train::step_report& s) {
    losses.push_back(s.loss);
    if (csv)
      csv << fmt::format("{},{:.6f},{:.1f},{:.3f},{}\n", s.step, s.loss, s.samples_per_s,
                         s.allreduce_ms, s.trainers);
    auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::milliseconds(500) && s.step + 1 != steps)
      return;
    last = now;
    double secs = std::chrono::duration<double>(now - t0).count();
    double rate = (s.step + 1) / secs;
    std::fprintf(stderr, "\rstep %llu/%llu  loss %.4f  %.0f samples/s  allreduce %.2f ms  %u trainers  ETA %.0f s   ",
                 static_cast<unsigned long long>(s.step + 1),
                 static_cast<unsigned long long>(steps), s.loss, s.samples_per_s, s.allreduce_ms,
                 s.trainers, rate > 0 ? (steps - s.step - 1) / rate : 0.0);
  });
  std::fprintf(stderr, "\n");
  if (!r)
    return fail(r.error());
  for (auto& e : r->events)
    std::printf("%s\n", e.c_str());
  if (!o.plot.empty()) {
    if (auto err = write_loss_svg(o.plot, losses))
      return fail(err);
    std::printf("wrote the loss plot to %s\n", o.plot.c_str());
  }
  std::printf("trained %llu steps in %.1f s; held-out accuracy %.4f, loss %.4f\n",
              static_cast<unsigned long long>(r->steps), r->seconds, r->accuracy, r->test_loss);
  for (auto& env : r->logs) {
    opened<schema::SessionLog> l{env};
    if (l)
      std::printf("work log rank %u: %llu steps, root %s, signed by %s\n", l->getRank(),
                  static_cast<unsigned long long>(l->getSteps()),
                  to_hex({l->getLogRoot().begin(), l->getLogRoot().size()}).substr(0, 16).c_str(),
                  to_hex({l->getTrainer().begin(), l->getTrainer().size()}).substr(0, 8).c_str());
  }
  return 0;
}

} // namespace aicon
