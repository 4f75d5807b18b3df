#include "actors/data_node/shard_store.hpp"

#include <algorithm>
#include <cstring>
#include <set>

#include <capnp/serialize.h>
#include <fmt/format.h>
#include <sodium.h>

#include "runtime/error.hpp"

namespace aicon::data {

namespace {

constexpr std::string_view shard_ad = "aicon-shard-v1"; // AEAD additional data
constexpr size_t nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr size_t key_bytes = crypto_aead_xchacha20poly1305_ietf_KEYBYTES;

std::span<const uint8_t> span_of(const hash256& h) {
  return {h.data(), h.size()};
}


kj::ArrayPtr<const kj::byte> bytes_of(const void* p, size_t n) {
  return kj::arrayPtr(static_cast<const kj::byte*>(p), n);
}

} // namespace

hash256 share_hash(std::span<const uint8_t> share) {
  hash256 out;
  crypto_generichash(out.data(), out.size(), share.data(), share.size(), nullptr, 0);
  return out;
}

caf::expected<hash256> hash_of(capnp::Data::Reader d, const char* what) {
  if (d.size() != 32)
    return make_error(errc::invalid_argument,
                      fmt::format("{} must be 32 bytes, not {}", what, d.size()));
  hash256 h;
  std::memcpy(h.data(), d.begin(), 32);
  return h;
}

hash256 manifest_id(schema::DatasetManifest::Reader m) {
  capnp::MallocMessageBuilder copy;
  copy.setRoot(m);
  auto b = copy.getRoot<schema::DatasetManifest>();
  b.disownDatasetId(); // absent, as when the id was computed
  b.disownOwnerSignature();
  kj::Array<capnp::word> keep;
  return ledger::blake2b("aicon-dataset-v1", ledger::canonical_bytes(b.asReader(), keep));
}

caf::error check_manifest(schema::DatasetManifest::Reader m) {
  auto id = hash_of(m.getDatasetId(), "manifest.datasetId");
  if (!id)
    return id.error();
  if (*id != manifest_id(m))
    return make_error(errc::invalid_argument,
                      "manifest: datasetId is not the hash of the manifest (altered or forged)");
  if (m.getOwner().size() != 32)
    return make_error(errc::invalid_argument, "manifest: owner must be 32 bytes");
  auto owner = node_id::from_bytes({m.getOwner().begin(), 32});
  auto sig = m.getOwnerSignature();
  if (!owner || sig.size() != 64
      || !verify_signature(*owner, owner_signing_bytes(*id), {sig.begin(), sig.size()}))
    return make_error(errc::bad_signature,
                      fmt::format("manifest: ownerSignature is not by the owner it names ({}): "
                                  "only a dataset's owner may upload it under that name",
                                  owner ? owner->short_hex() : "?"));
  if (m.getFeatures() == 0 || m.getRows() == 0)
    return make_error(errc::invalid_argument, "manifest: no rows or no features");
  uint64_t next = 0;
  unsigned i = 0;
  for (auto ref : m.getShards()) {
    if (ref.getHash().size() != 32)
      return make_error(errc::invalid_argument,
                        fmt::format("manifest: shard {} hash is not 32 bytes", i));
    if (ref.getFirstRow() != next || ref.getRows() == 0)
      return make_error(errc::invalid_argument,
                        fmt::format("manifest: shard {} starts at row {}, expected {}", i,
                                    ref.getFirstRow(), next));
    next += ref.getRows();
    ++i;
  }
  if (next != m.getRows())
    return make_error(errc::invalid_argument,
                      fmt::format("manifest: shards cover {} rows of {}", next, m.getRows()));
  auto tr = m.getTransform();
  if ((tr.getShift().size() != 0 || tr.getScale().size() != 0)
      && (tr.getShift().size() != m.getFeatures() || tr.getScale().size() != m.getFeatures()))
    return make_error(errc::invalid_argument,
                      "manifest: the transform needs one shift and one scale per feature");
  return caf::none;
}

std::vector<uint8_t> owner_signing_bytes(const hash256& dataset) {
  static constexpr std::string_view tag = "aicon-dataset-owner-v1";
  std::vector<uint8_t> out(tag.begin(), tag.end());
  out.insert(out.end(), dataset.begin(), dataset.end());
  return out;
}

caf::expected<built_dataset> build_dataset(const identity& owner_key, const table& t,
                                           const transform& tr, const put_options& opts) {
  const node_id& owner = owner_key.id();
  if (t.rows == 0 || t.features == 0)
    return make_error(errc::invalid_argument, "put: the dataset has no rows or no features");
  uint64_t row_bytes = t.features * 4 + (t.y.empty() ? 0 : 4);
  if (opts.shard_bytes < row_bytes)
    return make_error(errc::invalid_argument,
                      fmt::format("put: shard_bytes {} is smaller than one row ({} bytes)",
                                  opts.shard_bytes, row_bytes));
  uint64_t rows_per_shard = opts.shard_bytes / row_bytes;
  struct built {
    std::vector<uint8_t> share;
    hash256 hash;
    std::array<uint8_t, key_bytes> key;
    uint64_t first, rows;
  };
  std::vector<built> shards;
  for (uint64_t first = 0; first < t.rows; first += rows_per_shard) {
    auto rows = std::min(rows_per_shard, t.rows - first);
    auto plain = make_envelope<schema::ShardData>([&](schema::ShardData::Builder b) {
      b.setFirstRow(first);
      b.setRows(rows);
      b.setFeatures(t.features);
      b.setX(bytes_of(t.x.data() + first * t.features, rows * t.features * 4));
      if (!t.y.empty())
        b.setY(bytes_of(t.y.data() + first, rows * 4));
    });
    auto pt = plain.bytes();
    built s;
    s.first = first;
    s.rows = rows;
    crypto_aead_xchacha20poly1305_ietf_keygen(s.key.data());
    s.share.resize(nonce_bytes + pt.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES);
    randombytes_buf(s.share.data(), nonce_bytes);
    unsigned long long clen = 0;
    crypto_aead_xchacha20poly1305_ietf_encrypt(
      s.share.data() + nonce_bytes, &clen, pt.data(), pt.size(),
      reinterpret_cast<const uint8_t*>(shard_ad.data()), shard_ad.size(), nullptr,
      s.share.data(), s.key.data());
    s.share.resize(nonce_bytes + clen);
    s.hash = share_hash(s.share);
    shards.push_back(std::move(s));
  }
  // A preview of k distinct random rows, in row order.
  std::set<uint64_t> picked;
  auto k = std::min<uint64_t>(opts.preview_rows, t.rows);
  while (picked.size() < k)
    picked.insert(randombytes_uniform(static_cast<uint32_t>(std::min<uint64_t>(t.rows, UINT32_MAX))));
  auto fill = [&](schema::DatasetManifest::Builder m) {
    m.setOwner(kj::arrayPtr(owner.bytes.data(), 32));
    m.setName(opts.name);
    m.setSource(opts.source);
    m.setRows(t.rows);
    m.setFeatures(t.features);
    m.setClasses(t.classes);
    auto cn = m.initClassNames(static_cast<unsigned>(t.class_names.size()));
    for (unsigned i = 0; i < t.class_names.size(); ++i)
      cn.set(i, t.class_names[i]);
    auto fn = m.initFeatureNames(static_cast<unsigned>(t.feature_names.size()));
    for (unsigned i = 0; i < t.feature_names.size(); ++i)
      fn.set(i, t.feature_names[i]);
    m.setDtype("float32");
    auto trb = m.initTransform();
    trb.setKind(to_string(tr.what));
    auto sh = trb.initShift(static_cast<unsigned>(tr.shift.size()));
    auto sc = trb.initScale(static_cast<unsigned>(tr.scale.size()));
    for (unsigned i = 0; i < tr.shift.size(); ++i) {
      sh.set(i, tr.shift[i]);
      sc.set(i, tr.scale[i]);
    }
    m.setPrice(opts.price);
    auto refs = m.initShards(static_cast<unsigned>(shards.size()));
    for (unsigned i = 0; i < shards.size(); ++i) {
      refs[i].setHash(kj::arrayPtr(shards[i].hash.data(), 32));
      refs[i].setFirstRow(shards[i].first);
      refs[i].setRows(shards[i].rows);
      refs[i].setBytes(shards[i].share.size());
    }
    auto pv = m.initPreview(static_cast<unsigned>(picked.size()));
    unsigned i = 0;
    for (auto row : picked) {
      auto p = pv[i++];
      p.setRow(row);
      p.setY(t.y.empty() ? -1 : t.y[row]);
      auto xs = p.initX(static_cast<unsigned>(t.features));
      for (unsigned c = 0; c < t.features; ++c)
        xs.set(c, t.x[row * t.features + c]);
    }
  };
  auto unnamed = make_envelope<schema::DatasetManifest>(fill);
  kj::Array<capnp::word> keep;
  auto id = ledger::blake2b("aicon-dataset-v1",
                            ledger::canonical_bytes(opened<schema::DatasetManifest>{unnamed}.root(),
                                                    keep));
  built_dataset out;
  out.manifest = make_envelope<schema::DatasetManifest>([&](schema::DatasetManifest::Builder m) {
    fill(m);
    m.setDatasetId(kj::arrayPtr(id.data(), 32));
    auto sig = owner_key.sign(owner_signing_bytes(id));
    m.setOwnerSignature(kj::arrayPtr(sig.data(), sig.size()));
  });
  for (auto& s : shards) {
    out.shares.push_back(std::move(s.share));
    out.keys.push_back(s.key);
  }
  return out;
}

caf::error store_dataset(store::environment& env, const built_dataset& d) {
  opened<schema::DatasetManifest> m{d.manifest};
  if (!m)
    return m.error();
  auto refs = m->getShards();
  if (refs.size() != d.shares.size() || refs.size() != d.keys.size())
    return make_error(errc::invalid_argument, "store: shares and keys do not match the manifest");
  auto txn = store::txn::begin(env, true);
  if (!txn)
    return txn.error();
  for (unsigned i = 0; i < refs.size(); ++i) {
    auto h = refs[i].getHash();
    std::span<const uint8_t> key{h.begin(), h.size()};
    if (auto err = txn->put(store::db::shares, key, d.shares[i]))
      return err;
    if (auto err = txn->put(store::db::shard_keys, key, d.keys[i]))
      return err;
  }
  auto id = m->getDatasetId();
  if (auto err = txn->put(store::db::datasets, {id.begin(), id.size()}, d.manifest.bytes()))
    return err;
  return txn->commit(); // shares, keys and manifest together or not at all
}

caf::expected<envelope> put_dataset(store::environment& env, const identity& owner,
                                    const table& t, const transform& tr, const put_options& opts) {
  auto d = build_dataset(owner, t, tr, opts);
  if (!d)
    return d.error();
  if (auto err = store_dataset(env, *d))
    return err;
  return d->manifest;
}

caf::expected<std::vector<envelope>> list_datasets(store::environment& env) {
  auto txn = store::txn::begin(env, false);
  if (!txn)
    return txn.error();
  std::vector<envelope> out;
  auto err = txn->for_each(store::db::datasets, [&](auto, std::span<const uint8_t> v) {
    out.push_back(envelope_from_bytes(v, capnp::typeId<schema::DatasetManifest>()));
    return true;
  });
  if (err)
    return err;
  return out;
}

caf::expected<envelope> find_dataset(store::environment& env, const std::string& id) {
  if (id.size() < 8)
    return make_error(errc::invalid_argument,
                      fmt::format("dataset id '{}': give the id or a prefix of >= 8 hex digits", id));
  auto all = list_datasets(env);
  if (!all)
    return all.error();
  std::optional<envelope> found;
  for (auto& m : *all) {
    opened<schema::DatasetManifest> o{m};
    if (!o)
      continue;
    if (to_hex({o->getDatasetId().begin(), o->getDatasetId().size()}).rfind(id, 0) == 0) {
      if (found)
        return make_error(errc::invalid_argument,
                          fmt::format("dataset id prefix '{}' is ambiguous", id));
      found = m;
    }
  }
  if (!found)
    return make_error(errc::not_found, fmt::format("no dataset '{}' in this store", id));
  return *found;
}

caf::error open_share_into(std::span<const uint8_t> share, const hash256& hash,
                           std::span<const uint8_t> key, schema::ShardRef::Reader ref,
                           uint64_t features, float* x, int32_t* y, bool& labelled,
                           bool check_hash) {
  auto short_hash = [&] { return to_hex(span_of(hash)).substr(0, 16); };
  if (check_hash && share_hash(share) != hash)
    return make_error(errc::invalid_argument,
                      fmt::format("share {} is corrupt: its bytes do not hash to its address",
                                  short_hash()));
  constexpr size_t overhead = nonce_bytes + crypto_aead_xchacha20poly1305_ietf_ABYTES;
  if (share.size() < overhead || (share.size() - overhead) % sizeof(capnp::word) != 0
      || key.size() != key_bytes)
    return make_error(errc::invalid_argument,
                      fmt::format("share {} has a size no shard can have", short_hash()));
  // Decrypted straight into the words of a message: no copy after.
  envelope env;
  env.type_id = capnp::typeId<schema::ShardData>();
  env.words.resize((share.size() - overhead) / sizeof(capnp::word));
  unsigned long long plen = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
        reinterpret_cast<uint8_t*>(env.words.data()), &plen, nullptr, share.data() + nonce_bytes,
        share.size() - nonce_bytes, reinterpret_cast<const uint8_t*>(shard_ad.data()),
        shard_ad.size(), share.data(), key.data())
      != 0)
    return make_error(errc::bad_signature,
                      fmt::format("share {} does not decrypt with its key", short_hash()));
  opened<schema::ShardData> sd{env};
  if (!sd)
    return sd.error();
  auto rows = sd->getRows();
  labelled = sd->getY().size() != 0;
  if (sd->getFirstRow() != ref.getFirstRow() || rows != ref.getRows()
      || sd->getFeatures() != features || sd->getX().size() != rows * features * 4
      || (labelled && sd->getY().size() != rows * 4))
    return make_error(errc::invalid_argument,
                      fmt::format("share {} holds other rows than its manifest says", short_hash()));
  std::memcpy(x, sd->getX().begin(), rows * features * 4);
  if (labelled)
    std::memcpy(y, sd->getY().begin(), rows * 4);
  return caf::none;
}

caf::expected<table> open_share(std::span<const uint8_t> share, const hash256& hash,
                                std::span<const uint8_t> key, schema::ShardRef::Reader ref,
                                uint64_t features) {
  table t;
  t.rows = ref.getRows();
  t.features = features;
  t.x.resize(t.rows * features);
  t.y.resize(t.rows);
  bool labelled = false;
  if (auto err = open_share_into(share, hash, key, ref, features, t.x.data(), t.y.data(),
                                 labelled, true))
    return err;
  if (!labelled)
    t.y.clear();
  return t;
}

namespace {

/// Calls `fn(ref, opened shard or error)` for each shard of `manifest`.
template <class F>
caf::error each_shard(store::environment& env, const envelope& manifest, F fn) {
  opened<schema::DatasetManifest> m{manifest};
  if (!m)
    return m.error();
  auto txn = store::txn::begin(env, false);
  if (!txn)
    return txn.error();
  for (auto ref : m->getShards()) {
    if (ref.getHash().size() != 32)
      return make_error(errc::invalid_argument, "manifest: a shard hash is not 32 bytes");
    hash256 h;
    std::memcpy(h.data(), ref.getHash().begin(), 32);
    auto share = txn->get(store::db::shares, span_of(h));
    if (!share)
      return share.error();
    auto key = txn->get(store::db::shard_keys, span_of(h));
    if (!key)
      return key.error();
    if (!*share || !*key) {
      fn(ref, caf::expected<table>{make_error(errc::not_found,
                                              fmt::format("share {} is missing",
                                                          to_hex(span_of(h)).substr(0, 16)))},
         0);
      continue;
    }
    fn(ref, open_share(**share, h, **key, ref, m->getFeatures()), (*share)->size());
  }
  return caf::none;
}

} // namespace

caf::expected<verify_report> verify_dataset(store::environment& env, const envelope& manifest) {
  verify_report r;
  auto err = each_shard(env, manifest, [&](auto, caf::expected<table> t, uint64_t bytes) {
    ++r.shards;
    r.bytes += bytes;
    if (!t)
      r.problems.push_back(describe(t.error()));
  });
  if (err)
    return err;
  return r;
}

caf::expected<table> load_dataset(store::environment& env, const envelope& manifest) {
  opened<schema::DatasetManifest> m{manifest};
  if (!m)
    return m.error();
  table out;
  out.rows = m->getRows();
  out.features = m->getFeatures();
  out.classes = m->getClasses();
  caf::error first;
  auto err = each_shard(env, manifest, [&](auto, caf::expected<table> t, uint64_t) {
    if (!t) {
      if (!first)
        first = t.error();
      return;
    }
    out.x.insert(out.x.end(), t->x.begin(), t->x.end());
    out.y.insert(out.y.end(), t->y.begin(), t->y.end());
  });
  if (err)
    return err;
  if (first)
    return first;
  return out;
}

} // namespace aicon::data
