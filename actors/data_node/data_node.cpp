#include "actors/data_node/data_node.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>

#include <caf/all.hpp>
#include <fmt/format.h>
#include <sodium.h>

#include "actors/data_node/custody.hpp"
#include "actors/data_node/model_store.hpp"
#include "actors/ledger/ledger.hpp"
#include "runtime/log.hpp"
#include "runtime/role.hpp"

namespace aicon {

namespace {

using data::hash256;

uint64_t wall_ms() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count());
}

using ledger::short_hex;

envelope upload_done(const hash256& dataset, const std::vector<node_id>& holders) {
  return make_envelope<schema::UploadDone>([&](schema::UploadDone::Builder b) {
    b.setDatasetId(kj::arrayPtr(dataset.data(), 32));
    auto h = b.initHolders(static_cast<unsigned>(holders.size()));
    for (unsigned i = 0; i < holders.size(); ++i)
      h.set(i, kj::arrayPtr(holders[i].bytes.data(), 32));
  });
}

envelope report_ack(bool repaired, const std::string& problem) {
  return make_envelope<schema::ReportAck>([&](schema::ReportAck::Builder b) {
    b.setRepaired(repaired);
    b.setProblem(problem);
  });
}

/// One dataset being pushed to peers until enough copies exist.
struct push_job {
  hash256 dataset{};
  data::built_dataset d;
  std::vector<std::string> candidates; ///< peer data nodes (hex), in order
  size_t next = 0;
  uint32_t needed = 0;            ///< copies still wanted elsewhere
  std::vector<node_id> holders;   ///< this node first
  caf::response_promise rp;
};

/// A copy this node could not confirm; repaired from one of `peers`.
struct repair_job {
  hash256 hash{};
  std::string problem;
  std::vector<std::string> peers;
  size_t next = 0;
  caf::response_promise rp;
};

struct data_node_state {
  role_context ctx;
  std::shared_ptr<store::environment> env;
  std::shared_ptr<ledger::chain> chain; ///< null when this host keeps no chain
  std::unique_ptr<message_table> table;
  static inline const char* name = "aicon.data_node";

  std::chrono::milliseconds timeout() const {
    return std::chrono::milliseconds{ctx.lim.request_timeout_ms};
  }

  data::escrow_lookup escrow() {
    if (!chain)
      return {};
    return [c = chain](const hash256& job) -> caf::expected<std::optional<data::escrow_facts>> {
      auto e = c->escrow_of(job);
      if (!e)
        return e.error();
      if (!*e)
        return std::optional<data::escrow_facts>{};
      data::escrow_facts f{(*e)->amount, (*e)->payer, std::nullopt};
      if ((*e)->terms)
        f.agent = (*e)->terms->agent;
      return std::optional<data::escrow_facts>{f};
    };
  }

  caf::expected<envelope> answer(schema::DataQuery::Reader q) {
    switch (q.which()) {
      case schema::DataQuery::LIST: {
        auto all = data::list_datasets(*env);
        if (!all)
          return all.error();
        return make_envelope<schema::DatasetList>([&](schema::DatasetList::Builder b) {
          auto out = b.initManifests(static_cast<unsigned>(all->size()));
          for (unsigned i = 0; i < all->size(); ++i) {
            opened<schema::DatasetManifest> m{(*all)[i]};
            if (m)
              out.setWithCaveats(i, m.root());
          }
        });
      }
      case schema::DataQuery::MANIFEST:
        return data::find_dataset(*env, q.getManifest().cStr());
      case schema::DataQuery::VERIFY: {
        auto id = data::hash_of(q.getVerify(), "DataQuery.verify");
        if (!id)
          return id.error();
        auto m = data::find_dataset(*env, to_hex({id->data(), 32}));
        if (!m)
          return m.error();
        auto r = data::verify_dataset(*env, *m);
        if (!r)
          return r.error();
        return make_envelope<schema::VerifyResult>([&](schema::VerifyResult::Builder b) {
          b.setNode(kj::arrayPtr(ctx.self->id().bytes.data(), 32));
          b.setShards(r->shards);
          b.setBytes(r->bytes);
          auto p = b.initProblems(static_cast<unsigned>(r->problems.size()));
          for (unsigned i = 0; i < r->problems.size(); ++i)
            p.set(i, r->problems[i]);
        });
      }
      case schema::DataQuery::CHALLENGES:
        return data::challenge_log(*env);
    }
    return make_error(errc::invalid_argument, "DataQuery has an unknown case");
  }

  caf::expected<envelope> fetch(schema::FetchShares::Reader req) {
    if (req.getHashes().size() > ctx.lim.stream_credits)
      return make_error(errc::invalid_argument,
                        fmt::format("FetchShares asks for {} shares; a trainer has {} credits "
                                    "(stream_credits)",
                                    req.getHashes().size(), ctx.lim.stream_credits));
    // The shares go from LMDB's map into the answer in one copy.
    auto txn = store::txn::begin(*env, false);
    if (!txn)
      return txn.error();
    std::vector<std::pair<capnp::Data::Reader, std::span<const uint8_t>>> found;
    for (auto h : req.getHashes()) {
      auto hash = data::hash_of(h, "FetchShares.hashes[]");
      if (!hash)
        return hash.error();
      auto s = txn->get(store::db::shares, {h.begin(), h.size()});
      if (!s)
        return s.error();
      if (*s)
        found.emplace_back(h, **s);
    }
    return make_envelope<schema::ShareBatch>(
      [&](schema::ShareBatch::Builder b, envelope_builder& eb) {
        auto out = b.initShares(static_cast<unsigned>(found.size()));
        for (unsigned i = 0; i < found.size(); ++i) {
          out[i].setHash(found[i].first);
          auto& bytes = found[i].second;
          out[i].adoptBytes(eb.orphanage().referenceExternalData(
            capnp::Data::Reader{bytes.data(), bytes.size()}));
        }
      });
  }
};

using data_node_actor = caf::stateful_actor<data_node_state>;

void push_next(data_node_actor* self, std::shared_ptr<push_job> job);

/// Sends the remaining `batches` of `job` to `peer`, then commits there.
void push_batches(data_node_actor* self, std::shared_ptr<push_job> job, std::string peer,
                  std::shared_ptr<std::vector<envelope>> batches, size_t i) {
  auto& st = self->state;
  auto on_fail = [self, job, peer](const caf::error& err) {
    log_warning("data node: replica of {} on {} failed: {}", short_hex(job->dataset),
                peer.substr(0, 8), describe(err));
    push_next(self, job);
  };
  if (i < batches->size()) {
    ask_role(self, st.ctx.directory, "data_node@" + peer, (*batches)[i], st.timeout(),
             [self, job, peer, batches, i, on_fail](caf::expected<envelope> r) {
               if (!r)
                 return on_fail(r.error());
               push_batches(self, job, peer, batches, i + 1);
             });
    return;
  }
  auto commit = make_envelope<schema::UploadCommit>([&](schema::UploadCommit::Builder b) {
    b.setDatasetId(kj::arrayPtr(job->dataset.data(), 32));
    b.setReplicas(1);
    b.setSource(kj::arrayPtr(st.ctx.self->id().bytes.data(), 32));
  });
  ask_role(self, st.ctx.directory, "data_node@" + peer, std::move(commit), st.timeout(),
           [self, job, peer, on_fail](caf::expected<envelope> r) {
             if (!r)
               return on_fail(r.error());
             auto who = node_id::from_hex(peer);
             if (who) {
               job->holders.push_back(*who);
               if (auto err = data::add_holder(*self->state.env, job->dataset, *who, wall_ms()))
                 log_warning("data node: cannot note holder: {}", describe(err));
             }
             log_info("data node: replica of {} stored on {}", short_hex(job->dataset),
                      peer.substr(0, 8));
             --job->needed;
             push_next(self, job);
           });
}

/// Pushes `job` to its next candidate, or answers when enough copies exist
/// or no candidate is left.
void push_next(data_node_actor* self, std::shared_ptr<push_job> job) {
  auto& st = self->state;
  if (job->needed == 0 || job->next >= job->candidates.size()) {
    if (job->needed > 0)
      log_warning("data node: dataset {} has {} copies, {} wanted (not enough peer data nodes)",
                  short_hex(job->dataset), job->holders.size(),
                  job->holders.size() + job->needed);
    job->rp.deliver(upload_done(job->dataset, job->holders));
    return;
  }
  auto peer = job->candidates[job->next++];
  auto who = node_id::from_hex(peer);
  if (!who) {
    push_next(self, job);
    return;
  }
  auto begin = make_envelope<schema::UploadBegin>([&](schema::UploadBegin::Builder b) {
    b.setManifest(opened<schema::DatasetManifest>{job->d.manifest}.root());
  });
  ask_role(self, st.ctx.directory, "data_node@" + peer, std::move(begin), st.timeout(),
           [self, job, peer, who = *who](caf::expected<envelope> r) {
             if (!r) {
               log_warning("data node: replica of {} on {} refused: {}",
                           short_hex(job->dataset), peer.substr(0, 8), describe(r.error()));
               return push_next(self, job);
             }
             opened<schema::UploadDone> done{*r};
             if (done && done->getHolders().size() > 0) { // it has the dataset already
               job->holders.push_back(who);
               (void) data::add_holder(*self->state.env, job->dataset, who, wall_ms());
               --job->needed;
               return push_next(self, job);
             }
             auto batches = data::upload_batches(job->d, who,
                                                 self->state.ctx.lim.upload_batch_bytes);
             if (!batches) {
               log_warning("data node: cannot seal keys for {}: {}", peer.substr(0, 8),
                           describe(batches.error()));
               return push_next(self, job);
             }
             push_batches(self, job, peer,
                          std::make_shared<std::vector<envelope>>(std::move(*batches)), 0);
           });
}

/// A model file being pushed on to peer data nodes until `needed` more
/// copies exist.
struct model_push {
  hash256 id{};
  envelope put; ///< the ModelPut forwarded (replicas 1, source this node)
  std::vector<node_id> holders;
  uint32_t needed = 0;
  std::vector<std::string> candidates;
  size_t next = 0;
  caf::response_promise rp;
};

envelope model_stored(const hash256& id, const std::vector<node_id>& holders) {
  return make_envelope<schema::ModelStored>([&](schema::ModelStored::Builder b) {
    b.setModelId(kj::arrayPtr(id.data(), 32));
    auto h = b.initHolders(static_cast<unsigned>(holders.size()));
    for (unsigned i = 0; i < holders.size(); ++i)
      h.set(i, kj::arrayPtr(holders[i].bytes.data(), 32));
  });
}

void push_model_next(data_node_actor* self, std::shared_ptr<model_push> job) {
  auto& st = self->state;
  if (job->needed == 0 || job->next >= job->candidates.size()) {
    if (job->needed > 0)
      log_warning("data node: model {} has {} copies, {} wanted (not enough peer data nodes)",
                  short_hex(job->id), job->holders.size(), job->holders.size() + job->needed);
    job->rp.deliver(model_stored(job->id, job->holders));
    return;
  }
  auto peer = job->candidates[job->next++];
  ask_role(self, st.ctx.directory, "data_node@" + peer, job->put, st.timeout(),
           [self, job, peer](caf::expected<envelope> r) {
             if (!r) {
               log_warning("data node: replica of model {} on {} failed: {}", short_hex(job->id),
                           peer.substr(0, 8), describe(r.error()));
             } else if (auto who = node_id::from_hex(peer)) {
               job->holders.push_back(*who);
               --job->needed;
               log_info("data node: replica of model {} stored on {}", short_hex(job->id),
                        peer.substr(0, 8));
             }
             push_model_next(self, job);
           });
}

/// ModelPut: checks the file against its id and its owner's signature,
/// stores it, and (from a client) pushes it on until `replicas` copies exist.
caf::result<envelope> put_model(data_node_actor* self, schema::ModelPut::Reader p) {
  auto& st = self->state;
  if (p.getReplicas() > 16)
    return make_error(errc::invalid_argument,
                      fmt::format("ModelPut.replicas: {} copies asked, at most 16", p.getReplicas()));
  if (auto err = data::check_model(p.getManifest(), p.getFile(), st.ctx.lim.model_bytes_max))
    return err;
  // An operator who lists whose models its hosts run ([host] model_owners)
  // stores only theirs: owner keys cost nothing to make, so one admitted
  // peer could otherwise fill model_bytes_total with many owners' quotas.
  if (!st.ctx.model_owners.empty()) {
    auto owner = node_id::from_bytes({p.getManifest().getOwner().begin(),
                                      p.getManifest().getOwner().size()}); // checked above
    if (!owner || std::find(st.ctx.model_owners.begin(), st.ctx.model_owners.end(), *owner)
                    == st.ctx.model_owners.end())
      return make_error(errc::forbidden,
                        fmt::format("ModelPut: the model's owner {} is not one whose models this "
                                    "host keeps ([host] model_owners)",
                                    owner ? owner->short_hex() : std::string{"?"}));
  }
  if (auto err = data::store_model(*st.env, p, st.ctx.lim.model_bytes_per_owner,
                                   st.ctx.lim.model_bytes_total))
    return err;
  hash256 id;
  std::memcpy(id.data(), p.getManifest().getModelId().begin(), 32);
  log_info("data node: model {} stored ({} bytes)", short_hex(id), p.getFile().size());
  auto job = std::make_shared<model_push>();
  job->id = id;
  job->holders.push_back(st.ctx.self->id());
  bool from_peer = p.getSource().size() > 0;
  job->needed = !from_peer && p.getReplicas() > 1 ? p.getReplicas() - 1 : 0;
  if (job->needed == 0)
    return model_stored(id, job->holders);
  job->put = make_envelope<schema::ModelPut>([&](schema::ModelPut::Builder b) {
    b.setManifest(p.getManifest());
    b.setFile(p.getFile());
    b.setReplicas(1);
    b.setSource(kj::arrayPtr(st.ctx.self->id().bytes.data(), 32));
  });
  job->rp = self->make_response_promise<envelope>();
  auto rp = job->rp;
  self->request(st.ctx.directory, st.timeout(), peers_atom::value, std::string{"data_node"})
    .then(
      [self, job](std::vector<std::string>& peers) {
        job->candidates = std::move(peers);
        push_model_next(self, job);
      },
      [self, job](caf::error&) { push_model_next(self, job); });
  return rp;
}

caf::result<envelope> commit(data_node_actor* self, schema::UploadCommit::Reader c) {
  auto& st = self->state;
  auto id = data::hash_of(c.getDatasetId(), "UploadCommit.datasetId");
  if (!id)
    return id.error();
  auto m = data::upload_commit(*st.env, *id);
  if (!m) {
    (void) data::upload_abort(*st.env, *id); // an incomplete upload leaves nothing
    return m.error();
  }
  log_info("data node: dataset {} stored", short_hex(*id));
  if (c.getSource().size() == 32) {
    auto src = node_id::from_bytes({c.getSource().begin(), 32});
    if (src)
      (void) data::add_holder(*st.env, *id, *src, wall_ms());
  }
  auto job = std::make_shared<push_job>();
  job->dataset = *id;
  job->holders.push_back(st.ctx.self->id());
  job->needed = c.getReplicas() > 1 ? c.getReplicas() - 1 : 0;
  if (job->needed == 0)
    return upload_done(*id, job->holders);
  auto d = data::read_dataset(*st.env, *id);
  if (!d)
    return d.error();
  job->d = std::move(*d);
  job->rp = self->make_response_promise<envelope>();
  auto rp = job->rp;
  self->request(st.ctx.directory, st.timeout(), peers_atom::value, std::string{"data_node"})
    .then(
      [self, job](std::vector<std::string>& peers) {
        // Peers that already hold it first (nothing to send), then the rest.
        auto known = data::holders(*self->state.env);
        std::vector<std::string> first, rest;
        for (auto& p : peers) {
          bool has = false;
          if (known)
            for (auto& [ds, n] : *known)
              has |= ds == job->dataset && n.hex() == p;
          (has ? first : rest).push_back(p);
        }
        first.insert(first.end(), rest.begin(), rest.end());
        job->candidates = std::move(first);
        push_next(self, job);
      },
      [self, job](caf::error&) { push_next(self, job); });
  return rp;
}

void repair_next(data_node_actor* self, std::shared_ptr<repair_job> job) {
  auto& st = self->state;
  if (job->next >= job->peers.size()) {
    log_warning("data node: share {} is {} and no peer could supply it", short_hex(job->hash),
                job->problem);
    job->rp.deliver(report_ack(false, job->problem + "; no peer could supply a good copy"));
    return;
  }
  auto peer = job->peers[job->next++];
  auto req = make_envelope<schema::FetchShares>([&](schema::FetchShares::Builder b) {
    b.initHashes(1).set(0, kj::arrayPtr(job->hash.data(), 32));
  });
  ask_role(self, st.ctx.directory, "data_node@" + peer, std::move(req), st.timeout(),
           [self, job, peer](caf::expected<envelope> r) {
             if (!r)
               return repair_next(self, job);
             opened<schema::ShareBatch> b{*r};
             if (!b || b->getShares().size() != 1)
               return repair_next(self, job);
             auto bytes = b->getShares()[0].getBytes();
             if (auto err = data::write_share(*self->state.env, job->hash,
                                              {bytes.begin(), bytes.size()})) {
               log_warning("data node: peer {} sent a bad copy of {}: {}", peer.substr(0, 8),
                           short_hex(job->hash), describe(err));
               return repair_next(self, job);
             }
             log_warning("data node: share {} was {}; repaired from {}", short_hex(job->hash),
                         job->problem, peer.substr(0, 8));
             job->rp.deliver(report_ack(true, job->problem));
           });
}

caf::result<envelope> report(data_node_actor* self, schema::ShareReport::Reader r) {
  auto& st = self->state;
  auto h = data::hash_of(r.getHash(), "ShareReport.hash");
  if (!h)
    return h.error();
  auto s = data::read_share(*st.env, *h);
  if (!s)
    return s.error();
  if (*s && data::share_hash(**s) == *h)
    return report_ack(false, "");
  auto job = std::make_shared<repair_job>();
  job->hash = *h;
  job->problem = *s ? "corrupt" : "missing";
  log_warning("data node: a trainer reports share {} {} here ({})", short_hex(*h), job->problem,
              r.getProblem().cStr());
  job->rp = self->make_response_promise<envelope>();
  auto rp = job->rp;
  self->request(st.ctx.directory, st.timeout(), peers_atom::value, std::string{"data_node"})
    .then(
      [self, job](std::vector<std::string>& peers) {
        job->peers = std::move(peers);
        repair_next(self, job);
      },
      [self, job](caf::error&) { repair_next(self, job); });
  return rp;
}

/// One storage challenge: a random copy some peer holds of a dataset this
/// node also holds, a random share of it, a fresh nonce.
void challenge_round(data_node_actor* self) {
  auto& st = self->state;
  if (st.ctx.stopping->load())
    return;
  self->request(st.ctx.directory, st.timeout(), peers_atom::value, std::string{"data_node"})
    .then(
      [self](std::vector<std::string>& up) {
        auto& st = self->state;
        auto known = data::holders(*st.env);
        if (!known)
          return;
        std::vector<std::pair<hash256, node_id>> live;
        for (auto& [ds, n] : *known)
          if (n != st.ctx.self->id() && std::find(up.begin(), up.end(), n.hex()) != up.end())
            live.emplace_back(ds, n);
        if (live.empty())
          return;
        // Plain copies, not a structured binding: the answer's lambda
        // captures them (clang 14 cannot capture a binding).
        auto picked = live[randombytes_uniform(static_cast<uint32_t>(live.size()))];
        auto dataset = picked.first;
        auto node = picked.second;
        auto m = data::find_dataset(*st.env, to_hex({dataset.data(), 32}));
        if (!m)
          return;
        opened<schema::DatasetManifest> man{*m};
        auto shards = man->getShards();
        if (shards.size() == 0)
          return;
        auto ref = shards[randombytes_uniform(shards.size())];
        hash256 hash;
        std::memcpy(hash.data(), ref.getHash().begin(), 32);
        auto mine = data::read_share(*st.env, hash);
        if (!mine || !*mine || data::share_hash(**mine) != hash)
          return; // our own copy is bad: a challenge would prove nothing
        std::array<uint8_t, 32> nonce;
        randombytes_buf(nonce.data(), nonce.size());
        auto expected = data::challenge_digest(**mine, nonce);
        auto req = make_envelope<schema::StorageChallenge>([&](schema::StorageChallenge::Builder b) {
          b.setHash(kj::arrayPtr(hash.data(), 32));
          b.setNonce(kj::arrayPtr(nonce.data(), 32));
        });
        ask_role(self, st.ctx.directory, "data_node@" + node.hex(), std::move(req), st.timeout(),
                 [self, node, hash, expected](caf::expected<envelope> r) {
                   auto& st = self->state;
                   data::challenge_record rec{st.ctx.self->id(), node, hash, wall_ms(), false, ""};
                   if (!r) {
                     rec.problem = describe(r.error());
                   } else {
                     opened<schema::ChallengeAnswer> a{*r};
                     if (!a)
                       rec.problem = describe(a.error());
                     else if (a->getDigest().size() != 32
                              || std::memcmp(a->getDigest().begin(), expected.data(), 32) != 0)
                       rec.problem = "wrong digest: the node does not hold the share's bytes";
                     else
                       rec.ok = true;
                   }
                   if (!rec.ok)
                     log_warning("data node: storage challenge FAILED by {} for share {}: {}",
                                 node.short_hex(), short_hex(hash), rec.problem);
                   if (auto err = data::record_challenge(*st.env, rec))
                     log_warning("data node: cannot record a challenge: {}", describe(err));
                 });
      },
      [](caf::error&) {});
}

caf::behavior data_node_role(data_node_actor* self, role_context ctx,
                             std::shared_ptr<store::environment> env,
                             std::shared_ptr<ledger::chain> chain) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.env = std::move(env);
  st.chain = std::move(chain);
  if (auto n = data::abort_all_uploads(*st.env); n && *n > 0)
    log_warning("data node: rolled back {} upload(s) left unfinished by the last run", *n);
  st.table = std::make_unique<message_table>("data_node", data_node_access);
  auto& t = *st.table;
  t.on<schema::DataQuery>([self](schema::DataQuery::Reader q) -> caf::result<envelope> {
    return self->state.answer(q);
  });
  t.on<schema::UploadBegin>(
    [](schema::UploadBegin::Reader b) { return data::check_manifest(b.getManifest()); },
    [self](schema::UploadBegin::Reader b) -> caf::result<envelope> {
    auto& st = self->state;
    auto m = copy_envelope<schema::DatasetManifest>(b.getManifest());
    auto complete = data::upload_begin(*st.env, m);
    if (!complete)
      return complete.error();
    auto id = *data::hash_of(b.getManifest().getDatasetId(), "manifest.datasetId");
    std::vector<node_id> holders;
    if (*complete)
      holders.push_back(st.ctx.self->id());
    return upload_done(id, holders);
  });
  t.on<schema::UploadShares>([self](schema::UploadShares::Reader b) -> caf::result<envelope> {
    auto& st = self->state;
    auto id = data::hash_of(b.getDatasetId(), "UploadShares.datasetId");
    if (!id)
      return id.error();
    if (auto err = data::upload_shares(*st.env, *st.ctx.self, b)) {
      (void) data::upload_abort(*st.env, *id); // a bad batch ends the upload, leaving nothing
      return err;
    }
    return upload_done(*id, {});
  });
  t.on<schema::UploadCommit>([self](schema::UploadCommit::Reader c) { return commit(self, c); });
  t.on<schema::FetchShares>([self](schema::FetchShares::Reader r) -> caf::result<envelope> {
    return self->state.fetch(r);
  });
  t.on<schema::ShareReport>([self](schema::ShareReport::Reader r) { return report(self, r); });
  t.on<schema::KeyRequest>([self](schema::KeyRequest::Reader r) -> caf::result<envelope> {
    auto& st = self->state;
    auto out = data::release_keys(*st.env, r, wall_ms(), st.ctx.lim.clock_skew_ms_max,
                                  st.escrow(),
                                  st.chain ? std::optional<hash256>{st.chain->chain_id()}
                                           : std::nullopt);
    if (!out)
      log_info("data node: {}", describe(out.error()));
    return out;
  });
  t.on<schema::ModelPut>([self](schema::ModelPut::Reader p) { return put_model(self, p); });
  t.on<schema::ModelFetch>([self](schema::ModelFetch::Reader f) -> caf::result<envelope> {
    auto id = data::hash_of(f.getModelId(), "ModelFetch.modelId");
    if (!id)
      return id.error();
    auto m = data::load_model(*self->state.env, *id);
    if (!m)
      return m.error();
    if (!*m)
      return make_error(errc::not_found,
                        fmt::format("model {} is not on this data node", short_hex(*id)));
    return std::move(**m);
  });
  t.on<schema::StorageChallenge>([self](schema::StorageChallenge::Reader c)
                                   -> caf::result<envelope> {
    return data::answer_challenge(*self->state.env, c);
  });
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  self->delayed_send(self, std::chrono::milliseconds{st.ctx.lim.storage_challenge_ms},
                     tick_atom::value);
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
    [self](tick_atom) {
      challenge_round(self);
      self->delayed_send(self, std::chrono::milliseconds{self->state.ctx.lim.storage_challenge_ms},
                         tick_atom::value);
    },
  };
}

} // namespace

caf::expected<caf::actor> spawn_data_node(caf::actor_system& sys, const role_context& ctx) {
  auto hs = open_host_store(ctx);
  if (!hs)
    return hs.error();
  return sys.spawn<caf::detached>(data_node_role, ctx, std::move(hs->env), std::move(hs->chain));
}

} // namespace aicon
