#include "actors/data_node/remote.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string_view>
#include <thread>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/data_node/model_store.hpp"
#include "runtime/atoms.hpp"
#include "runtime/directory.hpp"
#include "runtime/error.hpp"
#include "runtime/identity.hpp"
#include "runtime/log.hpp"

namespace aicon::data {

namespace {

using clock_type = std::chrono::steady_clock;

using ledger::short_hex;

std::chrono::milliseconds timeout_of(const requester& c) {
  return c.timeout;
}

envelope share_report(const hash256& h, const hash256& dataset, const std::string& problem) {
  return make_envelope<schema::ShareReport>([&](schema::ShareReport::Builder b) {
    b.setHash(kj::arrayPtr(h.data(), 32));
    b.setDatasetId(kj::arrayPtr(dataset.data(), 32));
    b.setProblem(problem);
  });
}

} // namespace

requester::requester(client& c)
  : lookup_([&c](const std::string& name) { return c.lookup(name); }),
    request_([&c](const caf::actor& dst, envelope req, std::chrono::milliseconds t) {
      return c.request(dst, std::move(req), t);
    }),
    timeout(std::chrono::milliseconds{c.lim().request_timeout_ms}) {
}

caf::expected<caf::actor> data_node_of(const requester& c, const node_id& node) {
  return c.lookup("data_node@" + node.hex());
}

caf::expected<std::vector<node_id>> upload_dataset(const requester& c, const node_id& node,
                                                   const built_dataset& d, uint32_t replicas,
                                                   uint64_t batch_bytes,
                                                   std::chrono::milliseconds commit_timeout) {
  auto dst = data_node_of(c, node);
  if (!dst)
    return dst.error();
  opened<schema::DatasetManifest> m{d.manifest};
  if (!m)
    return m.error();
  auto begin = make_envelope<schema::UploadBegin>(
    [&](schema::UploadBegin::Builder b) { b.setManifest(m.root()); });
  auto r = c.request(*dst, std::move(begin), timeout_of(c));
  if (!r)
    return r.error();
  opened<schema::UploadDone> done{*r};
  if (!done)
    return done.error();
  if (done->getHolders().size() == 0) { // not there yet: send the shares
    auto batches = upload_batches(d, node, batch_bytes);
    if (!batches)
      return batches.error();
    for (auto& b : *batches) {
      auto ack = c.request(*dst, std::move(b), timeout_of(c));
      if (!ack)
        return ack.error();
    }
  }
  auto commit = make_envelope<schema::UploadCommit>([&](schema::UploadCommit::Builder b) {
    b.setDatasetId(m->getDatasetId());
    b.setReplicas(replicas);
  });
  auto fin = c.request(*dst, std::move(commit), commit_timeout);
  if (!fin)
    return fin.error();
  opened<schema::UploadDone> out{*fin};
  if (!out)
    return out.error();
  std::vector<node_id> holders;
  for (auto h : out->getHolders())
    if (auto n = node_id::from_bytes({h.begin(), h.size()}))
      holders.push_back(*n);
  return holders;
}

caf::expected<std::pair<std::vector<replica>, envelope>>
find_replicas(const requester& c, const std::vector<node_id>& nodes, const std::string& id) {
  std::vector<replica> found;
  std::optional<envelope> manifest;
  std::vector<std::string> why;
  for (auto& n : nodes) {
    auto dst = data_node_of(c, n);
    if (!dst) {
      why.push_back(fmt::format("{}: {}", n.short_hex(), what_of(dst.error())));
      continue;
    }
    auto q = make_envelope<schema::DataQuery>(
      [&](schema::DataQuery::Builder b) { b.setManifest(id); });
    auto t0 = clock_type::now();
    auto r = c.request(*dst, std::move(q), timeout_of(c));
    double rtt = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
    if (!r) {
      why.push_back(fmt::format("{}: {}", n.short_hex(), what_of(r.error())));
      continue;
    }
    opened<schema::DatasetManifest> m{*r};
    if (!m) {
      why.push_back(fmt::format("{}: {}", n.short_hex(), what_of(m.error())));
      continue;
    }
    if (auto err = check_manifest(m.root())) {
      why.push_back(fmt::format("{}: {}", n.short_hex(), what_of(err)));
      continue;
    }
    if (manifest) {
      opened<schema::DatasetManifest> first{*manifest};
      if (first->getDatasetId() != m->getDatasetId()) {
        why.push_back(fmt::format("{}: holds another dataset with that prefix", n.short_hex()));
        continue;
      }
    } else {
      manifest = *r;
    }
    found.push_back(replica{n, *dst, rtt});
  }
  if (found.empty()) {
    std::string all;
    for (auto& w : why)
      all += (all.empty() ? "" : "; ") + w;
    return make_error(errc::not_found,
                      fmt::format("no data node holds dataset '{}' ({})", id,
                                  all.empty() ? "no data nodes given" : all));
  }
  std::stable_sort(found.begin(), found.end(),
                   [](const replica& a, const replica& b) { return a.rtt_ms < b.rtt_ms; });
  return std::make_pair(std::move(found), std::move(*manifest));
}

caf::expected<table> fetch_dataset(const requester& c, const std::vector<replica>& replicas,
                                   const envelope& manifest, const std::vector<shard_key>* keys,
                                   uint32_t credits, fetch_stats& stats,
                                   const progress_fn& progress) {
  opened<schema::DatasetManifest> m{manifest};
  if (!m)
    return m.error();
  if (replicas.empty())
    return make_error(errc::invalid_argument, "fetch: no replica to fetch from");
  if (credits == 0)
    return make_error(errc::invalid_argument, "fetch: credits must be > 0");
  auto refs = m->getShards();
  size_t n = refs.size();
  if (keys && keys->size() != n)
    return make_error(errc::invalid_argument,
                      fmt::format("fetch: {} keys for {} shares", keys->size(), n));
  hash256 dataset;
  std::memcpy(dataset.data(), m->getDatasetId().begin(), 32);
  std::vector<hash256> hashes(n);
  for (unsigned i = 0; i < n; ++i)
    std::memcpy(hashes[i].data(), refs[i].getHash().begin(), 32);

  // A credit window: `credits` workers each pull one share at a time, and
  // share i is asked for only once share i - credits has been consumed, so
  // at most `credits` shares are ever requested and not yet decrypted. The
  // caller's thread decrypts in order meanwhile.
  struct slot {
    bool ready = false;
    envelope reply;                 ///< owns the bytes
    std::span<const uint8_t> bytes; ///< the verified share inside `reply`
    caf::error err;
  };
  std::vector<slot> slots(n);
  std::mutex mtx;
  std::condition_variable cv;
  size_t next = 0, consumed = 0;
  bool stop = false;

  auto fetch_one = [&](size_t i, slot& out) {
    std::string problems;
    for (auto& rep : replicas) {
      auto req = make_envelope<schema::FetchShares>([&](schema::FetchShares::Builder b) {
        b.initHashes(1).set(0, kj::arrayPtr(hashes[i].data(), 32));
      });
      auto reply = c.request(rep.actor, std::move(req), timeout_of(c));
      std::string problem;
      std::span<const uint8_t> bytes;
      if (!reply) {
        problem = "unreachable: " + what_of(reply.error());
      } else {
        opened<schema::ShareBatch> batch{*reply};
        if (!batch)
          problem = "a malformed answer: " + what_of(batch.error());
        else if (batch->getShares().size() != 1 || batch->getShares()[0].getHash().size() != 32
                 || std::memcmp(batch->getShares()[0].getHash().begin(), hashes[i].data(), 32))
          problem = "missing";
        else {
          auto d = batch->getShares()[0].getBytes();
          bytes = {d.begin(), d.size()};
          if (share_hash(bytes) != hashes[i])
            problem = "corrupt (its bytes do not hash to its address)";
        }
      }
      {
        std::lock_guard<std::mutex> lk{mtx};
        ++stats.requests;
      }
      if (problem.empty()) {
        out.reply = std::move(*reply); // moving keeps the words where they are
        out.bytes = bytes;
        return;
      }
      problems += fmt::format("{}{}: {}", problems.empty() ? "" : "; ", rep.node.short_hex(),
                              problem);
      std::string event = fmt::format("share {} on {}: {}", short_hex(hashes[i]),
                                      rep.node.short_hex(), problem);
      if (reply) { // tell the node; it repairs its copy from a peer
        auto ack = c.request(rep.actor, share_report(hashes[i], dataset, problem), timeout_of(c));
        envelope ack_env = ack ? *ack : envelope{};
        opened<schema::ReportAck> a{ack_env};
        event += ack && a && a->getRepaired() ? "; reported, the node repaired its copy"
                                              : "; reported";
      }
      std::lock_guard<std::mutex> lk{mtx};
      ++stats.bad_copies;
      stats.events.push_back(std::move(event));
    }
    out.err = make_error(errc::not_found,
                         fmt::format("share {} of dataset {}: no replica holds a good copy ({})",
                                     short_hex(hashes[i]), short_hex(dataset), problems));
  };

  std::vector<std::thread> workers;
  for (uint32_t w = 0; w < std::min<size_t>(credits, n); ++w)
    workers.emplace_back([&] {
      for (;;) {
        size_t i;
        {
          std::unique_lock<std::mutex> lk{mtx};
          cv.wait(lk, [&] { return stop || next >= n || next < consumed + credits; });
          if (stop || next >= n)
            return;
          i = next++;
        }
        slot got;
        fetch_one(i, got);
        std::lock_guard<std::mutex> lk{mtx};
        slots[i] = std::move(got);
        slots[i].ready = true;
        cv.notify_all();
      }
    });

  table out;
  out.rows = m->getRows();
  out.features = m->getFeatures();
  out.classes = m->getClasses();
  for (auto name : m->getClassNames())
    out.class_names.emplace_back(name.cStr());
  for (auto name : m->getFeatureNames())
    out.feature_names.emplace_back(name.cStr());
  if (keys) {
    out.x.resize(out.rows * out.features);
    out.y.resize(out.rows);
  }
  bool any_labels = false;
  caf::error err;
  for (size_t i = 0; i < n && !err; ++i) {
    slot s;
    {
      std::unique_lock<std::mutex> lk{mtx};
      cv.wait(lk, [&] { return slots[i].ready; });
      s = std::move(slots[i]);
      consumed = i + 1;
      cv.notify_all();
    }
    if (s.err) {
      err = std::move(s.err);
      break;
    }
    stats.bytes += s.bytes.size();
    ++stats.shares;
    if (keys) {
      auto ref = refs[static_cast<unsigned>(i)];
      auto first = ref.getFirstRow();
      if (first + ref.getRows() > out.rows) {
        err = make_error(errc::invalid_argument, "fetch: a shard lies beyond the manifest's rows");
        break;
      }
      bool labelled = false;
      err = open_share_into(s.bytes, hashes[i], (*keys)[i], ref, out.features,
                            out.x.data() + first * out.features, out.y.data() + first, labelled,
                            false); // checked against its address by the worker
      any_labels |= labelled;
    }
    if (!err && progress)
      progress(i + 1, n, stats.bytes);
  }
  {
    std::lock_guard<std::mutex> lk{mtx};
    stop = true;
    cv.notify_all();
  }
  for (auto& w : workers)
    w.join();
  if (err)
    return err;
  if (!any_labels)
    out.y.clear();
  return out;
}

caf::expected<std::vector<shard_key>> request_keys(const requester& c, const replica& r,
                                                   const identity& trainer,
                                                   const envelope& manifest, const hash256& job,
                                                   const envelope* grant) {
  opened<schema::DatasetManifest> m{manifest};
  if (!m)
    return m.error();
  hash256 dataset;
  std::memcpy(dataset.data(), m->getDatasetId().begin(), 32);
  auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  auto reply = c.request(r.actor, make_key_request(trainer, dataset, job, now, grant),
                         timeout_of(c));
  if (!reply)
    return reply.error();
  opened<schema::KeyRelease> rel{*reply};
  if (!rel)
    return rel.error();
  return open_keys(trainer, rel.root(), m.root());
}

requester host_requester(caf::actor_system& sys, const role_context& ctx) {
  auto timeout = std::chrono::milliseconds{ctx.lim.request_timeout_ms};
  return requester{
    [&sys, dir = ctx.directory, timeout, self = "@" + ctx.self->id().hex()](const std::string& name) {
      auto local = name.size() > self.size() && name.ends_with(self)
                     ? name.substr(0, name.size() - self.size())
                     : name;
      return lookup_blocking(sys, dir, local, timeout);
    },
    [&sys](const caf::actor& dst, envelope req, std::chrono::milliseconds t) {
      return request_blocking(sys, dst, std::move(req), t);
    },
    timeout};
}

std::vector<node_id> hosts_with_role(caf::actor_system& sys, const role_context& ctx,
                                     const std::string& role) {
  auto timeout = std::chrono::milliseconds{ctx.lim.request_timeout_ms};
  std::vector<node_id> out;
  if (lookup_blocking(sys, ctx.directory, role, timeout))
    out.push_back(ctx.self->id());
  caf::scoped_actor self{sys};
  self->request(ctx.directory, timeout, peers_atom::value, role)
    .receive(
      [&](std::vector<std::string>& peers) {
        for (auto& p : peers)
          if (auto id = node_id::from_hex(p))
            out.push_back(*id);
      },
      [](caf::error&) {});
  return out;
}

caf::expected<std::vector<node_id>> upload_model(const requester& c, const node_id& node,
                                                 const envelope& put,
                                                 std::chrono::milliseconds timeout) {
  auto dst = data_node_of(c, node);
  if (!dst)
    return dst.error();
  auto r = c.request(*dst, put, timeout);
  if (!r)
    return r.error();
  opened<schema::ModelStored> done{*r};
  if (!done)
    return done.error();
  std::vector<node_id> out;
  for (auto h : done->getHolders())
    if (auto id = node_id::from_bytes({h.begin(), h.size()}))
      out.push_back(*id);
  return out;
}

caf::expected<table> fetch_for_job(const requester& c, const identity& self,
                                   const std::vector<node_id>& nodes,
                                   const std::string& dataset_hex, const hash256& job,
                                   const envelope* grant) {
  auto found = find_replicas(c, nodes, dataset_hex);
  if (!found)
    return found.error();
  caf::expected<std::vector<shard_key>> keys = make_error(errc::internal, "no replica");
  for (auto& r : found->first) {
    keys = request_keys(c, r, self, found->second, job, grant);
    if (keys || code_of(keys.error()) == errc::forbidden)
      break;
  }
  if (!keys)
    return keys.error();
  fetch_stats stats;
  auto t = fetch_dataset(c, found->first, found->second, &*keys, 4, stats);
  if (t)
    log_info("fetched dataset {} ({} shares, {} bytes, {} bad copies replaced)",
             dataset_hex.substr(0, 16), stats.shares, stats.bytes, stats.bad_copies);
  return t;
}

caf::expected<std::filesystem::path> fetch_model(const requester& c,
                                                 const std::vector<node_id>& nodes,
                                                 const hash256& id,
                                                 const std::filesystem::path& cache_dir,
                                                 uint64_t bytes_max,
                                                 const std::vector<node_id>& owners) {
  auto hex = to_hex({id.data(), id.size()});
  // The operator's choice of whose models this host runs.
  auto allowed = [&](schema::ModelManifest::Reader m) -> caf::error {
    if (owners.empty())
      return caf::none;
    auto owner = node_id::from_bytes({m.getOwner().begin(), m.getOwner().size()});
    if (owner && std::find(owners.begin(), owners.end(), *owner) != owners.end())
      return caf::none;
    return make_error(errc::forbidden,
                      fmt::format("model {} is owned by {}, whose models this host does not run "
                                  "([host] model_owners)",
                                  hex.substr(0, 16), owner ? owner->short_hex() : "?"));
  };
  auto path = cache_dir / (hex + ".pt");
  auto manifest_path = cache_dir / (hex + ".manifest");
  // The cached copy with its manifest, only while both still check (the
  // file's hash, the id bound to its owner, the owner's signature).
  if (auto cached = read_model_file(path, bytes_max)) {
    if (auto man = read_model_file(manifest_path, bytes_max)) {
      auto env = envelope_from_bytes(*man, capnp::typeId<schema::ModelManifest>());
      opened<schema::ModelManifest> m{env};
      if (m && m->getModelId() == capnp::Data::Reader{id.data(), id.size()}
          && !check_model(m.root(), capnp::Data::Reader{cached->data(), cached->size()}, bytes_max)) {
        if (auto err = allowed(m.root()))
          return err;
        return path;
      }
    }
    std::error_code ec;
    std::filesystem::remove(path, ec); // tampered: fetched again below
  }
  std::error_code ec;
  std::filesystem::create_directories(cache_dir, ec);
  if (ec)
    return make_error(errc::io_error,
                      fmt::format("cannot create {}: {}", cache_dir.string(), ec.message()));
  std::string why;
  auto req = make_envelope<schema::ModelFetch>(
    [&](schema::ModelFetch::Builder b) { b.setModelId(kj::arrayPtr(id.data(), 32)); });
  for (auto& node : nodes) {
    auto note = [&](const std::string& what) {
      why += fmt::format("{}{}: {}", why.empty() ? "" : "; ", node.short_hex(), what);
    };
    auto dst = data_node_of(c, node);
    if (!dst) {
      note(describe(dst.error()));
      continue;
    }
    auto r = c.request(*dst, req, c.timeout);
    if (!r) {
      note(describe(r.error()));
      continue;
    }
    opened<schema::ModelFile> f{*r};
    if (!f) {
      note(describe(f.error()));
      continue;
    }
    if (f->getManifest().getModelId() != capnp::Data::Reader{id.data(), id.size()}) {
      note("it answered with another model");
      continue;
    }
    if (auto err = check_model(f->getManifest(), f->getFile(), bytes_max)) {
      note(describe(err));
      continue;
    }
    if (auto err = allowed(f->getManifest()))
      return err;
    auto manifest = copy_envelope<schema::ModelManifest>(f->getManifest());
    auto as_text = [](const auto& bytes) {
      return std::string_view{reinterpret_cast<const char*>(bytes.begin()), bytes.size()};
    };
    if (auto err = write_file_atomic(
          manifest_path, as_text(capnp::Data::Reader{manifest.bytes().data(), manifest.bytes().size()}),
          0644))
      return err;
    if (auto err = write_file_atomic(path, as_text(f->getFile()), 0644))
      return err;
    return path;
  }
  return make_error(errc::not_found,
                    fmt::format("model {}: no data node gave a copy that checks against its id "
                                "({})",
                                hex.substr(0, 16), nodes.empty() ? "no data node known" : why));
}

} // namespace aicon::data
