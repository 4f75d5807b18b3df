#include "cli/job_cmd.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string_view>
#include <thread>

#include <fmt/format.h>
#include <sodium.h>

#include "actors/data_node/ingest.hpp"
#include "actors/data_node/remote.hpp"
#include "actors/job/economy.hpp"
#include "actors/job/job_role.hpp"
#include "actors/ledger/state.hpp"
#include "actors/trainer/model.hpp"
#include "transport/transport.hpp"
#include "runtime/client.hpp"
#include "runtime/error.hpp"
#include "schemas/chain.capnp.h"
#include "schemas/data.capnp.h"
#include "schemas/job.capnp.h"

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

/// A client linked to the job host.
struct session {
  std::unique_ptr<client> c;
  node_id host;
  std::string address;

  static caf::expected<session> open(const job_cmd_options& o) {
    if (o.connect.empty())
      return make_error(errc::invalid_argument, "--connect host:port (the job host) is required");
    client::options co;
    co.data_dir = o.data_dir;
    co.dev_open = o.dev_open;
    co.threads = 2;
    auto c = client::start(co);
    if (!c)
      return c.error();
    std::optional<node_id> expected;
    if (!o.node.empty()) {
      auto id = node_id::from_hex(o.node);
      if (!id)
        return make_error(errc::invalid_argument, "--node: " + what_of(id.error()));
      expected = *id;
    }
    auto id = (*c)->connect(o.connect, expected);
    if (!id)
      return id.error();
    return session{std::move(*c), *id, o.connect};
  }

  caf::expected<envelope> ask(const std::string& role, envelope req,
                              std::chrono::milliseconds t = 15s) {
    auto dst = c->lookup(role + "@" + host.hex());
    if (!dst)
      return dst.error();
    return c->request(*dst, std::move(req), t);
  }

  caf::expected<envelope> query(const std::function<void(schema::JobQuery::Builder)>& f) {
    return ask("job", make_envelope<schema::JobQuery>(f));
  }

  /// A watcher's query (wait, logs --follow): rides out a job host that
  /// restarts or a link that drops, for up to two minutes, saying so.
  caf::expected<envelope> watch_query(const std::function<void(schema::JobQuery::Builder)>& f) {
    bool said = false;
    return c->watch(address, host, "job", make_envelope<schema::JobQuery>(f), 15s, 120s,
                    [&](const caf::error& e) {
                      if (!said)
                        std::fprintf(stderr, "\naicon: the job host does not answer (%s): "
                                             "linking again\n",
                                     describe(e).c_str());
                      said = true;
                    });
  }

  /// The job named by `prefix` (hex): its full id, from the host's list.
  caf::expected<std::array<uint8_t, 32>> job_id(const std::string& prefix) {
    if (prefix.size() < 8 || prefix.size() > 64 || prefix.size() % 2
        || prefix.find_first_not_of("0123456789abcdef") != std::string::npos)
      return make_error(errc::invalid_argument,
                        fmt::format("job id '{}': give 8 to 64 hex digits (an even count)", prefix));
    std::vector<uint8_t> bytes;
    for (size_t i = 0; i < prefix.size(); i += 2)
      bytes.push_back(static_cast<uint8_t>(std::stoi(prefix.substr(i, 2), nullptr, 16)));
    auto r = query([&](auto q) { q.setStatus(kj::arrayPtr(bytes.data(), bytes.size())); });
    if (!r)
      return r.error();
    opened<schema::JobInfo> info{*r};
    if (!info)
      return info.error();
    std::array<uint8_t, 32> id;
    std::memcpy(id.data(), info->getJobId().begin(), 32);
    return id;
  }

  /// Submits `make(nonce)` (the client's key) and waits until it is final.
  caf::error tx(const std::function<envelope(uint64_t)>& make) {
    auto acct = ask("ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                      q.setAccount(kj::arrayPtr(c->self().id().bytes.data(), 32));
                    }));
    if (!acct)
      return acct.error();
    auto nonce = opened<schema::AccountInfo>{*acct}->getNonce() + 1;
    auto ack = ask("block_generator", make(nonce));
    if (!ack)
      return ack.error();
    for (int i = 0; i < 600; ++i) {
      auto a = ask("ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                     q.setAccount(kj::arrayPtr(c->self().id().bytes.data(), 32));
                   }));
      if (a && opened<schema::AccountInfo>{*a}->getNonce() >= nonce)
        return caf::none;
      std::this_thread::sleep_for(100ms);
    }
    return make_error(errc::timeout,
                      fmt::format("transaction {} was not final within 60 s", nonce));
  }
};

void print_info(schema::JobInfo::Reader j) {
  std::printf("job       %s\n", to_hex({j.getJobId().begin(), j.getJobId().size()}).c_str());
  std::printf("phase     %s%s%s\n", j.getPhase().cStr(), j.getError().size() ? ": " : "",
              j.getError().cStr());
  std::printf("model     %s, %u trainers\n", j.getModel().cStr(), j.getTrainers());
  std::printf("progress  step %llu/%llu, loss %.4f, %.0f samples/s\n",
              static_cast<unsigned long long>(j.getStep()),
              static_cast<unsigned long long>(j.getSteps()), j.getLoss(), j.getSamplesPerS());
  if (j.getBudget() > 0)
    std::printf("budget    %llu: trainers paid %llu, refunded %llu\n",
                static_cast<unsigned long long>(j.getBudget()),
                static_cast<unsigned long long>(j.getPaidTrainers()),
                static_cast<unsigned long long>(j.getRefunded()));
  if (j.getVerified().size())
    std::printf("verified  %s\n", j.getVerified().cStr());
  if (j.getRegression() && (j.getPhase() == "done" || j.getPhase() == "cancelled"))
    std::printf("r2        %.4f (mean squared error %.4f)%s\n", j.getR2(), j.getTestLoss(),
                j.getPhase() == "done" ? "" : " at the step it was cancelled");
  else if (j.getPhase() == "done" || (j.getPhase() == "cancelled" && j.getAccuracy() > 0))
    std::printf("accuracy  %.4f (test loss %.4f)%s\n", j.getAccuracy(), j.getTestLoss(),
                j.getPhase() == "done" ? "" : " at the step it was cancelled");
  if (j.getModelAsset().size() == 32)
    std::printf("asset     %s (the trained model), owned by the payer\n",
                to_hex({j.getModelAsset().begin(), 32}).c_str());
}

/// The session to the job host and the full id of the job `o.job` names.
caf::expected<std::pair<session, std::array<uint8_t, 32>>> open_job(const job_cmd_options& o) {
  auto s = session::open(o);
  if (!s)
    return s.error();
  auto id = s->job_id(o.job);
  if (!id)
    return id.error();
  return std::make_pair(std::move(*s), *id);
}

} // namespace

int job_submit(const job_cmd_options& o) {
  auto s = session::open(o);
  if (!s)
    return fail(s.error());
  if (o.dataset.empty() == o.data.empty())
    return fail(make_error(errc::invalid_argument, "give --dataset ID or --data FILE"));
  if ((o.steps > 0) == (o.epochs > 0))
    return fail(make_error(errc::invalid_argument, "give --steps N or --epochs E"));
  std::array<uint8_t, 32> job;
  randombytes_buf(job.data(), 32);
  std::optional<std::array<uint8_t, 32>> dataset;
  uint64_t rows = 0, dataset_price = 0;
  if (!o.dataset.empty()) {
    auto found = data::find_replicas(*s->c, {s->host}, o.dataset);
    if (!found)
      return fail(found.error());
    opened<schema::DatasetManifest> m{found->second};
    dataset.emplace();
    std::memcpy(dataset->data(), m->getDatasetId().begin(), 32);
    rows = m->getRows();
    dataset_price = m->getPrice();
  }
  auto steps = o.steps;
  auto holdout = static_cast<uint32_t>(o.holdout * 100 + 0.5);
  if (o.budget > 0 && o.epochs > 0) {
    // The escrow's terms need the job's length: epochs as steps here.
    if (!dataset) {
      data::csv_options csv;
      auto t = data::read_any(o.data, std::nullopt, csv, std::nullopt);
      if (!t)
        return fail(t.error());
      rows = t->rows;
    }
    auto train_rows = rows - rows * holdout / 100;
    steps = std::max<uint64_t>(1, static_cast<uint64_t>(o.epochs * static_cast<double>(train_rows)
                                                        / o.batch));
  }
  capnp::MallocMessageBuilder mb;
  auto spec = mb.initRoot<schema::JobSpec>();
  spec.setModel(o.model);
  if (dataset)
    spec.setDataset(kj::arrayPtr(dataset->data(), 32));
  else
    spec.setDataFile(std::filesystem::absolute(o.data).string());
  spec.setTrainers(o.trainers);
  spec.setSteps(steps);
  if (steps == 0)
    spec.setEpochs(o.epochs);
  spec.setBatch(o.batch);
  spec.setLr(o.lr);
  spec.setMomentum(o.momentum);
  spec.setOptimizer(o.optimizer == "adamw" ? schema::Optimizer::ADAMW : schema::Optimizer::SGD);
  spec.setHoldoutPercent(holdout);
  spec.setSeed(o.seed);
  auto transport = train::parse_transport(o.transport);
  if (!transport)
    return fail(make_error(errc::invalid_argument,
                           fmt::format("--transport '{}': use {}", o.transport, train::transport_names)));
  spec.setTransport(*transport);
  spec.setBudget(o.budget);
  spec.setPriority(o.priority);
  spec.setVerify(o.verify);
  if (auto err = check_job_spec(spec.asReader()))
    return fail(err);
  if (o.budget > 0) {
    uint64_t units = uint64_t{o.trainers} * steps;
    if (o.budget <= dataset_price || (o.budget - dataset_price) / units == 0)
      return fail(make_error(errc::invalid_argument,
                             fmt::format("insufficient budget: {} does not pay the dataset's "
                                         "price {} and {} trainers x {} steps at 1 or more",
                                         o.budget, dataset_price, o.trainers, steps)));
    train::agent_terms terms;
    terms.agent = s->host;
    terms.max_price = (o.budget - dataset_price) / units;
    terms.units = units;
    terms.deadline_ms = wall_ms() + o.deadline_s * 1000;
    if (dataset)
      terms.assets.push_back(*dataset);
    {
      train::job_options mo;
      mo.model = o.model;
      terms.assets.push_back(train::model_asset_of(mo)); // its owner, if registered, is paid its price
    }
    auto chain = train::chain_id_of([&](envelope q) { return s->ask("ledger", std::move(q)); });
    if (!chain)
      return fail(chain.error());
    if (auto err = s->tx([&](uint64_t n) {
          return train::make_escrow_lock(s->c->self(), *chain, n, job, o.budget, terms);
        }))
      return fail(err);
    std::printf("escrow    %llu locked for job %s: agent %s may pay trainers at most %llu x "
                "%llu units, settle by %llu\n",
                static_cast<unsigned long long>(o.budget), to_hex({job.data(), 8}).c_str(),
                s->host.short_hex().c_str(), static_cast<unsigned long long>(terms.max_price),
                static_cast<unsigned long long>(units),
                static_cast<unsigned long long>(terms.deadline_ms));
  }
  auto r = s->ask("job", sign_job_submit(s->c->self(), spec.asReader(), job, wall_ms()));
  if (!r)
    return fail(r.error());
  std::printf("submitted to job host %s; follow it with aicon job wait|logs|status ID\n",
              s->host.short_hex().c_str());
  std::printf("%s\n", to_hex({job.data(), 32}).c_str());
  return 0;
}

int job_ls(const job_cmd_options& o) {
  auto s = session::open(o);
  if (!s)
    return fail(s.error());
  auto r = s->query([](auto q) { q.setList(); });
  if (!r)
    return fail(r.error());
  opened<schema::JobList> l{*r};
  if (!l)
    return fail(l.error());
  std::printf("%-16s %-10s %-14s %-16s %8s %9s\n", "JOB", "PHASE", "STEP", "MODEL", "BUDGET",
              "ACCURACY");
  for (auto j : l->getJobs())
    std::printf("%-16s %-10s %6llu/%-7llu %-16s %8llu %9.4f\n",
                to_hex({j.getJobId().begin(), 8}).c_str(), j.getPhase().cStr(),
                static_cast<unsigned long long>(j.getStep()),
                static_cast<unsigned long long>(j.getSteps()), j.getModel().cStr(),
                static_cast<unsigned long long>(j.getBudget()), j.getAccuracy());
  return 0;
}

int job_status(const job_cmd_options& o) {
  auto opened_job = open_job(o);
  if (!opened_job)
    return fail(opened_job.error());
  auto& s = opened_job->first;
  auto& id = opened_job->second;
  auto r = s.query([&](auto q) { q.setStatus(kj::arrayPtr(id.data(), 32)); });
  if (!r)
    return fail(r.error());
  print_info(opened<schema::JobInfo>{*r}.root());
  return 0;
}

int job_logs(const job_cmd_options& o) {
  auto opened_job = open_job(o);
  if (!opened_job)
    return fail(opened_job.error());
  auto& s = opened_job->first;
  auto& id = opened_job->second;
  uint32_t since = 0;
  for (;;) {
    auto r = s.watch_query([&](auto q) {
      q.setLogs(kj::arrayPtr(id.data(), 32));
      q.setSince(since);
    });
    if (!r)
      return fail(r.error());
    opened<schema::JobInfo> j{*r};
    for (auto e : j->getEvents())
      std::printf("%s\n", e.cStr());
    std::fflush(stdout);
    since += j->getEvents().size();
    std::string phase = j->getPhase();
    if (!o.follow || phase == "done" || phase == "failed" || phase == "cancelled")
      return 0;
    std::this_thread::sleep_for(500ms);
  }
}

int job_wait(const job_cmd_options& o) {
  auto opened_job = open_job(o);
  if (!opened_job)
    return fail(opened_job.error());
  auto& s = opened_job->first;
  auto& id = opened_job->second;
  auto t0 = std::chrono::steady_clock::now();
  uint64_t first_step = UINT64_MAX;
  for (;;) {
    auto r = s.watch_query([&](auto q) { q.setStatus(kj::arrayPtr(id.data(), 32)); });
    if (!r)
      return fail(r.error());
    opened<schema::JobInfo> j{*r};
    std::string phase = j->getPhase();
    if (phase == "done" || phase == "failed" || phase == "cancelled") {
      std::fprintf(stderr, "\n");
      print_info(j.root());
      return phase == "done" ? 0 : 1;
    }
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (first_step == UINT64_MAX && j->getStep() > 0)
      first_step = j->getStep();
    double rate = first_step != UINT64_MAX && elapsed > 0
                    ? static_cast<double>(j->getStep() - first_step) / elapsed
                    : 0;
    double eta = rate > 0 ? static_cast<double>(j->getSteps() - j->getStep()) / rate : 0;
    std::fprintf(stderr, "\r%-9s step %llu/%llu  loss %.4f  %.1f steps/s  ETA %.0f s   ",
                 phase.c_str(), static_cast<unsigned long long>(j->getStep()),
                 static_cast<unsigned long long>(j->getSteps()), j->getLoss(), rate, eta);
    if (o.timeout_s > 0 && elapsed > o.timeout_s)
      return fail(make_error(errc::timeout, fmt::format("job still {} after {:.0f} s", phase,
                                                        o.timeout_s)));
    std::this_thread::sleep_for(500ms);
  }
}

int job_cancel(const job_cmd_options& o) {
  auto opened_job = open_job(o);
  if (!opened_job)
    return fail(opened_job.error());
  auto& s = opened_job->first;
  auto& id = opened_job->second;
  auto r = s.ask("job", sign_job_cancel(s.c->self(), id, wall_ms()));
  if (!r)
    return fail(r.error());
  std::printf("cancel asked: the job stops after its current step; with a budget, the escrow "
              "is refunded\n");
  return 0;
}

int job_fetch(const job_cmd_options& o) {
  if (o.out.empty() && o.torchscript.empty())
    return fail(make_error(errc::invalid_argument,
                           "give --out FILE (the checkpoint) or --torchscript FILE.pt, or both"));
  auto opened_job = open_job(o);
  if (!opened_job)
    return fail(opened_job.error());
  auto& s = opened_job->first;
  auto& id = opened_job->second;
  auto r = s.ask("job", sign_job_weights(s.c->self(), id, wall_ms()), 60s);
  if (!r)
    return fail(r.error());
  opened<schema::JobWeights> w{*r};
  if (!w)
    return fail(w.error());
  auto bytes = w->getCheckpoint();
  auto torchscript = w->getTorchscript();
  if (!o.torchscript.empty() && torchscript.size() == 0)
    return fail(make_error(errc::not_found,
                           fmt::format("--torchscript: job {} on {} has no TorchScript file (only "
                                       "jobs on a model asset, torch:<id>, do): export the "
                                       "checkpoint with aicon model export",
                                       to_hex({id.data(), 8}), w->getModel().cStr())));
  // The files must be what the chain registered as the payer's trained
  // model: a job host cannot hand over other weights than it registered.
  // The registration itself is read from the chain (a ledger), not taken
  // from the job host's answer.
  std::string asked = "the job host's own ledger";
  if (w->getModelAsset().size() == 32) {
    auto query = make_envelope<schema::LedgerQuery>([&](auto q) { q.setAsset(w->getModelAsset()); });
    caf::expected<envelope> info = make_error(errc::internal, "no ledger asked");
    if (o.ledger.empty()) {
      info = s.ask("ledger", query);
    } else {
      // Another chain host's copy of the chain: a job host cannot answer
      // for the chain itself.
      auto other = s.c->connect(o.ledger);
      if (!other)
        return fail(other.error());
      auto dst = s.c->lookup("ledger@" + other->hex());
      if (!dst)
        return fail(make_error(code_of(dst.error()),
                               fmt::format("--ledger {}: {}", o.ledger, what_of(dst.error()))));
      info = s.c->request(*dst, query, 15s);
      asked = fmt::format("the ledger of {} ({})", o.ledger, other->short_hex());
    }
    if (!info)
      return fail(make_error(code_of(info.error()),
                             "the trained-model asset on the chain: " + what_of(info.error())));
    if (auto err = check_job_weights(*r, *info, s.c->self().id()))
      return fail(err);
  }
  auto cp = train::parse_checkpoint({bytes.begin(), bytes.size()}, "the job's checkpoint");
  if (!cp)
    return fail(cp.error());
  auto checked_text = w->getModelAsset().size() == 32
                        ? ", matching its trained-model asset on the chain (asked of " + asked + ")"
                        : std::string{"; not checked: no trained-model asset is registered for it"};
  const char* checked = checked_text.c_str();
  if (!o.out.empty()) {
    if (auto err = train::save_checkpoint(o.out, *cp))
      return fail(err);
    std::printf("wrote %s: the weights of job %s at step %llu (%s)%s\n", o.out.c_str(),
                to_hex({id.data(), 8}).c_str(), static_cast<unsigned long long>(w->getStep()),
                w->getModel().cStr(), checked);
  }
  if (!o.torchscript.empty()) {
    if (auto err = write_file_atomic(o.torchscript, {reinterpret_cast<const char*>(torchscript.begin()), torchscript.size()}, 0644))
      return fail(err);
    std::printf("wrote %s: job %s's trained model as TorchScript (torch.jit.load reads it)%s\n",
                o.torchscript.c_str(), to_hex({id.data(), 8}).c_str(), checked);
  } else if (auto spec = train::parse_spec(w->getModel().cStr()); spec && spec->kind == "torch") {
    if (torchscript.size() > 0)
      std::printf("as TorchScript: aicon job fetch %s --torchscript trained.pt\n",
                  to_hex({id.data(), 8}).c_str());
    else
      std::printf("as TorchScript: aicon model export --model %s --checkpoint %s --out trained.pt\n",
                  w->getModel().cStr(), o.out.c_str());
  }
  return 0;
}

} // namespace aicon
