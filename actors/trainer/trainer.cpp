#include "actors/trainer/trainer.hpp"
#include "transport/transport.hpp"

#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <set>

#include <malloc.h>
#include <unistd.h>

#include <caf/all.hpp>
#include <sodium.h>
#include <fmt/format.h>

#include "actors/data_node/ingest.hpp"
#include "actors/data_node/model_store.hpp"
#include "actors/data_node/remote.hpp"
#include "runtime/directory.hpp"
#include "actors/ledger/hashing.hpp"
#include "actors/ledger/work.hpp"
#include "schemas/chain.capnp.h"
#include "actors/allocator/allocator.hpp"
#include "actors/trainer/evidence.hpp"
#include "actors/trainer/model.hpp"
#include "actors/trainer/torch_model.hpp"
#include "actors/trainer/work.hpp"
#include "transport/ring_reducer.hpp"
#include "transport/stream_ring.hpp"
#include "gpu/device.hpp"
#include "gpu/nccl_reducer.hpp"
#include "runtime/log.hpp"
#include "runtime/role.hpp"
#include "schemas/trainer.capnp.h"

namespace aicon {

namespace {

using clock_type = std::chrono::steady_clock;
using ledger::hash256;
using session_key = std::pair<train::ring_id, uint32_t>;
using drop_atom = caf::atom_constant<caf::atom("trdrop")>;
using offer_atom = caf::atom_constant<caf::atom("troffer")>;
using run_atom = caf::atom_constant<caf::atom("trrun")>;

int64_t wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
           std::chrono::system_clock::now().time_since_epoch())
    .count();
}

/// Samples/s of one trainer on the reference model (mlp:64-64-10, batch 64
/// of random rows), measured for about 100 ms: what an offer advertises.
double reference_speed() {
  auto spec = train::parse_spec("mlp:64-64-10");
  auto m = train::model::init(*spec, 1);
  train::rng gen{3};
  std::vector<float> x(64 * 64);
  std::vector<int32_t> y(64);
  for (auto& v : x)
    v = static_cast<float>(gen.uniform() * 2 - 1);
  for (size_t i = 0; i < y.size(); ++i)
    y[i] = static_cast<int32_t>(i % 10);
  std::vector<float> grad(m.params().size());
  auto t0 = clock_type::now();
  uint64_t rows = 0;
  while (clock_type::now() - t0 < std::chrono::milliseconds(100)) {
    m.accumulate_gradient(x.data(), y.data(), 64, 1.0f / 64, grad);
    rows += 64;
  }
  return static_cast<double>(rows)
         / std::chrono::duration<double>(clock_type::now() - t0).count();
}

uint64_t us_since(clock_type::time_point t0) {
  return static_cast<uint64_t>(
    std::chrono::duration_cast<std::chrono::microseconds>(clock_type::now() - t0).count());
}

caf::expected<train::ring_id> session_of(capnp::Data::Reader d) {
  if (d.size() != 32)
    return make_error(errc::invalid_argument, "session must be 32 bytes");
  train::ring_id id;
  std::memcpy(id.data(), d.begin(), 32);
  return id;
}

using train::split_data;

/// The dataset of `cfg` pulled from its data nodes through this host's
/// directory: nearest replica, keys sealed to this host's key under the
/// job's lease or grant, every share verified.
caf::expected<data::table> fetch_from_data_nodes(caf::actor_system& sys, const role_context& ctx,
                                                 schema::TrainConfig::Reader cfg) {
  if (cfg.getJob().size() != 32)
    return make_error(errc::invalid_argument, "TrainConfig.job must be 32 bytes with a dataset");
  std::vector<node_id> nodes;
  for (auto n : cfg.getDataNodes())
    if (auto id = node_id::from_bytes({n.begin(), n.size()}))
      nodes.push_back(*id);
  hash256 job;
  std::memcpy(job.data(), cfg.getJob().begin(), 32);
  std::optional<envelope> grant;
  if (cfg.hasDataGrant())
    grant = copy_envelope<schema::DataGrant>(cfg.getDataGrant());
  return data::fetch_for_job(data::host_requester(sys, ctx), *ctx.self, nodes,
                             to_hex({cfg.getDataset().begin(), cfg.getDataset().size()}), job,
                             grant ? &*grant : nullptr);
}

caf::expected<split_data> load_split(caf::actor_system& sys, const role_context& ctx,
                                     schema::TrainConfig::Reader cfg, bool regression) {
  caf::expected<data::table> t = make_error(errc::internal, "no data");
  if (cfg.getDataset().size() > 0) {
    if (regression)
      return make_error(errc::invalid_argument,
                        "a regression model (one output column) trains on a data file's float "
                        "targets; datasets on data nodes carry class labels only");
    t = fetch_from_data_nodes(sys, ctx, cfg);
  } else {
    data::csv_options csv;
    csv.targets = regression;
    t = data::read_any(cfg.getDataFile().cStr(), std::nullopt, csv, std::nullopt);
    if (t && cfg.getStandardize())
      data::fit_and_apply(*t, data::transform::kind::standardize);
  }
  if (!t)
    return t.error();
  if (t->y.empty())
    return make_error(errc::invalid_argument, "training needs labels; the data has none");
  if (cfg.getTestPercent() >= 100)
    return make_error(errc::invalid_argument, "testPercent must be below 100");
  return train::split_rows(*t, cfg.getTestPercent(), cfg.getSplitSeed());
}

// ---- One trainer -------------------------------------------------------------

/// Where a host's trainers keep their sessions' evidence files: evidence/
/// in its data dir (a temporary directory of the process for a host
/// without one).
std::filesystem::path evidence_dir(const role_context& ctx) {
  if (!ctx.data_dir.empty())
    return ctx.data_dir / "evidence";
  return std::filesystem::temp_directory_path()
         / fmt::format("aicon-evidence-{}-{}", ::getpid(), ctx.self->id().short_hex());
}

/// Fault injection ([faults] trainer_hide_evidence): a challenge answered
/// with a "link down" its host made up.
caf::error hidden_evidence(uint64_t step) {
  return make_error(errc::peer_down,
                    fmt::format("step {}: link to this host is down (fault injection: "
                                "trainer_hide_evidence)",
                                step));
}

/// How long a finished session keeps its evidence: TrainQuery.keepMs (at
/// most 7 days), or an hour.
std::chrono::milliseconds keep_of(schema::TrainQuery::Reader q) {
  constexpr uint64_t week_ms = 7ull * 24 * 3600 * 1000;
  auto keep = q.getKeepMs() > 0 ? std::chrono::milliseconds(std::min(q.getKeepMs(), week_ms))
                                : std::chrono::milliseconds(std::chrono::hours(1));
  // Finished for a verifier: at least the hour, whatever the coordinator
  // asks (a keepMs of 1 would let it drop the evidence it owes).
  if (q.getVerifier().size() == 32)
    keep = std::max<std::chrono::milliseconds>(keep, std::chrono::hours(1));
  return keep;
}

/// The answers a session's evidence gives (a live trainer's, or one a
/// restarted host took up from its files).
envelope evidence_reply(uint64_t step, const train::evidence_store::entry& e,
                        const std::vector<uint32_t>& idx, const std::vector<float>& grad) {
  return make_envelope<schema::StepEvidence>([&](schema::StepEvidence::Builder b) {
    if (!grad.empty())
      b.setGradient(kj::arrayPtr(reinterpret_cast<const kj::byte*>(grad.data()), grad.size() * 4));
    b.setStep(step);
    b.setEpoch(e.epoch);
    b.setCursor(e.cursor);
    b.setWeights(kj::arrayPtr(reinterpret_cast<const kj::byte*>(e.weights.data()),
                              e.weights.size() * 4));
    auto l = b.initIndices(static_cast<unsigned>(idx.size()));
    for (unsigned i = 0; i < idx.size(); ++i)
      l.set(i, idx[i]);
  });
}

caf::expected<envelope> weights_digest_reply(const train::evidence_store& ev, uint64_t step) {
  auto got = ev.get(step);
  if (!got)
    return got.error();
  auto d = train::weights_hash(got->weights);
  return make_envelope<schema::WeightsDigest>([&](schema::WeightsDigest::Builder b) {
    b.setStep(step);
    b.setDigest(kj::arrayPtr(d.data(), 32));
  });
}

/// TrainQuery.partnerContribution: what the partner signed at `step`.
caf::expected<envelope> partner_reply(const train::partner_signed* p, uint64_t step) {
  if (!p)
    return make_error(errc::not_found,
                      fmt::format("no signed contribution of the partner at step {} here (kept "
                                  "only in a verified ring of two on a stream)",
                                  step));
  return make_envelope<schema::PartnerContribution>([&](schema::PartnerContribution::Builder b) {
    b.setStep(p->step);
    b.setHash(kj::arrayPtr(p->hash.data(), 32));
    b.setSignature(kj::arrayPtr(p->signature.data(), 64));
  });
}

envelope digests_reply(uint64_t first_step, const std::vector<hash256>& log) {
  return make_envelope<schema::WorkLogDigests>([&](schema::WorkLogDigests::Builder b) {
    b.setFirstStep(first_step);
    auto l = b.initDigests(static_cast<unsigned>(log.size()));
    for (unsigned i = 0; i < log.size(); ++i)
      l.set(i, kj::arrayPtr(log[i].data(), 32));
  });
}

/// Beside an owed record: the training rows a torch session's steps used.
std::filesystem::path rows_file_of(std::filesystem::path owed_file) {
  owed_file.replace_extension(".rows");
  return owed_file;
}

/// Beside an owed record: a copy of the TorchScript file its steps ran.
std::filesystem::path model_copy_of(std::filesystem::path owed_file) {
  owed_file.replace_extension(".pt");
  return owed_file;
}

/// A torch model's file (the fetched asset, or the operator's file), for a
/// check that a restarted host steps the same module.
std::filesystem::path torch_file_of(const train::model_spec& spec) {
  return spec.is_asset() ? std::filesystem::path{spec.local} : std::filesystem::path{spec.file};
}

/// A finished session's evidence files when its keeper goes: kept for the
/// next process when the host is stopping and a rater is owed them,
/// removed otherwise (its keeping ended, or it was dropped).
void release_evidence(const role_context& ctx, train::evidence_store* ev,
                      const std::filesystem::path& owed_file) {
  if (owed_file.empty())
    return;
  // (Only under a data dir: a temporary one is no later process's.)
  if (ev && ctx.stopping && ctx.stopping->load() && !ctx.data_dir.empty()) {
    ev->keep_file();
    return;
  }
  std::error_code ec;
  std::filesystem::remove(owed_file, ec);
  std::filesystem::remove(rows_file_of(owed_file), ec);
  std::filesystem::remove(model_copy_of(owed_file), ec);
}

// ---- A finished session's answers from its files ------------------------------

/// A session finished for a verifier, answered from what it wrote down:
/// its owed record, its evidence file and (torch) the rows its steps used.
/// A trainer that finished for a verifier lets go of its model and data
/// and answers so; so does a session a restarted host took up.
struct owed_answers {
  train::owed_session owed;
  const train::evidence_store* evidence = nullptr; ///< its keeper's
  std::filesystem::path owed_file;
  bool hide_evidence = false; ///< [faults] trainer_hide_evidence
  const char* since = "";     ///< how the session came to answer from its files
  /// A torch session's model and rows, loaded at the first gradient asked.
  std::optional<train::model_spec> spec; ///< (its live trainer's, handed over at let_go)
  bool rows_loaded = false;
  data::table rows;             ///< the rows the steps used, compact
  std::vector<uint32_t> places; ///< rows.y[i] is the training split's row places[i]

  /// Loads the model the steps ran (unless its trainer handed it over) and
  /// the rows they used, refused by name when the record names none (a
  /// built-in model) or a file is not what it was.
  caf::error load_for_gradients() {
    if (spec && rows_loaded)
      return {};
    if (owed.model.empty())
      return make_error(errc::not_found, "no model was written down with this session (a "
                                         "built-in model's steps are the same bits everywhere)");
    if (!spec) {
      auto s = train::parse_spec(owed.model);
      if (!s)
        return s.error();
      // The copy written down at the finish, checked against the hash of
      // the file the session loaded.
      auto copy = *s;
      if (copy.is_asset())
        copy.local = owed.model_local;
      else
        copy.file = owed.model_local;
      auto bytes = data::read_model_file(owed.model_local, train::torch_limits{}.file_bytes_max);
      if (!bytes)
        return bytes.error();
      if (data::model_hash(*bytes) != owed.model_file)
        return make_error(errc::not_found,
                          fmt::format("{} is not the model file the session's steps ran",
                                      owed.model_local));
      if (auto err = train::load_torch(copy))
        return err;
      s->torch = copy.torch;
      s->layers = copy.layers;
      spec = std::move(*s);
    }
    auto r = train::read_owed_rows(rows_file_of(owed_file));
    if (!r)
      return r.error();
    if (r->features != spec->layers.front())
      return make_error(errc::invalid_argument,
                        fmt::format("{}: rows of {} features for a model of {}",
                                    rows_file_of(owed_file).string(), r->features,
                                    spec->layers.front()));
    rows.rows = r->index.size();
    rows.features = r->features;
    rows.x = std::move(r->x);
    rows.y = std::move(r->y);
    places = std::move(r->index);
    rows_loaded = true;
    return {};
  }

  /// Step `e`'s local gradient on the training rows `idx`, as the session
  /// computed it.
  caf::expected<std::vector<float>> gradient(const train::evidence_store::entry& e,
                                             const std::vector<uint32_t>& idx) {
    if (auto err = load_for_gradients())
      return err;
    std::vector<uint32_t> at;
    at.reserve(idx.size());
    for (auto i : idx) {
      auto p = std::lower_bound(places.begin(), places.end(), i);
      if (p == places.end() || *p != i)
        return make_error(errc::not_found,
                          fmt::format("training row {} was not written down with the session", i));
      at.push_back(static_cast<uint32_t>(p - places.begin()));
    }
    auto m = train::model::from_params(*spec, e.weights);
    if (!m)
      return m.error();
    return train::local_gradient(*m, rows, at, owed.global_batch).first;
  }

  /// Digests, evidence and weight digests; any other query (but drop,
  /// which is its keeper's) is refused by name.
  caf::expected<envelope> answer(schema::TrainQuery::Reader q) {
    switch (q.which()) {
      case schema::TrainQuery::DIGESTS:
        return digests_reply(owed.first_step, owed.log);
      case schema::TrainQuery::WEIGHTS_DIGEST:
        return weights_digest_reply(*evidence, q.getWeightsDigest());
      case schema::TrainQuery::PARTNER_CONTRIBUTION: {
        auto step = q.getPartnerContribution();
        auto p = std::lower_bound(owed.partner.begin(), owed.partner.end(), step,
                                  [](const train::partner_signed& x, uint64_t s) {
                                    return x.step < s;
                                  });
        return partner_reply(p != owed.partner.end() && p->step == step ? &*p : nullptr, step);
      }
      case schema::TrainQuery::EVIDENCE: {
        auto step = q.getEvidence();
        if (hide_evidence)
          return hidden_evidence(step);
        auto e = evidence->get(step);
        if (!e)
          return e.error();
        auto perm = train::epoch_permutation(static_cast<uint32_t>(owed.rows), owed.seed, e->epoch);
        auto idx = train::batch_slice(perm, e->cursor, owed.global_batch, owed.rank, owed.size);
        std::vector<float> grad;
        if (q.getWithGradient()) {
          auto g = gradient(*e, idx);
          if (!g)
            return make_error(code_of(g.error()),
                              fmt::format("no gradient of step {} here (the session {}): {}", step,
                                          since, what_of(g.error())));
          grad = std::move(*g);
        }
        return evidence_reply(step, *e, idx, grad);
      }
      default:
        return make_error(errc::invalid_argument,
                          fmt::format("this session {}: only its evidence is kept (digests, "
                                      "evidence, weightsDigest, partnerContribution)",
                                      since));
    }
  }
};

struct worker_state {
  role_context ctx;
  caf::actor_system* sys = nullptr;
  train::ring_id session{};
  uint32_t rank = 0, size = 1;
  envelope config_env; ///< owns the TrainConfig words
  uint32_t global_batch = 1;
  uint64_t seed = 0;
  hash256 job{}; ///< the job this session works for (zeros: none given)
  uint32_t cheat_percent = 0; ///< fault injection: random gradients on this % of steps
  node_id right_host{};       ///< TrainerJoin.right: in a ring of two, the partner's host
  train::digest terms{};      ///< train::terms_digest of its TrainConfig (signed with its log)
  /// A ring of two on a stream, verified: what the partner signed for the
  /// gradient it sent, by step (checked against the floats that came).
  std::map<uint64_t, train::partner_signed> partner;
  bool cheat_weights = false; ///< fault injection: those steps at all-zero weights instead
  split_data data;
  std::optional<train::model> model;
  train::sgd opt;
  caf::actor member;                  ///< actor transport (else null)
  std::unique_ptr<gpu::reducer> reducer;
  train::stream_ring* stream = nullptr; ///< stream transport: `reducer` itself
  bool nccl = false;                    ///< nccl transport: `reducer` set by RingLink
  std::vector<uint8_t> nccl_id;         ///< rank 0's, answered in its JoinAck
  uint64_t step = 0, epoch = 0, cursor = 0;
  uint64_t cached_epoch = UINT64_MAX;
  std::vector<uint32_t> order; ///< the permutation of cached_epoch
  std::vector<hash256> log;    ///< one digest per step
  uint64_t first_step = 0;     ///< global step of log[0]
  /// Evidence per logged step: (epoch, cursor, weights before), kept for
  /// the rater after the session ends, in a file of the host's data dir
  /// (created at the first step, removed with the session).
  std::unique_ptr<train::evidence_store> evidence;
  bool keep_evidence_of_steps = true; ///< false while a run says the job is unverified
  bool ran_unverified = false;        ///< some run kept no evidence: no receipt for a verifier
  std::array<uint8_t, 32> token{};    ///< the session's (written down with owed evidence)
  /// Finished for a verifier: what the rater is owed is written here too,
  /// so a host restarted before the rating still answers it.
  std::filesystem::path owed_file;
  int64_t owed_until_ms = 0; ///< wall clock: the end of the owed keeping
  std::optional<train::owed_session> owed_record; ///< what was written down there
  bool owed_complete = false; ///< with what a gradient needs (a torch model's copy and rows)
  std::array<uint8_t, 32> model_file_hash{}; ///< torch: BLAKE2b-256 of the file loaded at the join
  bool finished = false;
  /// Finished for a verifier and written down: the rater's answers come
  /// from the files, the model and data are gone (let_go).
  std::unique_ptr<owed_answers> answers;
  envelope finish_reply;              ///< the signed log and receipt, for a finish asked again
  std::vector<uint8_t> finish_verifier;

  ~worker_state() {
    release_evidence(ctx, evidence.get(), owed_file);
  }

  /// Writes down what a session finished for a verifier owes its rater
  /// until `keep` from now; a failure is logged (the evidence still
  /// answers while this process lives).
  void write_owed(std::chrono::milliseconds keep) {
    if (!evidence)
      return;
    train::owed_session o;
    o.session = session;
    o.token = token;
    o.rank = rank;
    o.size = size;
    o.global_batch = global_batch;
    o.keep_until_ms = static_cast<uint64_t>(wall_ms() + keep.count());
    o.rows = data.train.rows;
    o.seed = seed;
    o.first_step = first_step;
    o.index = evidence->index();
    o.log = log;
    for (auto& [_, p] : partner)
      o.partner.push_back(p);
    auto file = evidence->file();
    file.replace_extension(".owed");
    caf::error err = evidence->sync();
    // A TorchScript model's steps differ between numeric environments: a
    // rater in another one asks for a step's gradient, recomputed here, so
    // the model file's name and hash and the rows the steps used go too.
    // A copy of the file (the operator's may change, an asset's cache go),
    // checked against the hash of the one the session loaded. Without them
    // the record still answers digests and evidence after a restart, and
    // this trainer keeps its model and data for the gradients.
    owed_complete = true;
    if (!err && model && model->spec().kind == "torch") {
      auto& spec = model->spec();
      caf::error why;
      auto bytes = data::read_model_file(torch_file_of(spec), train::torch_limits{}.file_bytes_max);
      if (!bytes)
        why = bytes.error();
      else if (data::model_hash(*bytes) != model_file_hash)
        why = make_error(errc::invalid_argument,
                         fmt::format("the model file {} changed since the session loaded it",
                                     torch_file_of(spec).string()));
      if (!why)
        why = train::write_whole_file(model_copy_of(file), *bytes);
      if (!why)
        why = train::write_owed_rows(rows_file_of(file), used_rows());
      if (why) {
        log_warning("trainer: rank {} of session {}: a host restarted before the rating could "
                    "not recompute its gradients: {}",
                    rank, to_hex({session.data(), 8}), describe(why));
        owed_complete = false;
      } else {
        o.model = train::to_string(spec);
        o.model_local = model_copy_of(file).string();
        o.model_file = model_file_hash;
      }
    }
    if (!err)
      err = train::write_owed(file, o);
    if (err) {
      log_warning("trainer: rank {} of session {}: its evidence will not outlive this process: {}",
                  rank, to_hex({session.data(), 8}), describe(err));
      std::error_code ec;
      std::filesystem::remove(rows_file_of(file), ec);
      std::filesystem::remove(model_copy_of(file), ec);
      return;
    }
    if (!owed_complete) {
      std::error_code ec;
      std::filesystem::remove(rows_file_of(file), ec);
      std::filesystem::remove(model_copy_of(file), ec);
    }
    owed_file = file;
    owed_until_ms = static_cast<int64_t>(o.keep_until_ms);
    owed_record = std::move(o);
  }

  /// A finish asked again with a longer keeping: the record says so too
  /// (a host restarted keeps it that long).
  void keep_owed_longer(std::chrono::milliseconds keep) {
    auto until = wall_ms() + keep.count();
    if (owed_file.empty() || until <= owed_until_ms)
      return;
    auto* record = answers ? &answers->owed : owed_record ? &*owed_record : nullptr;
    if (!record)
      return;
    auto longer = *record;
    longer.keep_until_ms = static_cast<uint64_t>(until);
    if (auto err = train::write_owed(owed_file, longer)) {
      log_warning("trainer: rank {} of session {}: its longer keeping is not written down (a "
                  "host restarted keeps it until the earlier end): {}",
                  rank, to_hex({session.data(), 8}), describe(err));
    } else {
      *record = std::move(longer);
    }
    owed_until_ms = until;
  }

  /// Once what the rater is owed is written down: its answers come from
  /// the files (as after a restart), and the model, the data, the
  /// optimizer and the last checkpoint go. A host keeps up to 16 such
  /// sessions per slot for their first hour; they hold no dataset copy.
  void let_go() {
    if (!owed_record || !evidence || !owed_complete)
      return;
    auto a = std::make_unique<owed_answers>();
    if (model && model->spec().kind == "torch")
      a->spec = model->spec(); // the module loaded (a gradient needs no file read back)
    a->owed = std::move(*owed_record);
    owed_record.reset();
    a->evidence = evidence.get();
    a->owed_file = owed_file;
    a->hide_evidence = ctx.lim.fault_trainer_hide_evidence;
    a->since = "finished for a verifier";
    answers = std::move(a);
    data = {};
    model.reset();
    opt = {};
    std::vector<uint32_t>{}.swap(order);
    cached_epoch = UINT64_MAX;
    std::vector<uint8_t>{}.swap(snapshot);
    snapshot_step = 0;
    partner.clear(); // (in the record)
    ::malloc_trim(0);
  }

  /// The training rows this rank's logged steps used (its slices of their
  /// batches), in ascending place.
  train::owed_rows used_rows() const {
    std::vector<uint32_t> places;
    uint64_t at_epoch = UINT64_MAX;
    std::vector<uint32_t> perm;
    for (auto& e : evidence->index()) { // by step: each epoch's permutation once
      if (e.epoch != at_epoch) {
        perm = train::epoch_permutation(static_cast<uint32_t>(data.train.rows), seed, e.epoch);
        at_epoch = e.epoch;
      }
      auto idx = train::batch_slice(perm, e.cursor, global_batch, rank, size);
      places.insert(places.end(), idx.begin(), idx.end());
    }
    std::sort(places.begin(), places.end());
    places.erase(std::unique(places.begin(), places.end()), places.end());
    train::owed_rows out;
    auto f = data.train.features;
    out.features = f;
    out.index = places;
    out.x.resize(places.size() * f);
    out.y.resize(places.size());
    for (size_t i = 0; i < places.size(); ++i) {
      std::memcpy(out.x.data() + i * f, data.train.x.data() + size_t{places[i]} * f, f * 4);
      out.y[i] = data.train.y[places[i]];
    }
    return out;
  }

  struct step_stats {
    double loss = 0;      ///< this rank's rows
    double ring_loss = 0; ///< every rank's rows (the step's second control word)
    bool stop = false;    ///< the ring agreed to stop after this step (first control word)
    size_t rows = 0;
    uint64_t compute_us = 0, allreduce_us = 0;
    train::digest digest{};
  };

  /// A TrainStep's steps, run one per message this trainer sends itself:
  /// progress polls, stops and queries are answered between two steps and
  /// no coordinator message is on the step path.
  struct run_state {
    caf::typed_response_promise<envelope> done;
    uint64_t first = 0;               ///< the run's first step
    uint64_t at = 0, ep = 0, cur = 0; ///< the next step and its place in the schedule
    uint32_t count = 0, ran = 0;
    uint32_t checkpoint_every = 0;    ///< rank 0: keep a checkpoint for the polls
    uint64_t compute_sum = 0, reduce_sum = 0;
    step_stats last;
    bool stopped = false;
  };
  std::optional<run_state> run;
  bool stop_asked = false; ///< TrainQuery.stop: the next step's stop flag
  /// Steps not yet acknowledged by a progress poll (its `from`).
  struct progress_entry {
    uint64_t step;
    double loss;
    uint64_t reduce_us, step_us;
  };
  std::deque<progress_entry> progress;
  clock_type::time_point last_step_end = clock_type::now();
  std::vector<uint8_t> snapshot; ///< the latest checkpoint kept in a run (rank 0)
  uint64_t snapshot_step = 0;
  /// A progress poll held until there is a batch to answer.
  struct held_poll {
    caf::typed_response_promise<envelope> rp;
    uint64_t have = 0; ///< the checkpoint step the poller has
    clock_type::time_point due;
  };
  std::optional<held_poll> poll;

  std::vector<uint8_t> checkpoint_now() const {
    train::checkpoint c;
    c.spec = model->spec();
    c.params.assign(model->params().begin(), model->params().end());
    c.velocity = opt.velocity;
    c.step = step;
    c.cursor = cursor;
    c.epoch = epoch;
    c.seed = seed;
    c.optimizer = opt.kind;
    c.second = opt.second;
    c.adam_steps = opt.t;
    return train::checkpoint_bytes(c);
  }

  envelope progress_reply(uint64_t have) const {
    return make_envelope<schema::TrainProgress>([&](schema::TrainProgress::Builder b) {
      auto n = static_cast<unsigned>(progress.size());
      b.setFirst(progress.empty() ? step : progress.front().step);
      auto l = b.initLossSums(n);
      auto a = b.initAllreduceUs(n);
      auto t = b.initStepUs(n);
      for (unsigned i = 0; i < n; ++i) {
        l.set(i, progress[i].loss);
        a.set(i, progress[i].reduce_us);
        t.set(i, progress[i].step_us);
      }
      if (snapshot_step > have) {
        b.setCheckpointStep(snapshot_step);
        b.setCheckpoint(kj::arrayPtr(snapshot.data(), snapshot.size()));
      }
      b.setRunning(run.has_value());
    });
  }

  /// Answers the held poll if it is due (or `now_anyway`).
  void answer_poll(bool now_anyway) {
    if (!poll)
      return;
    if (!now_anyway && clock_type::now() < poll->due && snapshot_step <= poll->have)
      return;
    poll->rp.deliver(progress_reply(poll->have));
    poll.reset();
  }

  envelope step_done() const {
    auto& r = *run;
    return make_envelope<schema::StepDone>([&](schema::StepDone::Builder b) {
      b.setRank(rank);
      b.setStep(r.at - 1);
      b.setLossSum(r.last.loss);
      b.setRows(static_cast<uint32_t>(r.last.rows));
      b.setComputeUs(r.compute_sum);
      b.setAllreduceUs(r.reduce_sum);
      b.setDigest(kj::arrayPtr(r.last.digest.data(), 32));
      b.setStopped(r.stopped);
      // The run's steps no progress poll has acknowledged, up to the last.
      auto from = std::find_if(progress.begin(), progress.end(),
                               [&](const progress_entry& e) { return e.step >= r.first; });
      auto n = static_cast<unsigned>(progress.end() - from);
      auto l = b.initLossSums(n);
      auto a = b.initAllreduceUsEach(n);
      auto t = b.initStepUsEach(n);
      for (unsigned i = 0; i < n; ++i, ++from) {
        l.set(i, from->loss);
        a.set(i, from->reduce_us);
        t.set(i, from->step_us);
      }
    });
  }

  /// Ends the run with `err` (a failed step, a drop, the trainer stopping).
  void abort_run(const caf::error& err) {
    if (run)
      run->done.deliver(err);
    run.reset();
    stop_asked = false;
    answer_poll(true);
  }

  caf::error keep_evidence(uint64_t step, uint64_t ep, uint64_t cur, std::span<const float> w) {
    if (log.empty())
      first_step = step;
    if (!keep_evidence_of_steps)
      return {};
    if (!evidence) {
      // A name of its own: a join that replaces this trainer (the same
      // session and rank) must not share, or lose, its file.
      auto file = evidence_dir(ctx) / fmt::format("{}-{}-{:016x}.ev", to_hex({session.data(), 32}),
                                                  rank,
                                                  (uint64_t{randombytes_random()} << 32)
                                                    | randombytes_random());
      auto made = train::evidence_store::create(file, ctx.lim.trainer_evidence_bytes);
      if (!made)
        return made.error();
      evidence = std::move(*made);
    }
    return evidence->put(step, ep, cur, w);
  }
  static inline const char* name = "aicon.trainer";

  const std::vector<uint32_t>& permutation_of(uint64_t e) {
    if (e != cached_epoch) {
      order = train::permutation(static_cast<uint32_t>(data.train.rows), seed + 1 + e);
      cached_epoch = e;
    }
    return order;
  }

  caf::expected<envelope> join(schema::TrainerJoin::Reader j) {
    auto cfg = j.getConfig();
    if (cfg.getModel().size() == 0) // a ring for collectives only
      return make_envelope<schema::JoinAck>([&](schema::JoinAck::Builder b) {
        b.setRank(rank);
        set_link(b);
      });
    auto spec = train::parse_spec(cfg.getModel().cStr());
    if (!spec)
      return spec.error();
    if (spec->kind == "torch") {
      // A researcher's TorchScript file: a model asset fetched from the
      // data nodes and checked against its id, or a local file only from
      // where this host's operator allows (as for data files); then the
      // contract.
      if (spec->is_asset()) {
        auto nodes = data::hosts_with_role(*sys, ctx, "data_node");
        for (auto n : cfg.getDataNodes())
          if (auto id = node_id::from_bytes({n.begin(), n.size()}))
            if (std::find(nodes.begin(), nodes.end(), *id) == nodes.end())
              nodes.push_back(*id);
        train::digest id = train::model_id(*spec);
        auto path = data::fetch_model(data::host_requester(*sys, ctx), nodes, id,
                                      ctx.data_dir / "models", ctx.lim.model_bytes_max, ctx.model_owners);
        if (!path)
          return path.error();
        spec->local = path->string();
      } else if (auto err = check_data_file(ctx.data_files, spec->file)) {
        return err;
      }
      if (auto err = train::load_torch(*spec))
        return err;
      // What a restarted host must step again (checked at the finish).
      auto bytes = data::read_model_file(torch_file_of(*spec), train::torch_limits{}.file_bytes_max);
      if (!bytes)
        return bytes.error();
      model_file_hash = data::model_hash(*bytes);
    }
    auto d = load_split(*sys, ctx, cfg, spec->regression());
    if (!d)
      return d.error();
    if (spec->layers.front() != d->train.features || spec->layers.back() < d->train.classes)
      return make_error(errc::invalid_argument,
                        fmt::format("model {} does not fit {} features and {} classes",
                                    train::to_string(*spec), d->train.features,
                                    d->train.classes));
    data = std::move(*d);
    global_batch = cfg.getGlobalBatch();
    if (global_batch < size || global_batch > data.train.rows)
      return make_error(errc::invalid_argument,
                        fmt::format("globalBatch {} must be between the {} trainers and the {} "
                                    "training rows",
                                    global_batch, size, data.train.rows));
    seed = cfg.getSeed();
    terms = train::terms_digest(train::terms_of(cfg));
    if (cfg.getJob().size() == 32)
      std::memcpy(job.data(), cfg.getJob().begin(), 32);
    if (auto r = node_id::from_bytes({j.getRight().begin(), j.getRight().size()}))
      right_host = *r; // (a ring of two: the partner; checked by the role)
    // Fault injection is its operator's choice ([faults] in host.toml),
    // never a message's: nobody can make another operator's trainer cheat.
    if (ctx.lim.fault_trainer_poison_ring)
      log_warning("trainer rank {}: FAULT INJECTION ([faults] in host.toml): noise sent to its "
                  "ring instead of the gradient it commits to, on 20% of its steps",
                  rank);
    if (ctx.lim.fault_trainer_cheat_percent > 0) {
      cheat_percent = std::min<uint32_t>(ctx.lim.fault_trainer_cheat_percent, 100);
      cheat_weights = ctx.lim.fault_trainer_cheat_weights;
      log_warning("trainer rank {}: FAULT INJECTION ([faults] in host.toml): {} on {}% of its "
                  "steps",
                  rank, cheat_weights ? "gradients at all-zero weights" : "random gradients",
                  cheat_percent);
    }
    opt.lr = cfg.getLr();
    opt.momentum = cfg.getMomentum();
    opt.weight_decay = cfg.getWeightDecay();
    if (static_cast<uint16_t>(cfg.getOptimizer()) > static_cast<uint16_t>(schema::Optimizer::ADAMW))
      return make_error(errc::invalid_argument,
                        fmt::format("TrainConfig.optimizer: enumerant {} is neither sgd nor adamw",
                                    static_cast<uint16_t>(cfg.getOptimizer())));
    opt.kind = cfg.getOptimizer() == schema::Optimizer::ADAMW ? train::optimizer_kind::adamw
                                                               : train::optimizer_kind::sgd;
    if (j.getCheckpoint().size() > 0) {
      auto c = train::parse_checkpoint({j.getCheckpoint().begin(), j.getCheckpoint().size()},
                                       "TrainerJoin.checkpoint");
      if (!c)
        return c.error();
      if (!(c->spec == *spec))
        return make_error(errc::invalid_argument, "the checkpoint is of another model");
      auto m = train::model::from_params(*spec, c->params); // *spec: loaded (torch)
      if (!m)
        return m.error();
      model = std::move(*m);
      if (c->optimizer != opt.kind)
        return make_error(errc::invalid_argument,
                          fmt::format("the checkpoint is of optimizer {}, the job's is {}",
                                      train::to_string(c->optimizer), train::to_string(opt.kind)));
      opt.velocity = c->velocity;
      opt.second = c->second;
      opt.t = c->adam_steps;
      step = c->step;
      epoch = c->epoch;
      cursor = c->cursor;
    } else {
      model = train::model::init(*spec, seed);
    }
    first_step = step; // a log that stays empty still signs where its ring started
    opt.trainable = model->trainable_count();
    return make_envelope<schema::JoinAck>([&](schema::JoinAck::Builder b) {
      b.setRank(rank);
      b.setTrainRows(data.train.rows);
      b.setTestRows(data.test.rows);
      b.setParams(model->params().size());
      set_link(b);
    });
  }

  void set_link(schema::JoinAck::Builder b) {
    if (stream) {
      b.setLinkHost(ctx.bind_host);
      b.setLinkPort(stream->port());
    }
    if (!nccl_id.empty())
      b.setNcclId(kj::arrayPtr(nccl_id.data(), nccl_id.size()));
  }

  caf::expected<envelope> link(schema::RingLink::Reader l) {
    if (nccl) {
      // Every rank of the ring is in here at once: ncclCommInitRank waits
      // for all of them. One GPU per trainer on a host, by rank.
      auto devices = gpu::query_devices().devices.size();
      if (devices == 0)
        return make_error(errc::invalid_argument, "RingLink: nccl transport without a GPU");
      std::vector<uint8_t> id{l.getNcclId().begin(), l.getNcclId().end()};
      std::string why;
      auto r = gpu::nccl_reducer::create(id, static_cast<int>(rank), static_cast<int>(size),
                                         static_cast<int>(rank % devices), why);
      if (!r)
        return make_error(errc::internal, "nccl: " + why);
      reducer = std::move(r);
      return make_envelope<schema::RingAck>([](schema::RingAck::Builder) {});
    }
    if (!stream)
      return make_error(errc::invalid_argument,
                        "RingLink: this trainer's ring uses the actor transport");
    if (auto err = stream->connect(l.getHost().cStr(), l.getPort()))
      return err;
    return make_envelope<schema::RingAck>([](schema::RingAck::Builder) {});
  }


  /// One step of the schedule at (epoch, cursor): local gradient, its log
  /// entry and evidence, the ring's allreduce, the optimizer step. Two
  /// control words ride after the gradient in the allreduce: a stop flag
  /// (any rank asked to stop: every rank stops after this same step) and
  /// the rank's loss sum (so every rank knows the step's loss over the
  /// whole batch, and rank 0 alone reports progress).
  caf::expected<step_stats> one_step(uint64_t at, uint64_t ep, uint64_t cur, bool stop_flag) {
    auto& perm = permutation_of(ep);
    if (cur + global_batch > perm.size())
      return make_error(errc::invalid_argument,
                        fmt::format("TrainStep: cursor {} + batch {} is past the {} rows", cur,
                                    global_batch, perm.size()));
    auto idx = train::batch_slice(perm, cur, global_batch, rank, size);
    step_stats out;
    out.rows = idx.size();
    auto t0 = clock_type::now();
    // No structured binding: `loss` is captured below (clang 14 cannot).
    auto computed = train::local_gradient(*model, data.train, idx, global_batch);
    auto& grad = computed.first;
    out.loss = computed.second;
    if (model->spec().torch && std::isnan(out.loss))
      return make_error(errc::invalid_argument,
                        fmt::format("step {}: the TorchScript model's forward or backward failed "
                                    "or gave a NaN loss on this rank's {} rows",
                                    at, idx.size()));
    std::span<const float> shown = model->params(); // the weights the log commits to
    std::vector<float> zeros;
    if (cheat_percent > 0) {
      // A dishonest provider: skips the work on some steps and sends noise,
      // or (cheat_weights) computes at all-zero weights, nearly free for an
      // MLP, and shows those.
      train::rng dice{seed * 7919 + at};
      if (dice.uniform() * 100 < cheat_percent) {
        if (cheat_weights) {
          zeros.assign(model->params().size(), 0.0f);
          auto fake = train::model::from_params(model->spec(), zeros);
          if (fake) {
            auto cheap = train::local_gradient(*fake, data.train, idx, global_batch);
            grad = std::move(cheap.first);
            shown = zeros;
          }
        } else {
          for (auto& v : grad)
            v = static_cast<float>(dice.uniform() - 0.5) * 1e-3f;
        }
      }
    }
    // The work log: what a verifier needs to re-execute this step. The
    // weights before the step are kept as evidence for the rater.
    // (The gradient's hash is also what a signed ring of two signs.)
    auto sent_hash = train::contribution_hash(grad);
    out.digest = train::step_digest_of(train::weights_hash(shown), idx, sent_hash);
    if (auto err = keep_evidence(at, ep, cur, shown))
      return err;
    if (ctx.lim.fault_trainer_poison_ring) {
      // A saboteur: the log commits to the gradient, the ring gets noise.
      train::rng dice{seed * 104729 + at * 2 + rank};
      if (dice.uniform() < 0.2) {
        for (auto& v : grad)
          v = static_cast<float>(dice.uniform() - 0.5) * 1e-2f;
        sent_hash = train::contribution_hash(grad);
      }
    }
    out.compute_us = us_since(t0);
    auto t1 = clock_type::now();
    const size_t n = grad.size();
    grad.push_back(stop_flag ? 1.0f : 0.0f); // local_gradient leaves room for both
    grad.push_back(static_cast<float>(out.loss));
    // A ring of two on a stream, in a verified job: each rank signs the
    // hash of the gradient it sends (riding past the control words, in its
    // own block), and checks its partner's against the floats that came.
    const bool signed_pair = stream && size == 2 && keep_evidence_of_steps;
    if (stream)
      stream->hash_peer_prefix(signed_pair ? n : 0, train::contribution_key);
    if (signed_pair) {
      auto sig = ctx.self->sign(train::contribution_signing_bytes(session, rank, at, sent_hash));
      grad.resize(n + 2 + 2 * train::contribution_floats, 0.0f);
      train::put_contribution({grad.data() + n + 2 + rank * train::contribution_floats,
                               train::contribution_floats},
                              sent_hash, sig);
    }
    if (auto err = reducer->allreduce(grad, gpu::reduce_op::sum); !err.empty())
      return make_error(errc::peer_down, "allreduce: " + err);
    out.allreduce_us = us_since(t1);
    out.stop = grad[n] > 0.5f;
    out.ring_loss = grad[n + 1];
    if (signed_pair) {
      auto other = 1 - rank;
      train::partner_signed p;
      p.step = at;
      if (!train::get_contribution({grad.data() + n + 2 + other * train::contribution_floats,
                                    train::contribution_floats},
                                   p.hash, p.signature))
        return make_error(errc::invalid_argument,
                          fmt::format("step {}: rank {} sent no signed contribution hash with "
                                      "its gradient",
                                      at, other));
      auto got = stream->peer_prefix_hash();
      if (!got || *got != p.hash)
        return make_error(errc::invalid_argument,
                          fmt::format("step {}: the gradient rank {} sent is not the one it "
                                      "signed (its hash differs): this rank does not take it",
                                      at, other));
      if (!verify_signature(right_host,
                            train::contribution_signing_bytes(session, other, at, p.hash),
                            p.signature))
        return make_error(errc::bad_signature,
                          fmt::format("step {}: rank {}'s signed contribution is not signed by "
                                      "its host {}",
                                      at, other, right_host.short_hex()));
      partner[at] = p;
    }
    grad.resize(n);
    opt.step(model->params(), grad);
    log.push_back(out.digest);
    step = at + 1;
    epoch = ep;
    cursor = cur + global_batch;
    return out;
  }

  /// TrainStep: checks it and sets up the run of `count` steps (its
  /// answer, StepDone, comes when the last step is done or the ring stopped).
  caf::error start_run(schema::TrainStep::Reader s, caf::typed_response_promise<envelope> rp) {
    if (!model)
      return make_error(errc::invalid_argument, "TrainStep before TrainerJoin");
    if (run)
      return make_error(errc::invalid_argument,
                        fmt::format("TrainStep: a run of this trainer is in progress (at step {})",
                                    run->at));
    auto count = std::max<uint32_t>(s.getCount(), 1);
    if (count > 10'000'000)
      return make_error(errc::invalid_argument, "TrainStep.count: at most 10000000 steps at once");
    // A run continues the log: the log's places are its steps, and the
    // rater challenges a step by its place (a coordinator that skipped or
    // repeated steps would have the rater fail an honest trainer for
    // evidence of steps it never ran).
    if (!log.empty() && s.getStep() != step)
      return make_error(errc::invalid_argument,
                        fmt::format("TrainStep.step: {} is not this trainer's next step ({}; its "
                                    "log runs from step {}): a run continues the log",
                                    s.getStep(), step, first_step));
    // And each step's place in the epochs is the schedule's, which the
    // rater re-executes against (a coordinator's other epoch or cursor
    // would have an honest trainer fail its rating).
    if (auto [e, c] = train::schedule_of(s.getStep(), data.train.rows, global_batch);
        e != s.getEpoch() || c != s.getCursor())
      return make_error(errc::invalid_argument,
                        fmt::format("TrainStep: step {} is at epoch {} cursor {} of the "
                                    "schedule ({} training rows, global batch {}), not epoch {} "
                                    "cursor {}",
                                    s.getStep(), e, c, data.train.rows, global_batch,
                                    s.getEpoch(), s.getCursor()));
    // A verified job's rater may challenge any step: an honest trainer
    // keeps the weights before each, and does not start a run it could not
    // keep them for (a step it cannot show would fail it).
    keep_evidence_of_steps = !s.getUnverified();
    ran_unverified = ran_unverified || s.getUnverified();
    if (keep_evidence_of_steps) {
      uint64_t per_step = model->params().size() * 4;
      uint64_t need = (evidence ? evidence->bytes() : 0) + per_step * count;
      if (need > ctx.lim.trainer_evidence_bytes)
        return make_error(
          errc::invalid_argument,
          fmt::format("TrainStep: {} steps of this model keep {} MiB of evidence for the rater "
                      "(the weights before each step), over this host's [limits] "
                      "trainer_evidence_bytes ({} MiB): run fewer steps per ring, or unverified",
                      count, (need + (1 << 20) - 1) >> 20, ctx.lim.trainer_evidence_bytes >> 20));
    }
    run_state r;
    r.done = std::move(rp);
    r.first = r.at = s.getStep();
    r.ep = s.getEpoch();
    r.cur = s.getCursor();
    r.count = count;
    r.checkpoint_every = rank == 0 ? s.getCheckpointEvery() : 0;
    run = std::move(r);
    stop_asked = false;
    last_step_end = clock_type::now();
    return {};
  }

  /// The run's next step; false once the run is over (answered).
  bool next_step() {
    auto& r = *run;
    if (r.ran > 0 && r.cur + global_batch > data.train.rows) {
      ++r.ep;
      r.cur = 0;
    }
    auto st = one_step(r.at, r.ep, r.cur, stop_asked);
    if (!st) {
      abort_run(st.error());
      return false;
    }
    auto now = clock_type::now();
    if (rank == 0) // it alone reports (the loss is the ring's, agreed in the allreduce)
      progress.push_back(
        {r.at, st->ring_loss, st->allreduce_us,
         static_cast<uint64_t>(
           std::chrono::duration_cast<std::chrono::microseconds>(now - last_step_end).count())});
    last_step_end = now;
    r.compute_sum += st->compute_us;
    r.reduce_sum += st->allreduce_us;
    r.last = *st;
    ++r.at;
    r.cur += global_batch;
    ++r.ran;
    if (r.checkpoint_every > 0 && step % r.checkpoint_every == 0) {
      snapshot = checkpoint_now();
      snapshot_step = step;
    }
    r.stopped = st->stop;
    if (r.ran < r.count && !r.stopped) {
      answer_poll(false);
      return true;
    }
    r.done.deliver(step_done());
    run.reset();
    stop_asked = false;
    answer_poll(true);
    return false;
  }

  caf::expected<envelope> ring_run(schema::RingRun::Reader r) {
    if (!reducer)
      return make_error(errc::invalid_argument, "RingRun: this session is finished");
    if (r.getFloats() > (1ull << 28))
      return make_error(errc::invalid_argument, "RingRun: at most 2^28 floats");
    if (stream)
      stream->hash_peer_prefix(0, {}); // (a training step's own setting)
    std::vector<float> buf(r.getFloats());
    std::vector<uint64_t> micros;
    uint64_t wrong = 0;
    const float want = static_cast<float>(size) * static_cast<float>(size + 1) / 2;
    for (uint32_t i = 0; i < r.getWarmup() + r.getIterations(); ++i) {
      std::fill(buf.begin(), buf.end(), static_cast<float>(rank + 1));
      auto t0 = clock_type::now();
      if (auto err = reducer->allreduce(buf, gpu::reduce_op::sum); !err.empty())
        return make_error(errc::peer_down, "allreduce: " + err);
      if (i >= r.getWarmup())
        micros.push_back(us_since(t0));
      for (auto v : buf)
        wrong += v != want ? 1 : 0;
    }
    return make_envelope<schema::RingTimes>([&](schema::RingTimes::Builder b) {
      b.setRank(rank);
      auto m = b.initMicros(static_cast<unsigned>(micros.size()));
      for (unsigned i = 0; i < micros.size(); ++i)
        m.set(i, micros[i]);
      b.setWrong(wrong);
    });
  }

  caf::expected<envelope> query(schema::TrainQuery::Reader q) {
    if (q.which() == schema::TrainQuery::EVIDENCE) {
      auto step = q.getEvidence();
      if (ctx.lim.fault_trainer_hide_evidence)
        return hidden_evidence(step);
      if (!evidence)
        return make_error(errc::not_found,
                          fmt::format("no evidence of step {} here ({})", step,
                                      keep_evidence_of_steps ? "no step logged"
                                                             : "an unverified job's: none kept"));
      auto got = evidence->get(step);
      if (!got)
        return got.error();
      auto& e = *got;
      auto perm = train::epoch_permutation(static_cast<uint32_t>(data.train.rows), seed, e.epoch);
      auto idx = train::batch_slice(perm, e.cursor, global_batch, rank, size);
      // For a rater in another numeric environment: the step's gradient,
      // recomputed here in this trainer's own (its steps are a pure
      // function of weights and rows, so these are the bits it committed).
      std::vector<float> grad;
      if (q.getWithGradient()) {
        auto m = train::model::from_params(model->spec(), e.weights);
        if (!m)
          return m.error();
        grad = train::local_gradient(*m, data.train, idx, global_batch).first;
      }
      return evidence_reply(step, e, idx, grad);
    }
    if (q.which() == schema::TrainQuery::WEIGHTS_DIGEST) {
      auto step = q.getWeightsDigest();
      if (!evidence)
        return make_error(errc::not_found,
                          fmt::format("no evidence of step {} here ({})", step,
                                      keep_evidence_of_steps ? "no step logged"
                                                             : "an unverified job's: none kept"));
      return weights_digest_reply(*evidence, step);
    }
    if (q.which() == schema::TrainQuery::DIGESTS)
      return digests_reply(first_step, log);
    if (q.which() == schema::TrainQuery::PARTNER_CONTRIBUTION) {
      auto p = partner.find(q.getPartnerContribution());
      return partner_reply(p != partner.end() ? &p->second : nullptr, q.getPartnerContribution());
    }
    if (q.which() == schema::TrainQuery::DROP)
      return make_envelope<schema::RingAck>([](schema::RingAck::Builder) {});
    if (!model && q.which() != schema::TrainQuery::FINISH)
      return make_error(errc::invalid_argument, "TrainQuery before TrainerJoin (or on a ring-only session)");
    switch (q.which()) {
      case schema::TrainQuery::CHECKPOINT: {
        auto bytes = checkpoint_now();
        return make_envelope<schema::CheckpointData>([&](schema::CheckpointData::Builder b) {
          b.setBytes(kj::arrayPtr(bytes.data(), bytes.size()));
        });
      }
      case schema::TrainQuery::EVALUATE: {
        auto e = train::evaluate(*model, data.test);
        return make_envelope<schema::EvalResult>([&](schema::EvalResult::Builder b) {
          b.setRows(data.test.rows);
          b.setAccuracy(e.accuracy);
          b.setLoss(e.loss);
          b.setRegression(e.regression);
          b.setR2(e.r2);
        });
      }
      case schema::TrainQuery::FINISH: {
        // A rater would fail every step it cannot show: no receipt for
        // work whose evidence was not kept.
        if (q.getVerifier().size() == 32 && ran_unverified)
          return make_error(errc::invalid_argument,
                            "TrainQuery.finish names a verifier, but this session's runs were "
                            "unverified (TrainStep.unverified): it kept no evidence to be checked "
                            "against");
        auto root = ledger::merkle_root(log, "aicon-worklog-node-v1");
        auto msg = train::worklog_signing_bytes(session, rank, size, first_step, log.size(), root,
                                                terms);
        auto sig = ctx.self->sign(msg);
        return make_envelope<schema::SessionLog>([&](schema::SessionLog::Builder b) {
          b.setRank(rank);
          b.setSteps(log.size());
          b.setLogRoot(kj::arrayPtr(root.data(), 32));
          b.setTrainer(kj::arrayPtr(ctx.self->id().bytes.data(), 32));
          b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
          b.setFirstStep(first_step);
          b.setTerms(kj::arrayPtr(terms.data(), 32));
          if (auto& t = model->spec().torch)
            b.setEnvironment(t->environment());
          if (q.getVerifier().size() == 32 && !log.empty()) {
            // The work receipt: what this trainer did, for the rater to
            // countersign once it re-executed a sample of it.
            uint64_t rows = uint64_t{rank + 1} * global_batch / size
                            - uint64_t{rank} * global_batch / size;
            auto mid = train::model_id(model->spec());
            auto sr = b.initReceipt();
            auto r = sr.initReceipt();
            r.setTrainer(kj::arrayPtr(ctx.self->id().bytes.data(), 32));
            r.setSessionId(kj::arrayPtr(session.data(), 32));
            r.setJobId(kj::arrayPtr(job.data(), 32));
            r.setModelId(kj::arrayPtr(mid.data(), 32));
            r.setSeq(uint64_t{rank} + 1);
            r.setUnits(log.size() * rows);
            r.setLogRoot(kj::arrayPtr(root.data(), 32));
            r.setVerifier(q.getVerifier());
            auto rs = ctx.self->sign(ledger::receipt_signing_bytes(r.asReader()));
            sr.setTrainerSignature(kj::arrayPtr(rs.data(), rs.size()));
          }
        });
      }
      case schema::TrainQuery::EVIDENCE:
      case schema::TrainQuery::DIGESTS:
      case schema::TrainQuery::DROP:
      case schema::TrainQuery::PROGRESS:
      case schema::TrainQuery::STOP:
      case schema::TrainQuery::WEIGHTS_DIGEST:
      case schema::TrainQuery::PARTNER_CONTRIBUTION:
        break; // answered above, or by the worker
    }
    return make_error(errc::invalid_argument, "TrainQuery has an unknown case");
  }
};

using worker_actor = caf::stateful_actor<worker_state>;

/// The ring transport of one trainer: a ring member actor or a stream.
struct ring_link {
  caf::actor member;
  std::shared_ptr<train::stream_ring> stream;
  bool nccl = false;
  std::vector<uint8_t> nccl_id; ///< rank 0 of an nccl ring
};

caf::behavior trainer_worker(worker_actor* self, role_context ctx, train::ring_id session,
                             uint32_t rank, uint32_t size, ring_link link,
                             train::ring_options ropts) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.sys = &self->system();
  st.session = session;
  st.rank = rank;
  st.size = size;
  std::memcpy(st.token.data(), ropts.token.data(), st.token.size());
  st.member = link.member;
  if (link.nccl) {
    st.nccl = true;
    st.nccl_id = std::move(link.nccl_id);
    // Until RingLink creates the communicator, a collective says why not.
    struct unlinked : gpu::reducer {
      size_t r, n;
      std::string allreduce(std::span<float>, gpu::reduce_op) override {
        return "nccl: the communicator is not formed yet (RingLink missing)";
      }
      size_t rank() const override {
        return r;
      }
      size_t size() const override {
        return n;
      }
    };
    auto u = std::make_unique<unlinked>();
    u->r = rank;
    u->n = size;
    st.reducer = std::move(u);
  } else if (link.stream) {
    st.stream = link.stream.get();
    // The worker owns the stream from here; the role keeps no reference.
    struct shared_reducer : gpu::reducer {
      std::shared_ptr<train::stream_ring> s;
      std::string allreduce(std::span<float> d, gpu::reduce_op op) override {
        return s->allreduce(d, op);
      }
      size_t rank() const override {
        return s->rank();
      }
      size_t size() const override {
        return s->size();
      }
    };
    auto r = std::make_unique<shared_reducer>();
    r->s = std::move(link.stream);
    st.reducer = std::move(r);
  } else {
    st.reducer = std::make_unique<train::ring_reducer>(self->system(), link.member, rank, size,
                                                       ropts);
  }
  // A trainer stopped (dropped, idle, its host stopping) answers its run
  // and a held poll instead of leaving them to their timeouts.
  self->set_exit_handler([self](caf::exit_msg& msg) {
    self->state.abort_run(make_error(errc::peer_down,
                                     fmt::format("the trainer stopped ({}) at step {}",
                                                 caf::to_string(msg.reason), self->state.step)));
    self->quit(msg.reason);
  });
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      auto& st = self->state;
      if (st.answers && env.type_id != capnp::typeId<schema::TrainQuery>())
        return make_error(errc::invalid_argument,
                          "this session finished for a verifier: it answers only its rater's "
                          "TrainQuery (digests, evidence, weightsDigest)");
      if (env.type_id == capnp::typeId<schema::TrainerJoin>()) {
        opened<schema::TrainerJoin> j{env};
        if (!j)
          return j.error();
        return st.join(j.root());
      }
      if (env.type_id == capnp::typeId<schema::TrainStep>()) {
        opened<schema::TrainStep> s{env};
        if (!s)
          return s.error();
        if (st.finished)
          return make_error(errc::invalid_argument, "TrainStep: this session is finished");
        auto rp = self->make_response_promise<envelope>();
        if (auto err = st.start_run(s.root(), rp)) {
          // The promise holds the request now: a refusal goes through it
          // (returned, it would reach nobody and the run would wait out its
          // timeout).
          rp.deliver(std::move(err));
          return rp;
        }
        self->send(self, run_atom::value);
        return rp;
      }
      if (env.type_id == capnp::typeId<schema::RingLink>()) {
        opened<schema::RingLink> l{env};
        if (!l)
          return l.error();
        return st.link(l.root());
      }
      if (env.type_id == capnp::typeId<schema::RingRun>()) {
        opened<schema::RingRun> r{env};
        if (!r)
          return r.error();
        return st.ring_run(r.root());
      }
      if (env.type_id == capnp::typeId<schema::TrainQuery>()) {
        opened<schema::TrainQuery> q{env};
        if (!q)
          return q.error();
        auto which = q->which();
        if (which == schema::TrainQuery::PROGRESS) {
          // A long poll: the steps since `from`, answered once there is a
          // batch (waitMs), a newer checkpoint, or no run.
          auto p = q->getProgress();
          while (!st.progress.empty() && st.progress.front().step < p.getFrom())
            st.progress.pop_front();
          st.answer_poll(true); // a newer poll replaces a held one
          auto wait = std::min<uint32_t>(p.getWaitMs(), 10'000);
          if (!st.run || wait == 0 || st.snapshot_step > p.getHaveCheckpoint())
            return st.progress_reply(p.getHaveCheckpoint());
          auto rp = self->make_response_promise<envelope>();
          st.poll = worker_state::held_poll{rp, p.getHaveCheckpoint(),
                                            clock_type::now() + std::chrono::milliseconds(wait)};
          return rp;
        }
        if (which == schema::TrainQuery::STOP) {
          if (st.run)
            st.stop_asked = true; // agreed with the other ranks in the next step's allreduce
          return make_envelope<schema::RingAck>([](schema::RingAck::Builder) {});
        }
        if (which == schema::TrainQuery::FINISH && !st.finish_verifier.empty()
            && q->getVerifier().size() == 32) {
          // A finish asked again: the same signed log, kept longer if it
          // asks; none for another verifier.
          auto v = q->getVerifier();
          if (!std::equal(v.begin(), v.end(), st.finish_verifier.begin(), st.finish_verifier.end()))
            return make_error(errc::invalid_argument,
                              "TrainQuery.finish: this session already finished for another "
                              "verifier");
          st.keep_owed_longer(keep_of(q.root()));
          return st.finish_reply;
        }
        // Finished for a verifier and written down: only what the rater is
        // owed is left.
        if (st.answers && which != schema::TrainQuery::DROP)
          return st.answers->answer(q.root());
        // (The role refuses it too; this trainer keeps what it owes even
        // if a drop got past, racing the finish.)
        if (which == schema::TrainQuery::DROP && !st.owed_file.empty()
            && wall_ms() < st.owed_until_ms)
          return make_error(errc::forbidden,
                            "TrainQuery.drop: this session finished for a verifier and keeps "
                            "its evidence for that rater until its keeping ends");
        if (st.run && (which == schema::TrainQuery::FINISH || which == schema::TrainQuery::DROP))
          st.abort_run(make_error(errc::cancelled,
                                  fmt::format("the run stopped at step {}: its coordinator "
                                              "finished the session while it ran",
                                              st.step)));
        auto out = st.query(q.root());
        if (which == schema::TrainQuery::FINISH && out) {
          // Training is over; the log and the evidence stay for the rater.
          st.finished = true;
          if (auto v = q->getVerifier(); v.size() == 32 && opened<schema::SessionLog>{*out}->hasReceipt()) {
            st.finish_reply = *out;
            st.finish_verifier.assign(v.begin(), v.end());
            st.write_owed(keep_of(q.root()));
          }
          if (st.member)
            caf::anon_send_exit(st.member, caf::exit_reason::user_shutdown);
          st.reducer.reset();
          st.stream = nullptr;
          st.let_go();
        }
        if (which == schema::TrainQuery::DROP)
          self->quit();
        return out;
      }
      return make_error(errc::unexpected_type,
                        "a trainer takes TrainerJoin, RingLink, TrainStep, RingRun, TrainQuery");
    },
    [self](run_atom) {
      auto& st = self->state;
      if (!st.run)
        return;
      bool more = false;
      try {
        more = st.next_step();
      } catch (const std::exception& e) {
        // Answered, not dropped: a run's requester waits for nothing else.
        st.abort_run(make_error(errc::internal,
                                fmt::format("step {} failed: {}", st.run ? st.run->at : st.step,
                                            e.what())));
      }
      if (more)
        self->send(self, run_atom::value);
    },
  };
}

// ---- Evidence a restarted host took up ----------------------------------------

/// A session finished for a verifier before this process started: it
/// answers the rater from the files (digests, evidence, weight digests)
/// until its keeping ends, and nothing else.
struct restored_state {
  role_context ctx;
  std::shared_ptr<train::evidence_store> evidence; ///< this actor's alone once spawned
  owed_answers answers;
  ~restored_state() {
    release_evidence(ctx, evidence.get(), answers.owed_file);
  }
  static inline const char* name = "aicon.trainer_restored";
};

using restored_actor = caf::stateful_actor<restored_state>;

caf::behavior restored_session(restored_actor* self, role_context ctx, train::owed_session owed,
                               std::shared_ptr<train::evidence_store> ev,
                               std::filesystem::path owed_file) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.evidence = std::move(ev);
  st.answers.owed = std::move(owed);
  st.answers.evidence = st.evidence.get();
  st.answers.owed_file = std::move(owed_file);
  st.answers.hide_evidence = st.ctx.lim.fault_trainer_hide_evidence;
  st.answers.since = "finished before the host restarted";
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      auto& st = self->state;
      if (env.type_id != capnp::typeId<schema::TrainQuery>())
        return make_error(errc::invalid_argument,
                          "this session finished before the host restarted: it answers only "
                          "its rater's TrainQuery (digests, evidence, weightsDigest)");
      opened<schema::TrainQuery> q{env};
      if (!q)
        return q.error();
      if (q->which() == schema::TrainQuery::DROP) {
        self->quit();
        return make_envelope<schema::RingAck>([](schema::RingAck::Builder) {});
      }
      return st.answers.answer(q.root());
    },
  };
}

// ---- The role: routing by (session, rank) ------------------------------------

struct slot {
  caf::actor worker;
  caf::actor member;
  bool finished = false; ///< training over; kept only as evidence for the rater
  uint64_t seq = 0;      ///< join order (ties of keep_until)
  /// Finished: kept for the rater until then (TrainQuery.keepMs); beyond
  /// the count bound, the soonest to expire goes first.
  std::chrono::steady_clock::time_point keep_until{};
  /// Finished for a verifier (it signed a work receipt naming a rater):
  /// its evidence is owed to that rater until keep_until, so its
  /// coordinator cannot drop it and the count bound takes it last.
  bool owed = false;
  uint32_t finishing = 0; ///< finishes for a verifier passed on and not yet answered
  /// Owed, or about to be: not dropped or replaced.
  bool holds_for_rater(std::chrono::steady_clock::time_point now) const {
    return finishing > 0 || (owed && now < keep_until);
  }
  std::chrono::steady_clock::time_point finished_at{}; ///< when the trainer took its FINISH
  std::array<uint8_t, 32> token{}; ///< the session's capability (TrainerJoin.token)
  std::array<uint8_t, 32> job{};   ///< TrainConfig.job: what its lease (if any) is for
  /// Last request of its coordinator (join, step, link, run, query): a
  /// running slot silent for trainer_idle_ms is dropped.
  std::chrono::steady_clock::time_point seen = std::chrono::steady_clock::now();
};

/// Whether `given` is the slot's token (constant time).
bool holds_token(const slot& s, capnp::Data::Reader given) {
  return given.size() == s.token.size()
         && sodium_memcmp(given.begin(), s.token.data(), s.token.size()) == 0;
}

/// Finished sessions a host keeps as evidence, per trainer slot: the rater
/// of each has them; beyond, the one soonest to expire goes first (a ring a
/// job left, kept to the job's end, outlives the hour of a finished job's
/// ring). Each holds up to trainer_evidence_bytes of evidence on disk, so
/// this bounds a host's disk as trainer_slots does.
constexpr size_t finished_per_slot_max = 4;
/// Sessions whose evidence a rater is owed, per trainer slot: never
/// evicted before their keeping ends; beyond this many, joins wait (busy).
constexpr size_t owed_per_slot_max = 16;

struct trainer_role_state {
  role_context ctx;
  alloc::offer offer;            ///< what this host advertises to allocators
  std::set<std::string> refused; ///< allocators that refused an offer (logged once)
  /// Allocators that took this host's offer: the only ones whose leases
  /// entitle a join to a trainer slot here.
  std::set<node_id> allocators;
  /// Shared with the exit functor, which outlives the state.
  std::shared_ptr<std::map<session_key, slot>> slots = std::make_shared<std::map<session_key, slot>>();
  uint64_t joins = 0;
  std::unique_ptr<message_table> table;
  static inline const char* name = "aicon.trainer_role";
};

using role_actor = caf::stateful_actor<trainer_role_state>;

/// Forwards `env` to `dst` and its answer (or error) back to the sender.
caf::result<envelope> relay_to(role_actor* self, const caf::actor& dst, envelope env,
                               caf::duration timeout) {
  auto rp = self->make_response_promise<envelope>();
  self->request(dst, timeout, std::move(env))
    .then([rp](envelope& reply) mutable { rp.deliver(std::move(reply)); },
          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
  return rp;
}

std::vector<uint8_t> join_signing_bytes(schema::TrainerJoin::Reader j) {
  capnp::MallocMessageBuilder copy;
  copy.setRoot(j);
  auto b = copy.getRoot<schema::TrainerJoin>();
  b.getAuth().disownSignature();
  return ledger::tagged_canonical("aicon-join-v1", b.asReader());
}

/// The TrainerJoin row's guard: a join spends one of this host's trainer
/// slots, so it must carry a lease for this host, signed by an allocator
/// this host offers to, for the job it configures (at most the lease's
/// count of trainers per job), or else be signed by a client the operator
/// lists in [host] trainer_clients. `key`: the slot the join would take.
caf::error check_join(const trainer_role_state& st, schema::TrainerJoin::Reader j,
                      const session_key& key) {
  auto now = wall_ms();
  auto skew = static_cast<int64_t>(st.ctx.lim.clock_skew_ms_max);
  if (j.hasLease()) {
    auto l = verified_lease(j.getLease());
    if (!l)
      return l.error();
    if (!st.allocators.count(l->allocator))
      return make_error(errc::forbidden,
                        fmt::format("the lease is from allocator {}, to which this host does not "
                                    "offer its trainers",
                                    l->allocator.short_hex()));
    if (!(l->lease.trainer == st.ctx.self->id()))
      return make_error(errc::forbidden,
                        fmt::format("the lease is for trainer host {}, not this one",
                                    l->lease.trainer.short_hex()));
    auto job = j.getConfig().getJob();
    if (job.size() != 32 || std::memcmp(job.begin(), l->lease.job.data(), 32) != 0)
      return make_error(errc::forbidden, "the lease is for another job than the join's config");
    if (l->lease.expires_ms + skew <= now)
      return make_error(errc::forbidden,
                        fmt::format("the lease expired {} ms ago", now - l->lease.expires_ms));
    uint32_t running = 0;
    for (auto& [k, s] : *st.slots)
      if (!s.finished && !(k == key) && s.job == l->lease.job)
        ++running;
    if (running >= l->lease.count)
      return make_error(errc::forbidden,
                        fmt::format("the lease is for {} trainer(s) of this host and {} run "
                                    "for its job already",
                                    l->lease.count, running));
    return {};
  }
  if (!j.hasAuth())
    return make_error(errc::forbidden,
                      "no lease from an allocator this host offers to, and not signed by a "
                      "client in its [host] trainer_clients");
  auto a = j.getAuth();
  auto signer = node_id::from_bytes({a.getSigner().begin(), a.getSigner().size()});
  if (!signer)
    return make_error(errc::invalid_argument, "TrainerJoin.auth.signer: " + what_of(signer.error()));
  if (std::find(st.ctx.trainer_clients.begin(), st.ctx.trainer_clients.end(), *signer)
      == st.ctx.trainer_clients.end())
    return make_error(errc::forbidden,
                      fmt::format("client {} is not in this host's [host] trainer_clients, and "
                                  "the join carries no lease",
                                  signer->short_hex()));
  auto t = static_cast<int64_t>(a.getTimeMs());
  if (t > now + skew || t + skew < now)
    return make_error(errc::forbidden,
                      fmt::format("the join is dated {} ms from this host's clock (at most {})",
                                  t - now, skew));
  auto sig = a.getSignature();
  if (!verify_signature(*signer, join_signing_bytes(j), {sig.begin(), sig.size()}))
    return make_error(errc::bad_signature,
                      fmt::format("the join is not signed by client {}", signer->short_hex()));
  return {};
}

caf::result<envelope> on_join(role_actor* self, const envelope& env,
                              schema::TrainerJoin::Reader j) {
  auto& st = self->state;
  auto session = session_of(j.getSession());
  if (!session)
    return session.error();
  if (j.getSize() == 0 || j.getRank() >= j.getSize())
    return make_error(errc::invalid_argument,
                      fmt::format("TrainerJoin: rank {} of {}", j.getRank(), j.getSize()));
  auto right = node_id::from_bytes({j.getRight().begin(), j.getRight().size()});
  if (!right)
    return make_error(errc::invalid_argument, "TrainerJoin.right: " + what_of(right.error()));
  auto key = session_key{*session, j.getRank()};
  if (j.getToken().size() != 32)
    return make_error(errc::invalid_argument,
                      "TrainerJoin.token must be 32 bytes: the session's capability, which its "
                      "later requests carry");
  if (auto old = st.slots->find(key); old != st.slots->end() && !holds_token(old->second, j.getToken()))
    return make_error(errc::forbidden,
                      fmt::format("TrainerJoin: rank {} of that session runs here for another "
                                  "coordinator (the token differs); it is not replaced",
                                  j.getRank()));
  if (auto old = st.slots->find(key);
      old != st.slots->end() && old->second.holds_for_rater(clock_type::now()))
    return make_error(errc::forbidden,
                      fmt::format("TrainerJoin: rank {} of that session finished for a verifier "
                                  "and keeps its evidence for that rater until its keeping ends; "
                                  "it is not replaced",
                                  j.getRank()));
  // trainer_slots is what this host offers: a join beyond it is refused
  // (retry later) before anything is made, whoever sends it.
  size_t training = 0;
  for (auto& [k, s] : *st.slots)
    if (!s.finished && !(k == key))
      ++training;
  if (training >= st.ctx.lim.trainer_slots)
    return make_error(errc::busy,
                      fmt::format("TrainerJoin: all {} trainer slots of this host are busy "
                                  "(trainer_slots); retry when a job finishes",
                                  st.ctx.lim.trainer_slots));
  // Evidence of finished sessions is bounded too: the soonest to expire
  // goes first (the oldest of those kept as long). A session whose
  // evidence a rater is owed does not go in its first hour (else the rater
  // could fail an honest trainer): past their own, larger bound the join
  // waits instead.
  auto now = clock_type::now();
  // (Protected from eviction for its first hour: the final ring is rated
  // by then; a ring a job left, kept longer for a rating at the job's end,
  // may go after that under a flood of joins, which leaves its trainers
  // unpaid but never slashed, as an earlier ring's evidence gone names no
  // culprit. A flood cannot hold this host's joins longer than the hour.)
  auto owed_now = [&](const slot& x) {
    return x.finished && x.owed && now < std::min(x.keep_until, x.finished_at + std::chrono::hours(1));
  };
  size_t owed = 0;
  std::optional<clock_type::time_point> first_free;
  for (auto& [k, x] : *st.slots)
    if (owed_now(x)) {
      ++owed;
      auto free_at = std::min(x.keep_until, x.finished_at + std::chrono::hours(1));
      first_free = first_free ? std::min(*first_free, free_at) : free_at;
    }
  const size_t slots = std::max<size_t>(st.ctx.lim.trainer_slots, 1);
  if (owed >= owed_per_slot_max * slots)
    return make_error(
      errc::busy,
      fmt::format("TrainerJoin: this host keeps the evidence of {} finished sessions for their "
                  "raters (at most {} per trainer slot); retry in {} s",
                  owed, owed_per_slot_max,
                  std::chrono::duration_cast<std::chrono::seconds>(*first_free - now).count() + 1));
  if (auto old = st.slots->find(key); old != st.slots->end()) {
    caf::anon_send_exit(old->second.worker, caf::exit_reason::user_shutdown);
    if (old->second.member)
      caf::anon_send_exit(old->second.member, caf::exit_reason::user_shutdown);
    st.slots->erase(old);
  }
  while (st.slots->size() - training - owed >= finished_per_slot_max * slots) {
    auto oldest = st.slots->end();
    for (auto i = st.slots->begin(); i != st.slots->end(); ++i)
      if (i->second.finished && !owed_now(i->second)
          && (oldest == st.slots->end()
              || std::tie(i->second.keep_until, i->second.seq)
                   < std::tie(oldest->second.keep_until, oldest->second.seq)))
        oldest = i;
    if (oldest == st.slots->end())
      break;
    caf::anon_send_exit(oldest->second.worker, caf::exit_reason::user_shutdown);
    st.slots->erase(oldest);
  }
  auto cfg = j.getConfig();
  // A local file only from where this host's operator allows: no peer may
  // make it read, or probe for, any other.
  if (cfg.getDataFile().size() > 0)
    if (auto err = check_data_file(st.ctx.data_files, cfg.getDataFile().cStr()))
      return err;
  if (auto spec = train::parse_spec(cfg.getModel().cStr());
      spec && spec->kind == "torch" && !spec->is_asset())
    if (auto err = check_data_file(st.ctx.data_files, spec->file))
      return err;
  train::ring_options ropts;
  std::memcpy(ropts.token.data(), j.getToken().begin(), ropts.token.size()); // size checked
  if (cfg.getChunkBytes())
    ropts.chunk_bytes = cfg.getChunkBytes();
  if (cfg.getCredits())
    ropts.credits = cfg.getCredits();
  if (cfg.getRingTimeoutMs())
    ropts.timeout_ms = cfg.getRingTimeoutMs();
  auto transport = cfg.getTransport();
  ring_link link;
  if (transport == train::transport::STREAM || transport == train::transport::STREAM_PLAIN) {
    ropts.plain = transport == train::transport::STREAM_PLAIN;
    if (cfg.getLinkKey().size() != 32)
      return make_error(errc::invalid_argument,
                        "TrainConfig.linkKey must be 32 bytes with the stream transport");
    train::link_key key;
    std::memcpy(key.data(), cfg.getLinkKey().begin(), 32);
    auto s = train::stream_ring::listen(*session, j.getRank(), j.getSize(), key, st.ctx.bind_host,
                                        ropts);
    if (!s)
      return s.error();
    link.stream = std::move(*s);
  } else if (transport == train::transport::NCCL) {
    auto report = gpu::query_devices();
    if (report.devices.empty())
      return make_error(errc::invalid_argument,
                        fmt::format("transport nccl: this host has no usable GPU ({})",
                                    report.status));
    link.nccl = true;
    if (j.getRank() == 0)
      if (auto why = gpu::nccl_unique_id(link.nccl_id); !why.empty())
        return make_error(errc::internal, "transport nccl: " + why);
  } else if (transport == train::transport::ACTOR) {
    link.member = train::spawn_ring_member(self->system(), *session, j.getRank(), j.getSize(),
                                           ropts);
  } else {
    return make_error(errc::invalid_argument,
                      fmt::format("TrainConfig.transport: enumerant {} is none of {}",
                                  static_cast<uint16_t>(transport), train::transport_names));
  }
  auto member = link.member;
  auto worker = self->system().spawn<caf::detached>(trainer_worker, st.ctx, *session, j.getRank(),
                                                    j.getSize(), std::move(link), ropts);
  slot made{worker, member, false, ++st.joins, {}, {}};
  std::memcpy(made.token.data(), j.getToken().begin(), made.token.size());
  if (cfg.getJob().size() == 32)
    std::memcpy(made.job.data(), cfg.getJob().begin(), 32);
  (*st.slots)[key] = made;
  auto rp = self->make_response_promise<envelope>();
  auto timeout = std::chrono::milliseconds{st.ctx.lim.request_timeout_ms};
  auto join_timeout = std::chrono::minutes(5); // loading the data
  // A join that fails (bad data, a bad config) frees its slot at once: a
  // refused join must not hold a trainer slot, a thread or memory.
  auto forget = [self, key, worker, member] {
    auto i = self->state.slots->find(key);
    if (i != self->state.slots->end() && i->second.worker == worker)
      self->state.slots->erase(i);
    caf::anon_send_exit(worker, caf::exit_reason::user_shutdown);
    if (member)
      caf::anon_send_exit(member, caf::exit_reason::user_shutdown);
  };
  auto with_right = [self, rp, worker, member, env, join_timeout,
                     forget](caf::actor right) mutable {
    if (member)
      train::connect_ring(member, right);
    self->request(worker, join_timeout, env)
      .then(
        [rp, forget](envelope& reply) mutable {
          if (error_of_reply(reply))
            forget();
          rp.deliver(std::move(reply));
        },
        [rp, forget](caf::error& err) mutable {
          forget();
          rp.deliver(std::move(err));
        });
  };
  if (!member || *right == st.ctx.self->id()) { // streams dial on RingLink
    with_right(caf::actor_cast<caf::actor>(self));
  } else {
    self->request(st.ctx.directory, timeout, lookup_atom::value, "trainer@" + right->hex())
      .then([with_right](caf::actor& dst) mutable { with_right(dst); },
            [rp, forget](caf::error& err) mutable {
              forget();
              rp.deliver(make_error(errc::unknown_node,
                                    "TrainerJoin: the right neighbour's trainer role: "
                                      + describe(err)));
            });
  }
  return rp;
}

/// The guard of every row whose proof is the session token: `token` is
/// the token of the trainer of (session, rank) on this host.
caf::error check_token(role_actor* self, capnp::Data::Reader session, uint32_t rank,
                       capnp::Data::Reader token) {
  auto id = session_of(session);
  if (!id)
    return id.error();
  auto it = self->state.slots->find({*id, rank});
  if (it == self->state.slots->end())
    return make_error(errc::not_found,
                      fmt::format("no trainer of rank {} for session {} on this host", rank,
                                  to_hex({id->data(), 32}).substr(0, 16)));
  if (!holds_token(it->second, token))
    return make_error(errc::forbidden, "not the session's token");
  it->second.seen = std::chrono::steady_clock::now();
  return {};
}

/// The trainer (or, `member`, its ring member) of (session, rank); the
/// row's guard has checked the token.
caf::expected<caf::actor> target(role_actor* self, capnp::Data::Reader session, uint32_t rank,
                                 bool member) {
  auto id = session_of(session);
  if (!id)
    return id.error();
  auto it = self->state.slots->find({*id, rank});
  if (it == self->state.slots->end())
    return make_error(errc::not_found,
                      fmt::format("no trainer of rank {} for session {} on this host", rank,
                                  to_hex({id->data(), 32}).substr(0, 16)));
  return member ? it->second.member : it->second.worker;
}

/// At start: the sessions an earlier process of this host finished for a
/// verifier, whose keeping has not ended, answer their raters again from
/// their files; every other file in evidence/ (a session that was running,
/// one past its keeping, a torn or corrupt record) goes, each refusal
/// logged by name.
void restore_owed_evidence(role_actor* self) {
  auto& st = self->state;
  auto dir = evidence_dir(st.ctx);
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec))
    return;
  std::set<std::filesystem::path> kept;
  size_t restored = 0;
  for (auto& f : std::filesystem::directory_iterator(dir, ec)) {
    if (f.path().extension() != ".owed")
      continue;
    auto owed = train::read_owed(f.path());
    if (!owed) {
      log_warning("trainer: evidence owed to a rater not taken up: {}", describe(owed.error()));
      continue;
    }
    auto name = fmt::format("{}-{}-", to_hex({owed->session.data(), 32}), owed->rank);
    if (f.path().stem().string().rfind(name, 0) != 0) {
      log_warning("trainer: evidence owed to a rater not taken up: {} names session {} rank {}",
                  f.path().string(), to_hex({owed->session.data(), 8}), owed->rank);
      continue;
    }
    auto left_ms = static_cast<int64_t>(std::min<uint64_t>(owed->keep_until_ms, INT64_MAX / 2))
                   - wall_ms();
    if (left_ms <= 0)
      continue; // its keeping ended while the host was down
    left_ms = std::min<int64_t>(left_ms, int64_t{7} * 24 * 3600 * 1000); // keepMs' own bound
    auto ev_file = f.path();
    ev_file.replace_extension(".ev");
    auto ev = train::evidence_store::open(ev_file, st.ctx.lim.trainer_evidence_bytes, owed->index);
    if (!ev) {
      log_warning("trainer: evidence owed to a rater not taken up: {}", describe(ev.error()));
      continue;
    }
    session_key key{owed->session, owed->rank};
    if (auto seen = st.slots->find(key); seen != st.slots->end()) {
      // Two records of one session and rank (a join replaced a trainer
      // before a crash): the one kept longer answers.
      auto kept_longer = seen->second.keep_until >= clock_type::now()
                                                     + std::chrono::milliseconds(left_ms);
      log_warning("trainer: evidence owed to a rater: {} is a second record of session {} rank "
                  "{}; the one kept longer is taken up",
                  f.path().string(), to_hex({owed->session.data(), 8}), owed->rank);
      if (kept_longer)
        continue;
      caf::anon_send_exit(seen->second.worker, caf::exit_reason::user_shutdown);
      st.slots->erase(seen);
      std::erase_if(kept, [&](const std::filesystem::path& p) {
        return p.stem().string().rfind(name, 0) == 0;
      });
    }
    slot s;
    s.finished = true;
    s.owed = true;
    s.finished_at = clock_type::now();
    s.seq = ++st.joins;
    s.keep_until = clock_type::now() + std::chrono::milliseconds(left_ms);
    s.token = owed->token;
    s.worker = self->spawn(restored_session, st.ctx, *owed,
                           std::shared_ptr<train::evidence_store>(std::move(*ev)), f.path());
    st.slots->emplace(key, std::move(s));
    self->delayed_send(self, std::chrono::milliseconds(left_ms), drop_atom::value, key.first,
                       key.second);
    kept.insert(f.path());
    kept.insert(ev_file);
    kept.insert(rows_file_of(f.path()));
    kept.insert(model_copy_of(f.path()));
    ++restored;
  }
  for (auto& f : std::filesystem::directory_iterator(dir, ec))
    if (!kept.count(f.path()))
      std::filesystem::remove(f.path(), ec);
  if (restored > 0)
    log_info("trainer: took up the evidence of {} finished session(s) owed to their raters",
             restored);
}

caf::behavior trainer_role(role_actor* self, role_context ctx) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.table = std::make_unique<message_table>("trainer", trainer_access);
  if (st.ctx.lim.fault_trainer_hide_evidence)
    log_warning("trainer: FAULT INJECTION ([faults] in host.toml): every evidence challenge is "
                "answered \"link down\"");
  restore_owed_evidence(self);
  auto long_wait = std::chrono::minutes(10);
  st.table->on<schema::TrainerJoin>(
    [self](schema::TrainerJoin::Reader j) -> caf::error {
      auto session = session_of(j.getSession());
      if (!session)
        return session.error();
      return check_join(self->state, j, session_key{*session, j.getRank()});
    },
    [self](const envelope& env, schema::TrainerJoin::Reader j) { return on_join(self, env, j); });
  auto guard = [self](auto msg) { return check_token(self, msg.getSession(), msg.getRank(), msg.getToken()); };
  st.table->on<schema::RingChunk>(
    [self](schema::RingChunk::Reader c) {
      return check_token(self, c.getRing(), c.getRank(), c.getToken());
    },
    [self](const envelope& env, schema::RingChunk::Reader c) -> caf::result<envelope> {
      auto dst = target(self, c.getRing(), c.getRank(), true);
      if (!dst)
        return dst.error();
      if (!*dst)
        return make_error(errc::invalid_argument,
                          "RingChunk: this session's ring uses the stream transport");
      return relay_to(self, *dst, env, caf::duration{std::chrono::minutes(1)});
    });
  st.table->on<schema::TrainStep>(guard, [self](const envelope& env,
                                                           schema::TrainStep::Reader s)
                                           -> caf::result<envelope> {
    auto dst = target(self, s.getSession(), s.getRank(), false);
    if (!dst)
      return dst.error();
    // A run lasts as long as its steps: the worker answers it when it ends,
    // fails or stops (exit handler), and its coordinator polls beside it.
    return relay_to(self, *dst, env, caf::infinite);
  });
  st.table->on<schema::RingLink>(guard, [self](const envelope& env, schema::RingLink::Reader l)
                                          -> caf::result<envelope> {
    auto dst = target(self, l.getSession(), l.getRank(), false);
    if (!dst)
      return dst.error();
    return relay_to(self, *dst, env, caf::duration{std::chrono::seconds(30)});
  });
  st.table->on<schema::RingRun>(guard, [self, long_wait](const envelope& env,
                                                         schema::RingRun::Reader r)
                                         -> caf::result<envelope> {
    auto dst = target(self, r.getSession(), r.getRank(), false);
    if (!dst)
      return dst.error();
    return relay_to(self, *dst, env, caf::duration{long_wait});
  });
  st.table->on<schema::TrainQuery>(guard, [self, long_wait](const envelope& env,
                                                            schema::TrainQuery::Reader q)
                                            -> caf::result<envelope> {
    auto id = session_of(q.getSession());
    if (!id)
      return id.error();
    auto dst = target(self, q.getSession(), q.getRank(), false);
    if (!dst)
      return dst.error();
    session_key key{*id, q.getRank()};
    if (q.which() == schema::TrainQuery::DROP) {
      // Evidence owed to a rater stays until its keeping ends: else a
      // coordinator (the payer's own client) could finish the ring, drop
      // it and have the rater fail its honest trainers for evidence gone.
      if (auto s = self->state.slots->find(key);
          s != self->state.slots->end() && s->second.finishing > 0)
        return make_error(errc::forbidden,
                          fmt::format("TrainQuery.drop: rank {} of this session is finishing for "
                                      "a verifier; it is not dropped before its keeping ends",
                                      q.getRank()));
      if (auto s = self->state.slots->find(key);
          s != self->state.slots->end() && s->second.owed && clock_type::now() < s->second.keep_until)
        return make_error(
          errc::forbidden,
          fmt::format("TrainQuery.drop: rank {} of this session finished for a verifier and keeps "
                      "its evidence for that rater {} s more; it is not dropped before",
                      q.getRank(),
                      std::chrono::duration_cast<std::chrono::seconds>(s->second.keep_until
                                                                       - clock_type::now())
                        .count()));
      // The slot goes once its trainer has taken the drop (a trainer that
      // refuses it, keeping what it owes, stays reachable); one already
      // gone goes too.
      auto rp = self->make_response_promise<envelope>();
      auto slots = self->state.slots;
      auto worker = *dst;
      auto forget = [slots, key, worker] {
        if (auto s = slots->find(key); s != slots->end() && s->second.worker == worker)
          slots->erase(s);
      };
      self->request(*dst, caf::duration{long_wait}, env)
        .then(
          [rp, forget](envelope& reply) mutable {
            forget();
            rp.deliver(std::move(reply));
          },
          [rp, forget](caf::error& err) mutable {
            if (code_of(err) != errc::forbidden)
              forget();
            rp.deliver(std::move(err));
          });
      return rp;
    }
    if (q.which() == schema::TrainQuery::FINISH) { // evidence kept an hour, or keepMs
      // The slot changes once the trainer took the finish (a refused one
      // changes nothing). For a verifier it is owed from now (a drop or a
      // join racing the finish is refused), and for good once the trainer
      // signed a receipt for it (a session with no step signs none, and
      // owes nothing).
      // (Bounded in count too: finished_per_slot_max, the soonest to expire first.)
      auto keep = keep_of(q);
      bool for_verifier = q.getVerifier().size() == 32;
      auto slots = self->state.slots;
      if (auto s = slots->find(key); s != slots->end() && for_verifier)
        ++s->second.finishing;
      auto worker = *dst;
      auto settle = [self, slots, key, worker, keep, for_verifier](const envelope* reply) {
        auto s = slots->find(key);
        if (s == slots->end() || s->second.worker != worker)
          return;
        if (for_verifier) {
          --s->second.finishing;
          if (reply) {
            opened<schema::SessionLog> l{*reply};
            if (l && l->hasReceipt())
              s->second.owed = true;
          }
        }
        if (!reply)
          return;
        if (!s->second.finished)
          s->second.finished_at = clock_type::now();
        s->second.finished = true; // its trainer slot is free again
        s->second.keep_until = std::max(s->second.keep_until, clock_type::now() + keep);
        self->delayed_send(self, keep, drop_atom::value, key.first, key.second);
      };
      auto rp = self->make_response_promise<envelope>();
      self->request(worker, caf::duration{long_wait}, env)
        .then(
          [rp, settle](envelope& reply) mutable {
            settle(&reply);
            rp.deliver(std::move(reply));
          },
          [rp, settle](caf::error& err) mutable {
            settle(nullptr);
            rp.deliver(std::move(err));
          });
      return rp;
    }
    return relay_to(self, *dst, env, caf::duration{long_wait});
  });
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  // The offer: this host's trainers, heart-beaten to every allocator.
  {
    auto report = gpu::query_devices();
    st.offer.trainer = st.ctx.self->id();
    st.offer.device = report.devices.empty() ? "cpu" : "gpu:" + report.devices[0].name;
    st.offer.slots = st.ctx.lim.trainer_slots;
    auto pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGE_SIZE);
    st.offer.memory = pages > 0 && page > 0
                        ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page)
                            / st.offer.slots
                        : 0;
    st.offer.samples_per_s = reference_speed();
    st.offer.price = st.ctx.lim.trainer_price;
    st.offer.site = st.ctx.site;
    self->send(self, offer_atom::value);
  }
  self->attach_functor([slots = st.slots] {
    for (auto& [_, s] : *slots) {
      caf::anon_send_exit(s.worker, caf::exit_reason::user_shutdown);
      if (s.member)
        caf::anon_send_exit(s.member, caf::exit_reason::user_shutdown);
    }
  });
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
    [self](offer_atom) {
      auto& st = self->state;
      auto hb = st.ctx.lim.offer_heartbeat_ms;
      self->delayed_send(self, std::chrono::milliseconds{hb}, offer_atom::value);
      // Trainers whose coordinator went silent (it died, or its client
      // did) give their slots back.
      auto now = std::chrono::steady_clock::now();
      for (auto it = st.slots->begin(); it != st.slots->end();) {
        auto& s = it->second;
        if (!s.finished && now - s.seen > std::chrono::milliseconds{st.ctx.lim.trainer_idle_ms}) {
          log_warning("trainer: rank {} of session {} idle for {} ms: dropped, its slot freed",
                      it->first.second, to_hex({it->first.first.data(), 8}),
                      st.ctx.lim.trainer_idle_ms);
          caf::anon_send_exit(s.worker, caf::exit_reason::user_shutdown);
          if (s.member)
            caf::anon_send_exit(s.member, caf::exit_reason::user_shutdown);
          it = st.slots->erase(it);
        } else {
          ++it;
        }
      }
      auto send_to = [self](caf::actor allocator, node_id who_id) {
        auto who = who_id == self->state.ctx.self->id() ? std::string{"local"}
                                                         : who_id.short_hex();
        auto& st = self->state;
        auto hb = st.ctx.lim.offer_heartbeat_ms;
        auto env = make_signed_offer(*st.ctx.self, st.offer, 3 * hb,
                                     static_cast<uint64_t>(wall_ms()));
        self->request(allocator, std::chrono::milliseconds{hb}, std::move(env))
          .then(
            [self, who, who_id](envelope& reply) {
              auto& st = self->state;
              if (auto err = error_of_reply(reply)) {
                st.allocators.erase(who_id);
                if (st.refused.insert(who).second)
                  log_warning("trainer: allocator {} refused this host's offer: {}", who,
                              describe(err));
              } else {
                st.allocators.insert(who_id);
                if (st.refused.erase(who))
                  log_info("trainer: allocator {} takes this host's offer again", who);
              }
            },
            [](caf::error&) {}); // a missed heartbeat; the next one follows
      };
      self->request(st.ctx.directory, std::chrono::milliseconds{hb}, lookup_atom::value,
                    std::string{"allocator"})
        .then([self, send_to](caf::actor& a) { send_to(a, self->state.ctx.self->id()); },
              [](caf::error&) {});
      self->request(st.ctx.directory, std::chrono::milliseconds{hb}, peers_atom::value,
                    std::string{"allocator"})
        .then(
          [self, send_to, hb](std::vector<std::string>& peers) {
            for (auto& p : peers) {
              auto id = node_id::from_hex(p);
              if (!id)
                continue;
              self->request(self->state.ctx.directory, std::chrono::milliseconds{hb},
                            lookup_atom::value, "allocator@" + p)
                .then([send_to, peer = *id](caf::actor& a) { send_to(a, peer); },
                      [](caf::error&) {});
            }
          },
          [](caf::error&) {});
    },
    [self](drop_atom, train::ring_id session, uint32_t rank) {
      auto it = self->state.slots->find({session, rank});
      if (it == self->state.slots->end())
        return;
      // Only a finished session's keeping ends here (a session joined again
      // since is not this timer's), and not before a later finish's.
      if (!it->second.finished || clock_type::now() < it->second.keep_until)
        return;
      caf::anon_send_exit(it->second.worker, caf::exit_reason::user_shutdown);
      self->state.slots->erase(it);
    },
  };
}

} // namespace

caf::expected<caf::actor> spawn_trainer(caf::actor_system& sys, const role_context& ctx) {
  // Every step allocates and frees the same activations and gradients
  // (Eigen's, libtorch's: hundreds of KiB each); glibc would give them back
  // to the kernel (per-thread arena trimming, mmap above 128 KiB) and fault
  // their pages in again next step. Keep up to 64 MiB of freed memory and
  // mmap only above 32 MiB (the torch plug-in does the same, torch_plugin.cpp).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  // A run answers when its steps end (or the trainer stops); a join when
  // its data is loaded (the role gives that 5 minutes).
  register_answer_deadline(capnp::typeId<schema::TrainStep>(), std::chrono::milliseconds{0});
  register_answer_deadline(capnp::typeId<schema::TrainerJoin>(), std::chrono::minutes(6));
  // A progress poll is answered between two steps, and a step may take
  // longer than request_timeout_ms (the role gives queries 10 minutes).
  register_answer_deadline(capnp::typeId<schema::TrainQuery>(), std::chrono::minutes(11));
  return sys.spawn(trainer_role, ctx);
}

envelope sign_trainer_join(const identity& client, schema::TrainerJoin::Reader join,
                           uint64_t now_ms) {
  capnp::MallocMessageBuilder tmp;
  tmp.setRoot(join);
  auto b = tmp.getRoot<schema::TrainerJoin>();
  auto a = b.initAuth();
  a.setSigner(kj::arrayPtr(client.id().bytes.data(), 32));
  a.setTimeMs(now_ms);
  auto sig = client.sign(join_signing_bytes(b.asReader()));
  b.getAuth().setSignature(kj::arrayPtr(sig.data(), sig.size()));
  return copy_envelope<schema::TrainerJoin>(b.asReader());
}

} // namespace aicon
