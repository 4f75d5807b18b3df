#include "actors/data_node/custody.hpp"

#include <cstring>
#include <set>

#include <capnp/message.h>
#include <fmt/format.h>
#include <sodium.h>

#include "runtime/error.hpp"

namespace aicon::data {

namespace {

std::span<const uint8_t> span_of(const hash256& h) {
  return {h.data(), h.size()};
}

template <class T>
envelope envelope_of(std::span<const uint8_t> bytes) {
  return envelope_from_bytes(bytes, capnp::typeId<T>());
}

using ledger::short_hex;

template <size_t N>
std::array<uint8_t, N> concat(std::span<const uint8_t> a, std::span<const uint8_t> b,
                              std::span<const uint8_t> c = {}) {
  std::array<uint8_t, N> out{};
  std::memcpy(out.data(), a.data(), a.size());
  std::memcpy(out.data() + a.size(), b.data(), b.size());
  if (!c.empty())
    std::memcpy(out.data() + a.size() + b.size(), c.data(), c.size());
  return out;
}

caf::expected<std::optional<envelope>> staged(store::txn& t, const hash256& dataset) {
  auto v = t.get(store::db::uploads, span_of(dataset));
  if (!v)
    return v.error();
  if (!*v)
    return std::optional<envelope>{};
  return std::optional<envelope>{envelope_of<schema::DatasetManifest>(**v)};
}

} // namespace

// ---- Uploads ------------------------------------------------------------------

caf::expected<bool> upload_begin(store::environment& env, const envelope& manifest) {
  opened<schema::DatasetManifest> m{manifest};
  if (!m)
    return m.error();
  if (auto err = check_manifest(m.root()))
    return err;
  auto id = *hash_of(m->getDatasetId(), "manifest.datasetId");
  auto t = store::txn::begin(env, true);
  if (!t)
    return t.error();
  auto done = t->get(store::db::datasets, span_of(id));
  if (!done)
    return done.error();
  if (*done)
    return true;
  if (auto err = t->put(store::db::uploads, span_of(id), manifest.bytes()))
    return err;
  if (auto err = t->commit())
    return err;
  return false;
}

caf::error upload_shares(store::environment& env, const identity& self,
                         schema::UploadShares::Reader batch) {
  auto id = hash_of(batch.getDatasetId(), "UploadShares.datasetId");
  if (!id)
    return id.error();
  if (batch.getShares().size() != batch.getKeys().size())
    return make_error(errc::invalid_argument,
                      fmt::format("UploadShares: {} shares but {} keys", batch.getShares().size(),
                                  batch.getKeys().size()));
  auto t = store::txn::begin(env, true);
  if (!t)
    return t.error();
  auto m = staged(*t, *id);
  if (!m)
    return m.error();
  if (!*m)
    return make_error(errc::not_found,
                      fmt::format("no upload of dataset {} was begun here", short_hex(*id)));
  opened<schema::DatasetManifest> man{**m};
  std::set<hash256> listed;
  for (auto ref : man->getShards()) {
    hash256 h;
    std::memcpy(h.data(), ref.getHash().begin(), 32);
    listed.insert(h);
  }
  for (unsigned i = 0; i < batch.getShares().size(); ++i) {
    auto s = batch.getShares()[i];
    auto h = hash_of(s.getHash(), "Share.hash");
    if (!h)
      return h.error();
    if (!listed.count(*h))
      return make_error(errc::invalid_argument,
                        fmt::format("share {} is not in the manifest of {}", short_hex(*h),
                                    short_hex(*id)));
    std::span<const uint8_t> bytes{s.getBytes().begin(), s.getBytes().size()};
    if (share_hash(bytes) != *h)
      return make_error(errc::invalid_argument,
                        fmt::format("share {} is corrupt: its bytes do not hash to its address",
                                    short_hex(*h)));
    auto k = batch.getKeys()[i];
    if (k.getHash() != s.getHash())
      return make_error(errc::invalid_argument,
                        fmt::format("key {} is not the key of share {}", i, short_hex(*h)));
    auto key = self.unseal({k.getSealed().begin(), k.getSealed().size()});
    if (!key)
      return make_error(errc::bad_signature,
                        fmt::format("the key of share {}: {}", short_hex(*h), what_of(key.error())));
    if (key->size() != 32)
      return make_error(errc::invalid_argument,
                        fmt::format("the key of share {} is not 32 bytes", short_hex(*h)));
    if (auto err = t->put(store::db::shares, span_of(*h), bytes))
      return err;
    if (auto err = t->put(store::db::shard_keys, span_of(*h), *key))
      return err;
    sodium_memzero(key->data(), key->size());
  }
  return t->commit();
}

caf::expected<envelope> upload_commit(store::environment& env, const hash256& dataset) {
  auto t = store::txn::begin(env, true);
  if (!t)
    return t.error();
  auto m = staged(*t, dataset);
  if (!m)
    return m.error();
  if (!*m) {
    // Already committed (a retried commit) is fine; anything else is not.
    auto done = t->get(store::db::datasets, span_of(dataset));
    if (!done)
      return done.error();
    if (*done)
      return envelope_of<schema::DatasetManifest>(**done);
    return make_error(errc::not_found,
                      fmt::format("no upload of dataset {} was begun here", short_hex(dataset)));
  }
  opened<schema::DatasetManifest> man{**m};
  for (auto ref : man->getShards()) {
    std::span<const uint8_t> h{ref.getHash().begin(), 32};
    auto share = t->get(store::db::shares, h);
    if (!share)
      return share.error();
    auto key = t->get(store::db::shard_keys, h);
    if (!key)
      return key.error();
    if (!*share || !*key)
      return make_error(errc::invalid_argument,
                        fmt::format("upload of {} is incomplete: share {} {}", short_hex(dataset),
                                    to_hex(h).substr(0, 16), *share ? "has no key" : "is missing"));
  }
  if (auto err = t->put(store::db::datasets, span_of(dataset), (*m)->bytes()))
    return err;
  if (auto err = t->del(store::db::uploads, span_of(dataset)))
    return err;
  if (auto err = t->commit())
    return err;
  return std::move(**m);
}

caf::error upload_abort(store::environment& env, const hash256& dataset) {
  auto t = store::txn::begin(env, true);
  if (!t)
    return t.error();
  auto m = staged(*t, dataset);
  if (!m)
    return m.error();
  if (!*m)
    return caf::none;
  auto done = t->get(store::db::datasets, span_of(dataset));
  if (!done)
    return done.error();
  if (!*done) {
    // Shares are addressed by a hash under a random key and nonce: no other
    // dataset can use the same ones.
    opened<schema::DatasetManifest> man{**m};
    for (auto ref : man->getShards()) {
      std::span<const uint8_t> h{ref.getHash().begin(), 32};
      if (auto err = t->del(store::db::shares, h))
        return err;
      if (auto err = t->del(store::db::shard_keys, h))
        return err;
    }
  }
  if (auto err = t->del(store::db::uploads, span_of(dataset)))
    return err;
  return t->commit();
}

caf::expected<size_t> abort_all_uploads(store::environment& env) {
  std::vector<hash256> ids;
  {
    auto t = store::txn::begin(env, false);
    if (!t)
      return t.error();
    auto err = t->for_each(store::db::uploads, [&](std::span<const uint8_t> k, auto) {
      if (k.size() == 32) {
        hash256 h;
        std::memcpy(h.data(), k.data(), 32);
        ids.push_back(h);
      }
      return true;
    });
    if (err)
      return err;
  }
  for (auto& id : ids)
    if (auto err = upload_abort(env, id))
      return err;
  return ids.size();
}

caf::expected<std::vector<envelope>> upload_batches(const built_dataset& d, const node_id& receiver,
                                                    uint64_t batch_bytes) {
  opened<schema::DatasetManifest> m{d.manifest};
  if (!m)
    return m.error();
  auto refs = m->getShards();
  std::vector<envelope> out;
  size_t i = 0;
  while (i < d.shares.size()) {
    size_t end = i;
    uint64_t bytes = 0;
    while (end < d.shares.size() && (end == i || bytes + d.shares[end].size() <= batch_bytes))
      bytes += d.shares[end++].size();
    std::vector<std::vector<uint8_t>> sealed;
    for (size_t k = i; k < end; ++k) {
      auto s = seal_to(receiver, d.keys[k]);
      if (!s)
        return s.error();
      sealed.push_back(std::move(*s));
    }
    out.push_back(make_envelope<schema::UploadShares>([&](schema::UploadShares::Builder b) {
      b.setDatasetId(m->getDatasetId());
      auto shares = b.initShares(static_cast<unsigned>(end - i));
      auto keys = b.initKeys(static_cast<unsigned>(end - i));
      for (size_t k = i; k < end; ++k) {
        auto j = static_cast<unsigned>(k - i);
        shares[j].setHash(refs[static_cast<unsigned>(k)].getHash());
        shares[j].setBytes(kj::arrayPtr(d.shares[k].data(), d.shares[k].size()));
        keys[j].setHash(refs[static_cast<unsigned>(k)].getHash());
        keys[j].setSealed(kj::arrayPtr(sealed[j].data(), sealed[j].size()));
      }
    }));
    i = end;
  }
  return out;
}

caf::expected<built_dataset> read_dataset(store::environment& env, const hash256& dataset) {
  auto t = store::txn::begin(env, false);
  if (!t)
    return t.error();
  auto v = t->get(store::db::datasets, span_of(dataset));
  if (!v)
    return v.error();
  if (!*v)
    return make_error(errc::not_found, fmt::format("no dataset {} here", short_hex(dataset)));
  built_dataset d;
  d.manifest = envelope_of<schema::DatasetManifest>(**v);
  opened<schema::DatasetManifest> m{d.manifest};
  if (!m)
    return m.error();
  for (auto ref : m->getShards()) {
    std::span<const uint8_t> h{ref.getHash().begin(), ref.getHash().size()};
    auto share = t->get(store::db::shares, h);
    if (!share)
      return share.error();
    auto key = t->get(store::db::shard_keys, h);
    if (!key)
      return key.error();
    if (!*share || !*key || (*key)->size() != 32)
      return make_error(errc::not_found,
                        fmt::format("share {} of {} is missing here", to_hex(h).substr(0, 16),
                                    short_hex(dataset)));
    d.shares.emplace_back((*share)->begin(), (*share)->end());
    shard_key k;
    std::memcpy(k.data(), (*key)->data(), 32);
    d.keys.push_back(k);
  }
  return d;
}

// ---- Shares -------------------------------------------------------------------

caf::expected<std::optional<std::vector<uint8_t>>> read_share(store::environment& env,
                                                              const hash256& hash) {
  auto t = store::txn::begin(env, false);
  if (!t)
    return t.error();
  auto v = t->get(store::db::shares, span_of(hash));
  if (!v)
    return v.error();
  if (!*v)
    return std::optional<std::vector<uint8_t>>{};
  return std::optional<std::vector<uint8_t>>{std::vector<uint8_t>((*v)->begin(), (*v)->end())};
}

caf::error write_share(store::environment& env, const hash256& hash,
                       std::span<const uint8_t> bytes) {
  if (share_hash(bytes) != hash)
    return make_error(errc::invalid_argument,
                      fmt::format("repair of share {}: the bytes do not hash to it",
                                  short_hex(hash)));
  auto t = store::txn::begin(env, true);
  if (!t)
    return t.error();
  if (auto err = t->put(store::db::shares, span_of(hash), bytes))
    return err;
  return t->commit();
}

// ---- Leases and keys ------------------------------------------------------------

caf::error put_lease(store::environment& env, const lease& l) {
  auto value = make_envelope<schema::Lease>([&](schema::Lease::Builder b) {
    b.setJobId(kj::arrayPtr(l.job.data(), 32));
    b.setTrainer(kj::arrayPtr(l.trainer.bytes.data(), 32));
    b.setDatasetId(kj::arrayPtr(l.dataset.data(), 32));
    b.setExpiresMs(l.expires_ms);
  });
  auto key = concat<64>(span_of(l.job), l.trainer.bytes);
  auto t = store::txn::begin(env, true);
  if (!t)
    return t.error();
  if (auto err = t->put(store::db::leases, key, value.bytes()))
    return err;
  return t->commit();
}

namespace {

std::vector<uint8_t> key_request_bytes(schema::KeyRequest::Reader req) {
  capnp::MallocMessageBuilder copy;
  copy.setRoot(req);
  auto b = copy.getRoot<schema::KeyRequest>();
  b.disownSignature();
  return ledger::tagged_canonical("aicon-keyreq-v1", b.asReader());
}

std::vector<uint8_t> grant_bytes(schema::DataGrant::Reader g) {
  capnp::MallocMessageBuilder copy;
  copy.setRoot(g);
  auto b = copy.getRoot<schema::DataGrant>();
  b.disownSignature();
  return ledger::tagged_canonical("aicon-grant-v1", b.asReader());
}

bool same32(capnp::Data::Reader d, const uint8_t* bytes) {
  return d.size() == 32 && std::memcmp(d.begin(), bytes, 32) == 0;
}

/// The grant's own rules, before the escrow is read: it names this
/// request's job, trainer and dataset, this node's chain, and is current.
caf::error check_grant(schema::DataGrant::Reader g, schema::KeyRequest::Reader req,
                       const std::optional<hash256>& chain, uint64_t now_ms) {
  if (g.getJobId() != req.getJobId() || g.getTrainer() != req.getTrainer())
    return make_error(errc::forbidden,
                      "key request refused: the grant is for another job or trainer");
  if (g.getDatasetId() != req.getDatasetId())
    return make_error(errc::forbidden, "key request refused: the grant is for another dataset");
  if (!chain || !same32(g.getChain(), chain->data()))
    return make_error(errc::forbidden,
                      "key request refused: the grant names another chain than this node's");
  if (g.getExpiresMs() <= now_ms)
    return make_error(errc::forbidden,
                      fmt::format("key request refused: the grant expired {} ms ago",
                                  now_ms - g.getExpiresMs()));
  return {};
}

} // namespace

bool grant_signed_by(schema::DataGrant::Reader grant, const node_id& signer) {
  auto sig = grant.getSignature();
  return sig.size() == 64 && verify_signature(signer, grant_bytes(grant), {sig.begin(), sig.size()});
}

envelope make_data_grant(const identity& payer, const hash256& chain, const hash256& job,
                         const node_id& trainer, const hash256& dataset, uint64_t expires_ms) {
  auto fill = [&](schema::DataGrant::Builder b) {
    b.setJobId(kj::arrayPtr(job.data(), 32));
    b.setTrainer(kj::arrayPtr(trainer.bytes.data(), 32));
    b.setDatasetId(kj::arrayPtr(dataset.data(), 32));
    b.setExpiresMs(expires_ms);
    b.setChain(kj::arrayPtr(chain.data(), 32));
  };
  auto unsigned_grant = make_envelope<schema::DataGrant>(fill);
  auto sig = payer.sign(grant_bytes(opened<schema::DataGrant>{unsigned_grant}.root()));
  return make_envelope<schema::DataGrant>([&](schema::DataGrant::Builder b) {
    fill(b);
    b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  });
}

envelope make_key_request(const identity& trainer, const hash256& dataset, const hash256& job,
                          uint64_t now_ms, const envelope* grant) {
  auto fill = [&](schema::KeyRequest::Builder b) {
    b.setDatasetId(kj::arrayPtr(dataset.data(), 32));
    b.setJobId(kj::arrayPtr(job.data(), 32));
    b.setTrainer(kj::arrayPtr(trainer.id().bytes.data(), 32));
    b.setTimeMs(now_ms);
    if (grant)
      if (opened<schema::DataGrant> g{*grant})
        b.setGrant(g.root());
  };
  auto unsigned_req = make_envelope<schema::KeyRequest>(fill);
  auto sig = trainer.sign(key_request_bytes(opened<schema::KeyRequest>{unsigned_req}.root()));
  return make_envelope<schema::KeyRequest>([&](schema::KeyRequest::Builder b) {
    fill(b);
    b.setSignature(kj::arrayPtr(sig.data(), sig.size()));
  });
}

caf::expected<envelope> release_keys(store::environment& env, schema::KeyRequest::Reader req,
                                     uint64_t now_ms, uint64_t skew_ms,
                                     const escrow_lookup& escrow,
                                     const std::optional<hash256>& chain) {
  auto dataset = hash_of(req.getDatasetId(), "KeyRequest.datasetId");
  if (!dataset)
    return dataset.error();
  auto job = hash_of(req.getJobId(), "KeyRequest.jobId");
  if (!job)
    return job.error();
  auto trainer = node_id::from_bytes({req.getTrainer().begin(), req.getTrainer().size()});
  if (!trainer)
    return make_error(errc::invalid_argument, "KeyRequest.trainer: " + what_of(trainer.error()));
  if (!verify_signature(*trainer, key_request_bytes(req),
                        {req.getSignature().begin(), req.getSignature().size()}))
    return make_error(errc::bad_signature,
                      "key request: the signature is not the trainer's (forged or altered)");
  auto t = req.getTimeMs();
  if (t + skew_ms < now_ms || t > now_ms + skew_ms)
    return make_error(errc::forbidden,
                      fmt::format("key request: its time is {} ms away from this node's clock "
                                  "(at most {}): stale or replayed",
                                  t > now_ms ? t - now_ms : now_ms - t, skew_ms));
  auto txn = store::txn::begin(env, false);
  if (!txn)
    return txn.error();
  auto mv = txn->get(store::db::datasets, span_of(*dataset));
  if (!mv)
    return mv.error();
  if (!*mv)
    return make_error(errc::not_found,
                      fmt::format("key request: no dataset {} here", short_hex(*dataset)));
  auto manifest = envelope_of<schema::DatasetManifest>(**mv);
  opened<schema::DatasetManifest> m{manifest};
  if (!m)
    return m.error();
  auto lv = txn->get(store::db::leases, concat<64>(span_of(*job), trainer->bytes));
  if (!lv)
    return lv.error();
  // A lease written here (by an operator or a test), or else the payer's
  // grant carried in the request; the escrow is read once for either.
  std::optional<escrow_facts> escrowed;
  bool escrow_read = false;
  auto read_escrow = [&]() -> caf::error {
    if (escrow_read)
      return {};
    escrow_read = true;
    if (!escrow)
      return make_error(errc::forbidden,
                        "key request refused: this data node keeps no chain to check the "
                        "job's escrow against (run the ledger role beside it)");
    auto e = escrow(*job);
    if (!e)
      return e.error();
    escrowed = *e;
    return {};
  };
  if (*lv) {
    auto lease_env = envelope_of<schema::Lease>(**lv);
    opened<schema::Lease> l{lease_env};
    if (!l)
      return l.error();
    if (l->getDatasetId() != req.getDatasetId())
      return make_error(errc::forbidden,
                        fmt::format("key request refused: the lease of trainer {} for job {} is "
                                    "for another dataset",
                                    trainer->short_hex(), short_hex(*job)));
    if (l->getExpiresMs() <= now_ms)
      return make_error(errc::forbidden,
                        fmt::format("key request refused: the lease of trainer {} for job {} "
                                    "expired {} ms ago",
                                    trainer->short_hex(), short_hex(*job),
                                    now_ms - l->getExpiresMs()));
  }
  bool owner_grant = false;
  if (!*lv && req.hasGrant()) {
    auto g = req.getGrant();
    if (auto err = check_grant(g, req, chain, now_ms))
      return err;
    // The dataset's owner may grant its own data to any job of its own
    // (no escrow: it would pay itself).
    auto owner = node_id::from_bytes({m->getOwner().begin(), m->getOwner().size()});
    auto gsig = g.getSignature();
    owner_grant = owner && verify_signature(*owner, grant_bytes(g), {gsig.begin(), gsig.size()});
  }
  if (*lv || owner_grant) {
    // a lease here, or the owner's own grant (unpriced for it): keys below
  } else if (req.hasGrant()) {
    auto g = req.getGrant();
    if (auto err = read_escrow())
      return err;
    if (!escrowed)
      return make_error(errc::forbidden,
                        fmt::format("key request refused: job {} has no escrow on the chain, so "
                                    "no payer can grant its trainers a dataset",
                                    short_hex(*job)));
    auto sig = g.getSignature();
    auto signed_by = [&](const node_id& who) {
      return verify_signature(who, grant_bytes(g), {sig.begin(), sig.size()});
    };
    if (!signed_by(escrowed->payer) && !(escrowed->agent && signed_by(*escrowed->agent)))
      return make_error(errc::bad_signature,
                        fmt::format("key request refused: the grant is not signed by job {}'s "
                                    "payer {}{}",
                                    short_hex(*job), escrowed->payer.short_hex(),
                                    escrowed->agent ? " nor its agent " + escrowed->agent->short_hex()
                                                    : std::string{}));
  } else {
    return make_error(errc::forbidden,
                      fmt::format("key request refused: trainer {} holds no lease for job {} "
                                  "(and carries no grant from its payer)",
                                  trainer->short_hex(), short_hex(*job)));
  }
  auto price = m->getPrice();
  if (price > 0 && !owner_grant) {
    if (auto err = read_escrow())
      return err;
    if (!escrowed)
      return make_error(errc::forbidden,
                        fmt::format("key request refused: job {} has escrowed nothing on the "
                                    "chain (the dataset costs {})",
                                    short_hex(*job), price));
    if (escrowed->amount < price)
      return make_error(errc::forbidden,
                        fmt::format("key request refused: job {} escrowed {}, below the "
                                    "dataset's price {}",
                                    short_hex(*job), escrowed->amount, price));
  }
  std::vector<std::vector<uint8_t>> sealed;
  for (auto ref : m->getShards()) {
    auto k = txn->get(store::db::shard_keys, {ref.getHash().begin(), ref.getHash().size()});
    if (!k)
      return k.error();
    if (!*k)
      return make_error(errc::not_found,
                        fmt::format("the key of share {} is missing here",
                                    to_hex({ref.getHash().begin(), 32}).substr(0, 16)));
    auto s = seal_to(*trainer, **k);
    if (!s)
      return s.error();
    sealed.push_back(std::move(*s));
  }
  return make_envelope<schema::KeyRelease>([&](schema::KeyRelease::Builder b) {
    b.setDatasetId(req.getDatasetId());
    auto keys = b.initKeys(static_cast<unsigned>(sealed.size()));
    for (unsigned i = 0; i < sealed.size(); ++i) {
      keys[i].setHash(m->getShards()[i].getHash());
      keys[i].setSealed(kj::arrayPtr(sealed[i].data(), sealed[i].size()));
    }
  });
}

caf::expected<std::vector<shard_key>> open_keys(const identity& trainer,
                                                schema::KeyRelease::Reader rel,
                                                schema::DatasetManifest::Reader manifest) {
  auto refs = manifest.getShards();
  if (rel.getKeys().size() != refs.size())
    return make_error(errc::invalid_argument,
                      fmt::format("key release: {} keys for {} shares", rel.getKeys().size(),
                                  refs.size()));
  std::vector<shard_key> out;
  for (unsigned i = 0; i < refs.size(); ++i) {
    auto k = rel.getKeys()[i];
    if (k.getHash() != refs[i].getHash())
      return make_error(errc::invalid_argument,
                        fmt::format("key release: key {} is for another share", i));
    auto plain = trainer.unseal({k.getSealed().begin(), k.getSealed().size()});
    if (!plain)
      return plain.error();
    if (plain->size() != 32)
      return make_error(errc::invalid_argument,
                        fmt::format("key release: key {} is not 32 bytes", i));
    shard_key key;
    std::memcpy(key.data(), plain->data(), 32);
    out.push_back(key);
  }
  return out;
}

// ---- Challenges ---------------------------------------------------------------------

hash256 challenge_digest(std::span<const uint8_t> share, std::span<const uint8_t> nonce) {
  hash256 out;
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, out.size());
  crypto_generichash_update(&st, share.data(), share.size());
  crypto_generichash_update(&st, nonce.data(), nonce.size());
  crypto_generichash_final(&st, out.data(), out.size());
  return out;
}

caf::expected<envelope> answer_challenge(store::environment& env,
                                         schema::StorageChallenge::Reader c) {
  auto h = hash_of(c.getHash(), "StorageChallenge.hash");
  if (!h)
    return h.error();
  if (c.getNonce().size() != 32)
    return make_error(errc::invalid_argument, "StorageChallenge.nonce must be 32 bytes");
  auto t = store::txn::begin(env, false);
  if (!t)
    return t.error();
  auto share = t->get(store::db::shares, span_of(*h));
  if (!share)
    return share.error();
  if (!*share)
    return make_error(errc::not_found,
                      fmt::format("storage challenge: share {} is not held here", short_hex(*h)));
  auto d = challenge_digest(**share, {c.getNonce().begin(), c.getNonce().size()});
  return make_envelope<schema::ChallengeAnswer>(
    [&](schema::ChallengeAnswer::Builder b) { b.setDigest(kj::arrayPtr(d.data(), 32)); });
}

caf::error record_challenge(store::environment& env, const challenge_record& r) {
  auto value = make_envelope<schema::ChallengeRecord>([&](schema::ChallengeRecord::Builder b) {
    b.setChallenger(kj::arrayPtr(r.challenger.bytes.data(), 32));
    b.setNode(kj::arrayPtr(r.node.bytes.data(), 32));
    b.setHash(kj::arrayPtr(r.hash.data(), 32));
    b.setTimeMs(r.time_ms);
    b.setOk(r.ok);
    b.setProblem(r.problem);
  });
  auto time = store::height_key(r.time_ms);
  auto key = concat<72>(time, r.node.bytes, span_of(r.hash));
  auto t = store::txn::begin(env, true);
  if (!t)
    return t.error();
  if (auto err = t->put(store::db::challenges, key, value.bytes()))
    return err;
  return t->commit();
}

caf::expected<envelope> challenge_log(store::environment& env) {
  auto t = store::txn::begin(env, false);
  if (!t)
    return t.error();
  std::vector<envelope> recs;
  auto err = t->for_each(store::db::challenges, [&](auto, std::span<const uint8_t> v) {
    recs.push_back(envelope_of<schema::ChallengeRecord>(v));
    return true;
  });
  if (err)
    return err;
  constexpr size_t most = 1000; // the newest, so one reply stays small
  size_t from = recs.size() > most ? recs.size() - most : 0;
  return make_envelope<schema::ChallengeLog>([&](schema::ChallengeLog::Builder b) {
    auto out = b.initRecords(static_cast<unsigned>(recs.size() - from));
    for (size_t i = from; i < recs.size(); ++i) {
      opened<schema::ChallengeRecord> r{recs[i]};
      if (r)
        out.setWithCaveats(static_cast<unsigned>(i - from), r.root());
    }
  });
}

// ---- Holders ------------------------------------------------------------------------

caf::error add_holder(store::environment& env, const hash256& dataset, const node_id& node,
                      uint64_t now_ms) {
  auto key = concat<64>(span_of(dataset), node.bytes);
  auto value = store::height_key(now_ms);
  auto t = store::txn::begin(env, true);
  if (!t)
    return t.error();
  if (auto err = t->put(store::db::holders, key, value))
    return err;
  return t->commit();
}

caf::expected<std::vector<std::pair<hash256, node_id>>> holders(store::environment& env) {
  auto t = store::txn::begin(env, false);
  if (!t)
    return t.error();
  std::vector<std::pair<hash256, node_id>> out;
  auto err = t->for_each(store::db::holders, [&](std::span<const uint8_t> k, auto) {
    if (k.size() == 64) {
      hash256 h;
      std::memcpy(h.data(), k.data(), 32);
      auto n = node_id::from_bytes(k.subspan(32));
      if (n)
        out.emplace_back(h, *n);
    }
    return true;
  });
  if (err)
    return err;
  return out;
}

} // namespace aicon::data
