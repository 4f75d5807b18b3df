#include "cli/data_cmd.hpp"

#include <cstdio>

#include <chrono>
#include <fstream>

#include <fmt/format.h>

#include "actors/data_node/model_store.hpp"
#include "actors/data_node/remote.hpp"
#include "actors/trainer/torch_model.hpp"
#include "actors/data_node/shard_store.hpp"
#include "actors/job/economy.hpp"
#include "actors/ledger/state.hpp"
#include "runtime/client.hpp"
#include "runtime/error.hpp"
#include "schemas/chain.capnp.h"

namespace aicon {

namespace {

int fail(const caf::error& err) {
  std::fprintf(stderr, "aicon: %s\n", describe(err).c_str());
  return 1;
}

caf::expected<std::unique_ptr<store::environment>> open_store(const data_cmd_options& o) {
  if (o.data_dir.empty())
    return make_error(errc::invalid_argument, "--data-dir DIR is required");
  return store::environment::open(o.data_dir);
}

struct opened_dataset {
  std::unique_ptr<store::environment> env;
  envelope manifest;
};

caf::expected<opened_dataset> open_dataset(const data_cmd_options& o) {
  auto env = open_store(o);
  if (!env)
    return env.error();
  auto m = data::find_dataset(**env, o.id);
  if (!m)
    return m.error();
  return opened_dataset{std::move(*env), std::move(*m)};
}

/// A client linked to the data nodes given with --connect.
struct remote {
  std::unique_ptr<client> c;
  std::vector<node_id> nodes; ///< in --connect order

  static caf::expected<remote> open(const data_cmd_options& o) {
    client::options co;
    co.data_dir = o.data_dir;
    co.dev_open = o.dev_open;
    co.threads = 2;
    auto c = client::start(co);
    if (!c)
      return c.error();
    remote r{std::move(*c), {}};
    std::string why;
    for (auto& addr : o.connect) {
      auto id = r.c->connect(addr);
      if (id)
        r.nodes.push_back(*id);
      else
        why += (why.empty() ? "" : "; ") + describe(id.error());
    }
    if (r.nodes.empty())
      return make_error(errc::peer_down, "no data node reachable: " + why);
    if (!why.empty())
      std::fprintf(stderr, "aicon: warning: %s\n", why.c_str());
    return r;
  }

  caf::expected<envelope> ask(const node_id& node, const std::string& role, envelope req,
                              std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
    auto dst = c->lookup(role + "@" + node.hex());
    if (!dst)
      return dst.error();
    return c->request(*dst, std::move(req), timeout);
  }
};

caf::expected<identity> key_of(const data_cmd_options& o) {
  if (!o.key.empty())
    return load_key_file(o.key);
  return load_identity(o.data_dir);
}

void print_manifest_line(schema::DatasetManifest::Reader m) {
  std::printf("%-16s %-20s %8llu %8llu %7u %6u %8llu\n",
              to_hex({m.getDatasetId().begin(), 32}).substr(0, 16).c_str(), m.getName().cStr(),
              static_cast<unsigned long long>(m.getRows()),
              static_cast<unsigned long long>(m.getFeatures()), m.getClasses(),
              m.getShards().size(), static_cast<unsigned long long>(m.getPrice()));
}

void print_ls_header() {
  std::printf("%-16s %-20s %8s %8s %7s %6s %8s\n", "id", "name", "rows", "features", "classes",
              "shards", "price");
}

void print_preview(schema::DatasetManifest::Reader man) {
  std::printf("dataset %s (%s): %llu rows x %llu features, %u classes, transform %s, price %llu\n",
              to_hex({man.getDatasetId().begin(), 32}).c_str(), man.getName().cStr(),
              static_cast<unsigned long long>(man.getRows()),
              static_cast<unsigned long long>(man.getFeatures()), man.getClasses(),
              man.getTransform().getKind().cStr(),
              static_cast<unsigned long long>(man.getPrice()));
  for (auto p : man.getPreview()) {
    std::printf("row %llu label %d:", static_cast<unsigned long long>(p.getRow()), p.getY());
    for (auto v : p.getX())
      std::printf(" %g", static_cast<double>(v));
    std::printf("\n");
  }
}

/// Registers dataset `id` on the chain as an asset owned by `owner`, through
/// `host`'s block generator, and says what became of it.
void register_on_chain(remote& r, const node_id& host, const identity& owner,
                       const data::hash256& id, uint64_t price, const char* kind = "dataset",
                       const data::hash256* metadata = nullptr) {
  auto nonce = register_asset(*r.c, host, owner, id, price, kind, metadata ? *metadata : id);
  if (!nonce)
    std::printf("not registered on the chain: %s\n", describe(nonce.error()).c_str());
  else
    std::printf("asset registration submitted (owner %s, nonce %llu); final with the next block\n",
                owner.id().short_hex().c_str(), static_cast<unsigned long long>(*nonce));
}

caf::error write_npy(const std::string& path, const char* descr, uint64_t rows, uint64_t cols,
                     const void* data, size_t bytes) {
  std::string dict = cols ? fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}, {}), }}",
                                        descr, rows, cols)
                          : fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({},), }}",
                                        descr, rows);
  size_t total = 10 + dict.size() + 1;
  dict.append((64 - total % 64) % 64, ' ');
  dict.push_back('\n');
  std::ofstream f{path, std::ios::binary | std::ios::trunc};
  if (!f)
    return make_error(errc::io_error, fmt::format("cannot write {}", path));
  uint16_t len = static_cast<uint16_t>(dict.size());
  f.write("\x93NUMPY\x01\x00", 8);
  char le[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  f.write(le, 2);
  f.write(dict.data(), static_cast<std::streamsize>(dict.size()));
  f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!f.flush())
    return make_error(errc::io_error, fmt::format("cannot write {}", path));
  return caf::none;
}

} // namespace

int data_put(const data_cmd_options& o) {
  if (o.delimiter.size() != 1)
    return fail(make_error(errc::invalid_argument, "--delimiter must be one character"));
  if (o.standardize && o.minmax)
    return fail(make_error(errc::invalid_argument, "--standardize and --minmax exclude each other"));
  auto owner = key_of(o);
  if (!owner)
    return fail(owner.error());
  data::csv_options csv;
  csv.delimiter = o.delimiter[0];
  if (o.label_col)
    csv.label_col = *o.label_col;
  csv.skip_rows = o.skip_rows;
  std::optional<std::filesystem::path> labels;
  if (!o.labels.empty())
    labels = o.labels;
  // Read and check everything before the store is even opened: bad input
  // leaves nothing behind.
  auto t = data::read_any(o.file, labels, csv, o.label_col);
  if (!t)
    return fail(t.error());
  auto tr = data::fit_and_apply(*t, o.standardize ? data::transform::kind::standardize
                                    : o.minmax    ? data::transform::kind::minmax
                                                  : data::transform::kind::none);
  data::put_options po;
  po.name = o.name.empty() ? std::filesystem::path{o.file}.filename().string() : o.name;
  po.source = std::filesystem::path{o.file}.filename().string();
  po.price = o.price;
  po.shard_bytes = o.shard_bytes;
  po.preview_rows = o.preview_rows;
  if (!o.connect.empty()) {
    auto key = key_of(o);
    if (!key)
      return fail(key.error());
    auto built = data::build_dataset(*key, *t, tr, po);
    if (!built)
      return fail(built.error());
    auto r = remote::open(o);
    if (!r)
      return fail(r.error());
    auto holders = data::upload_dataset(*r->c, r->nodes[0], *built, o.replicas,
                                        r->c->lim().upload_batch_bytes, std::chrono::minutes(5));
    if (!holders)
      return fail(holders.error());
    opened<schema::DatasetManifest> man{built->manifest};
    data::hash256 id;
    std::memcpy(id.data(), man->getDatasetId().begin(), 32);
    std::printf("dataset %s\n", to_hex({id.data(), 32}).c_str());
    std::printf("%llu rows, %llu features, %u classes, %u shards, transform %s, price %llu\n",
                static_cast<unsigned long long>(t->rows),
                static_cast<unsigned long long>(t->features), t->classes,
                man->getShards().size(), data::to_string(tr.what),
                static_cast<unsigned long long>(o.price));
    std::string names;
    for (auto& h : *holders) {
      names += ' ';
      names += h.short_hex();
    }
    std::printf("stored on %zu of %u data nodes wanted:%s\n", holders->size(), o.replicas,
                names.c_str());
    if (o.register_asset)
      register_on_chain(*r, r->nodes[0], *key, id, o.price);
    return holders->size() >= o.replicas ? 0 : 2;
  }
  auto env = open_store(o);
  if (!env)
    return fail(env.error());
  auto m = data::put_dataset(**env, *owner, *t, tr, po);
  if (!m)
    return fail(m.error());
  opened<schema::DatasetManifest> man{*m};
  std::printf("dataset %s\n", to_hex({man->getDatasetId().begin(), 32}).c_str());
  std::printf("%llu rows, %llu features, %u classes, %u shards, transform %s, price %llu\n",
              static_cast<unsigned long long>(t->rows),
              static_cast<unsigned long long>(t->features), t->classes,
              man->getShards().size(), data::to_string(tr.what),
              static_cast<unsigned long long>(o.price));
  return 0;
}

int data_ls(const data_cmd_options& o) {
  if (!o.connect.empty()) {
    auto r = remote::open(o);
    if (!r)
      return fail(r.error());
    for (auto& n : r->nodes) {
      auto reply = r->ask(n, "data_node", make_envelope<schema::DataQuery>([](auto q) { q.setList(); }));
      if (!reply) {
        std::printf("node %s: %s\n", n.short_hex().c_str(), describe(reply.error()).c_str());
        continue;
      }
      opened<schema::DatasetList> list{*reply};
      if (!list)
        return fail(list.error());
      std::printf("node %s: %u dataset(s)\n", n.short_hex().c_str(), list->getManifests().size());
      print_ls_header();
      for (auto m : list->getManifests())
        print_manifest_line(m);
    }
    return 0;
  }
  auto env = open_store(o);
  if (!env)
    return fail(env.error());
  auto all = data::list_datasets(**env);
  if (!all)
    return fail(all.error());
  print_ls_header();
  for (auto& env_m : *all) {
    opened<schema::DatasetManifest> m{env_m};
    if (m)
      print_manifest_line(m.root());
  }
  return 0;
}

int data_preview(const data_cmd_options& o) {
  if (!o.connect.empty()) {
    auto r = remote::open(o);
    if (!r)
      return fail(r.error());
    auto found = data::find_replicas(*r->c, r->nodes, o.id);
    if (!found)
      return fail(found.error());
    print_preview(opened<schema::DatasetManifest>{found->second}.root());
    return 0;
  }
  auto ds = open_dataset(o);
  if (!ds)
    return fail(ds.error());
  print_preview(opened<schema::DatasetManifest>{ds->manifest}.root());
  return 0;
}

int data_verify(const data_cmd_options& o) {
  if (!o.connect.empty()) {
    // Every replica reachable re-hashes and decrypts its own copy.
    auto r = remote::open(o);
    if (!r)
      return fail(r.error());
    auto found = data::find_replicas(*r->c, r->nodes, o.id);
    if (!found)
      return fail(found.error());
    opened<schema::DatasetManifest> man{found->second};
    size_t problems = 0;
    for (auto& rep : found->first) {
      auto q = make_envelope<schema::DataQuery>([&](schema::DataQuery::Builder b) {
        b.setVerify(man->getDatasetId());
      });
      auto reply = r->c->request(rep.actor, std::move(q), std::chrono::minutes(5));
      envelope answer = reply ? *reply : envelope{};
      opened<schema::VerifyResult> v{answer};
      if (!reply || !v) {
        ++problems;
        std::printf("node %s: cannot verify: %s\n", rep.node.short_hex().c_str(),
                    reply ? "bad answer" : describe(reply.error()).c_str());
        continue;
      }
      for (auto p : v->getProblems())
        std::printf("node %s: problem: %s\n", rep.node.short_hex().c_str(), p.cStr());
      problems += v->getProblems().size();
      std::printf("node %s: %llu shares, %llu bytes re-hashed and decrypted: %u problem(s)\n",
                  rep.node.short_hex().c_str(), static_cast<unsigned long long>(v->getShards()),
                  static_cast<unsigned long long>(v->getBytes()), v->getProblems().size());
    }
    return problems == 0 ? 0 : 1;
  }
  auto ds = open_dataset(o);
  if (!ds)
    return fail(ds.error());
  auto r = data::verify_dataset(*ds->env, ds->manifest);
  if (!r)
    return fail(r.error());
  for (auto& p : r->problems)
    std::printf("problem: %s\n", p.c_str());
  std::printf("%llu shares, %llu bytes re-hashed and decrypted on this store: %zu problem(s)\n",
              static_cast<unsigned long long>(r->shards),
              static_cast<unsigned long long>(r->bytes), r->problems.size());
  return r->problems.empty() ? 0 : 1;
}

int data_fetch(const data_cmd_options& o) {
  if (o.connect.empty())
    return fail(make_error(errc::invalid_argument, "--connect host:port is required"));
  auto job = node_id::from_hex(o.job); // 32 bytes in hex, like a NodeId
  if (!job)
    return fail(make_error(errc::invalid_argument, "--job: " + what_of(job.error())));
  auto trainer = key_of(o);
  if (!trainer)
    return fail(trainer.error());
  auto r = remote::open(o);
  if (!r)
    return fail(r.error());
  auto found = data::find_replicas(*r->c, r->nodes, o.id);
  if (!found)
    return fail(found.error());
  auto& [replicas, manifest] = *found;
  std::string order;
  for (auto& rep : replicas)
    order += fmt::format(" {} ({:.2f} ms)", rep.node.short_hex(), rep.rtt_ms);
  std::fprintf(stderr, "replicas, nearest first:%s\n", order.c_str());
  data::hash256 job_id;
  std::memcpy(job_id.data(), job->bytes.data(), 32);
  caf::expected<std::vector<data::shard_key>> keys = make_error(errc::internal, "no replica");
  for (auto& rep : replicas) {
    keys = data::request_keys(*r->c, rep, *trainer, manifest, job_id);
    if (keys || code_of(keys.error()) == errc::forbidden)
      break; // a refusal is the same on every replica
  }
  if (!keys)
    return fail(keys.error());
  data::fetch_stats stats;
  auto t0 = std::chrono::steady_clock::now();
  auto last = t0;
  auto t = data::fetch_dataset(
    *r->c, replicas, manifest, &*keys, o.credits, stats,
    [&](uint64_t done, uint64_t all, uint64_t bytes) {
      auto now = std::chrono::steady_clock::now();
      if (now - last < std::chrono::milliseconds(500) && done != all)
        return;
      last = now;
      double s = std::chrono::duration<double>(now - t0).count();
      double rate = s > 0 ? bytes / s / 1e6 : 0;
      double eta = done ? s * (all - done) / done : 0;
      std::fprintf(stderr, "\rfetch %llu/%llu shares, %.1f MB/s, ETA %.0f s   ",
                   static_cast<unsigned long long>(done), static_cast<unsigned long long>(all),
                   rate, eta);
      if (done == all)
        std::fprintf(stderr, "\n");
    });
  for (auto& e : stats.events)
    std::printf("bad copy: %s\n", e.c_str());
  if (!t)
    return fail(t.error());
  std::printf("fetched %llu shares (%llu bytes) in %llu requests; %llu bad copies replaced from "
              "other replicas\n",
              static_cast<unsigned long long>(stats.shares),
              static_cast<unsigned long long>(stats.bytes),
              static_cast<unsigned long long>(stats.requests),
              static_cast<unsigned long long>(stats.bad_copies));
  std::printf("%llu rows x %llu features, %u classes\n", static_cast<unsigned long long>(t->rows),
              static_cast<unsigned long long>(t->features), t->classes);
  if (!o.out.empty()) {
    if (auto err = write_npy(o.out + ".x.npy", "<f4", t->rows, t->features, t->x.data(),
                             t->x.size() * 4))
      return fail(err);
    if (!t->y.empty())
      if (auto err = write_npy(o.out + ".y.npy", "<i4", t->rows, 0, t->y.data(), t->y.size() * 4))
        return fail(err);
    std::printf("wrote %s.x.npy%s\n", o.out.c_str(), t->y.empty() ? "" : (" and " + o.out + ".y.npy").c_str());
  }
  return 0;
}

int data_challenges(const data_cmd_options& o) {
  if (o.connect.empty())
    return fail(make_error(errc::invalid_argument, "--connect host:port is required"));
  auto r = remote::open(o);
  if (!r)
    return fail(r.error());
  for (auto& n : r->nodes) {
    auto reply = r->ask(n, "data_node",
                        make_envelope<schema::DataQuery>([](auto q) { q.setChallenges(); }));
    if (!reply)
      return fail(reply.error());
    opened<schema::ChallengeLog> log{*reply};
    if (!log)
      return fail(log.error());
    std::printf("node %s challenged its peers %u time(s)\n", n.short_hex().c_str(),
                log->getRecords().size());
    for (auto rec : log->getRecords()) {
      std::printf("  %llu %s share %s: %s%s\n", static_cast<unsigned long long>(rec.getTimeMs()),
                  to_hex({rec.getNode().begin(), rec.getNode().size()}).substr(0, 16).c_str(),
                  to_hex({rec.getHash().begin(), rec.getHash().size()}).substr(0, 16).c_str(),
                  rec.getOk() ? "answered" : "FAILED: ", rec.getProblem().cStr());
    }
  }
  return 0;
}

caf::expected<uint64_t> register_asset(client& c, const node_id& host, const identity& owner,
                                       const data::hash256& id, uint64_t price,
                                       const std::string& kind, const data::hash256& metadata) {
  auto ask = [&](const std::string& role, envelope req) -> caf::expected<envelope> {
    auto dst = c.lookup(role + "@" + host.hex());
    if (!dst)
      return dst.error();
    return c.request(*dst, std::move(req), std::chrono::seconds(15));
  };
  auto info = ask("ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                    q.setAccount(kj::arrayPtr(owner.id().bytes.data(), 32));
                  }));
  if (!info)
    return info.error();
  opened<schema::AccountInfo> acct{*info};
  if (!acct)
    return make_error(errc::malformed_message, "the ledger's AccountInfo: " + describe(acct.error()));
  auto nonce = acct->getNonce() + 1;
  auto chain = train::chain_id_of([&](envelope q) { return ask("ledger", std::move(q)); });
  if (!chain)
    return chain.error();
  auto tx = ledger::make_signed_transaction(owner, *chain, nonce,
                                            [&](schema::Transaction::Body::Builder b) {
    auto a = b.initAssetRegister();
    a.setAssetId(kj::arrayPtr(id.data(), 32));
    a.setKind(kind);
    a.setMetadataHash(kj::arrayPtr(metadata.data(), 32)); // a dataset: its manifest's hash; a model: its file's
    a.setPrice(price);                               // paid by each job that uses it
  });
  auto ack = ask("block_generator", tx);
  if (!ack)
    return ack.error();
  return nonce;
}

int model_put(const data_cmd_options& o) {
  if (o.connect.empty())
    return fail(make_error(errc::invalid_argument, "--connect host:port of a data node is required"));
  auto key = key_of(o);
  if (!key)
    return fail(key.error());
  auto bytes = data::read_model_file(o.file, limits{}.model_bytes_max);
  if (!bytes)
    return fail(bytes.error());
  // The contract first, where this client can load libtorch: a file no
  // trainer would take is not worth storing.
  if (train::torch_available()) {
    auto m = train::torch_module::load(o.file);
    if (!m)
      return fail(m.error());
    std::printf("%s meets the model contract: forward(float32[B, %u]) -> float32[B, %u], %zu "
                "parameters\n",
                o.file.c_str(), (*m)->features(), (*m)->classes(), (*m)->trainable_count());
  } else {
    std::printf("this client has no libtorch: the trainers check the model contract\n");
  }
  auto r = remote::open(o);
  if (!r)
    return fail(r.error());
  auto name = o.name.empty() ? std::filesystem::path{o.file}.filename().string() : o.name;
  auto put = data::make_model_put(*key, *bytes, name, o.replicas);
  auto holders = data::upload_model(*r->c, r->nodes[0], put, std::chrono::minutes(2));
  if (!holders)
    return fail(holders.error());
  auto [id, file_hash] = data::model_put_ids(put);
  std::string names;
  for (auto& h : *holders)
    names += " " + h.short_hex();
  std::printf("stored on %zu of %u data nodes wanted:%s\n", holders->size(), o.replicas,
              names.c_str());
  if (o.register_asset)
    register_on_chain(*r, r->nodes[0], *key, id, o.price, "model", &file_hash);
  std::printf("train it with --model torch:%s (price %llu per job)\n", to_hex({id.data(), 32}).c_str(),
              static_cast<unsigned long long>(o.price));
  std::printf("model %s\n", to_hex({id.data(), 32}).c_str());
  return holders->size() >= o.replicas ? 0 : 2;
}

} // namespace aicon
