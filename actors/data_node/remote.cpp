#include "actors/data_node/remote.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <thread>

#include <fmt/format.h>

#include "runtime/error.hpp"

namespace aicon::data {

namespace {

using clock_type = std::chrono::steady_clock;

std::string short_hex(const hash256& h) {
  return to_hex({h.data(), h.size()}).substr(0, 16);
}

std::chrono::milliseconds timeout_of(client& c) {
  return std::chrono::milliseconds{c.lim().request_timeout_ms};
}

envelope share_report(const hash256& h, const hash256& dataset, const std::string& problem) {
  return make_envelope<schema::ShareReport>([&](schema::ShareReport::Builder b) {
    b.setHash(kj::arrayPtr(h.data(), 32));
    b.setDatasetId(kj::arrayPtr(dataset.data(), 32));
    b.setProblem(problem);
  });
}

/// One verified share, in manifest order.
struct fetched {
  size_t index = 0;
  std::vector<uint8_t> bytes;
};

} // namespace

caf::expected<caf::actor> data_node_of(client& c, const node_id& node) {
  return c.lookup("data_node@" + node.hex());
}

caf::expected<std::vector<node_id>> upload_dataset(client& c, const node_id& node,
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
find_replicas(client& c, const std::vector<node_id>& nodes, const std::string& id) {
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

caf::expected<table> fetch_dataset(client& c, const std::vector<replica>& replicas,
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
  if (keys && keys->size() != refs.size())
    return make_error(errc::invalid_argument,
                      fmt::format("fetch: {} keys for {} shares", keys->size(), refs.size()));
  hash256 dataset;
  std::memcpy(dataset.data(), m->getDatasetId().begin(), 32);
  std::vector<hash256> hashes(refs.size());
  for (unsigned i = 0; i < refs.size(); ++i)
    std::memcpy(hashes[i].data(), refs[i].getHash().begin(), 32);

  // The producer pulls `credits` shares per request and hands verified
  // shares over through a queue of at most `credits` entries; the caller's
  // thread decrypts meanwhile. Nothing is ever buffered beyond that.
  std::mutex mtx;
  std::condition_variable cv;
  std::deque<fetched> queue;
  caf::error failure;
  bool finished = false;
  bool cancelled = false;

  auto producer = std::thread([&] {
    auto push = [&](fetched f) {
      std::unique_lock<std::mutex> lk{mtx};
      cv.wait(lk, [&] { return queue.size() < credits || cancelled; });
      if (cancelled)
        return false;
      queue.push_back(std::move(f));
      cv.notify_all();
      return true;
    };
    auto fail = [&](caf::error err) {
      std::lock_guard<std::mutex> lk{mtx};
      failure = std::move(err);
      finished = true;
      cv.notify_all();
    };
    for (size_t first = 0; first < hashes.size(); first += credits) {
      size_t end = std::min(hashes.size(), first + credits);
      std::vector<std::optional<std::vector<uint8_t>>> got(end - first);
      std::vector<std::string> problems(end - first);
      for (size_t r = 0; r < replicas.size(); ++r) {
        std::vector<size_t> wanted;
        for (size_t i = first; i < end; ++i)
          if (!got[i - first])
            wanted.push_back(i);
        if (wanted.empty())
          break;
        auto req = make_envelope<schema::FetchShares>([&](schema::FetchShares::Builder b) {
          auto hs = b.initHashes(static_cast<unsigned>(wanted.size()));
          for (unsigned k = 0; k < wanted.size(); ++k)
            hs.set(k, kj::arrayPtr(hashes[wanted[k]].data(), 32));
        });
        ++stats.requests;
        auto reply = c.request(replicas[r].actor, std::move(req), timeout_of(c));
        std::map<hash256, std::vector<uint8_t>> served;
        if (reply) {
          opened<schema::ShareBatch> batch{*reply};
          if (batch)
            for (auto s : batch->getShares())
              if (s.getHash().size() == 32) {
                hash256 h;
                std::memcpy(h.data(), s.getHash().begin(), 32);
                served[h].assign(s.getBytes().begin(), s.getBytes().end());
              }
        }
        for (auto i : wanted) {
          std::string problem;
          auto it = served.find(hashes[i]);
          if (!reply)
            problem = "unreachable: " + what_of(reply.error());
          else if (it == served.end())
            problem = "missing";
          else if (share_hash(it->second) != hashes[i])
            problem = "corrupt (its bytes do not hash to its address)";
          if (problem.empty()) {
            got[i - first] = std::move(it->second);
            continue;
          }
          problems[i - first] += fmt::format("{}{}: {}", problems[i - first].empty() ? "" : "; ",
                                             replicas[r].node.short_hex(), problem);
          ++stats.bad_copies;
          std::string event = fmt::format("share {} on {}: {}", short_hex(hashes[i]),
                                          replicas[r].node.short_hex(), problem);
          if (reply) { // tell the node; it repairs its copy from a peer
            auto ack = c.request(replicas[r].actor, share_report(hashes[i], dataset, problem),
                                 timeout_of(c));
            envelope ack_env = ack ? *ack : envelope{};
            opened<schema::ReportAck> a{ack_env};
            if (ack && a && a->getRepaired())
              event += "; reported, the node repaired its copy";
            else
              event += "; reported";
          }
          std::lock_guard<std::mutex> lk{mtx};
          stats.events.push_back(std::move(event));
        }
      }
      for (size_t i = first; i < end; ++i) {
        if (!got[i - first])
          return fail(make_error(errc::not_found,
                                 fmt::format("share {} of dataset {}: no replica holds a good "
                                             "copy ({})",
                                             short_hex(hashes[i]), short_hex(dataset),
                                             problems[i - first])));
        if (!push(fetched{i, std::move(*got[i - first])}))
          return;
      }
    }
    std::lock_guard<std::mutex> lk{mtx};
    finished = true;
    cv.notify_all();
  });

  table out;
  out.rows = m->getRows();
  out.features = m->getFeatures();
  out.classes = m->getClasses();
  for (auto n : m->getClassNames())
    out.class_names.emplace_back(n.cStr());
  for (auto n : m->getFeatureNames())
    out.feature_names.emplace_back(n.cStr());
  if (keys)
    out.x.reserve(out.rows * out.features);
  caf::error err;
  size_t done = 0;
  while (true) {
    fetched f;
    {
      std::unique_lock<std::mutex> lk{mtx};
      cv.wait(lk, [&] { return !queue.empty() || finished; });
      if (queue.empty()) {
        err = failure;
        break;
      }
      f = std::move(queue.front());
      queue.pop_front();
      cv.notify_all();
    }
    stats.bytes += f.bytes.size();
    ++stats.shares;
    if (keys) {
      auto t = open_share(f.bytes, hashes[f.index], (*keys)[f.index], refs[f.index],
                          out.features);
      if (!t) {
        err = t.error();
        break;
      }
      out.x.insert(out.x.end(), t->x.begin(), t->x.end());
      out.y.insert(out.y.end(), t->y.begin(), t->y.end());
    }
    ++done;
    if (progress)
      progress(done, hashes.size(), stats.bytes);
  }
  {
    std::lock_guard<std::mutex> lk{mtx};
    cancelled = true;
    cv.notify_all();
  }
  producer.join();
  if (err)
    return err;
  if (done != hashes.size())
    return make_error(errc::internal, "fetch: fewer shares than the manifest lists");
  return out;
}

caf::expected<std::vector<shard_key>> request_keys(client& c, const replica& r,
                                                   const identity& trainer,
                                                   const envelope& manifest, const hash256& job) {
  opened<schema::DatasetManifest> m{manifest};
  if (!m)
    return m.error();
  hash256 dataset;
  std::memcpy(dataset.data(), m->getDatasetId().begin(), 32);
  auto now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  auto reply = c.request(r.actor, make_key_request(trainer, dataset, job, now), timeout_of(c));
  if (!reply)
    return reply.error();
  opened<schema::KeyRelease> rel{*reply};
  if (!rel)
    return rel.error();
  return open_keys(trainer, rel.root(), m.root());
}

} // namespace aicon::data
