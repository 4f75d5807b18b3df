// What a data node keeps for others: staged uploads (complete or nothing),
// sealed keys, the key-release rules (each refusal by name), storage
// challenges, sealing itself.
#include <boost/test/unit_test.hpp>

#include <cstring>

#include <sodium.h>

#include "actors/data_node/custody.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace aicon::data;

namespace {

struct fixture {
  test::temp_dir dir;
  std::unique_ptr<store::environment> env;
  aicon::identity node = aicon::identity::generate();    // this data node
  aicon::identity owner = aicon::identity::generate();
  aicon::identity trainer = aicon::identity::generate();
  built_dataset d;
  hash256 id{};
  hash256 job{};

  fixture() {
    auto e = store::environment::open(dir.path());
    BOOST_REQUIRE_MESSAGE(e, test::why(e));
    env = std::move(*e);
    table t;
    t.rows = 100;
    t.features = 3;
    for (uint64_t i = 0; i < t.rows * t.features; ++i)
      t.x.push_back(static_cast<float>(i) * 0.25f);
    for (uint64_t i = 0; i < t.rows; ++i)
      t.y.push_back(static_cast<int32_t>(i % 4));
    t.classes = 4;
    put_options o;
    o.price = 7;
    o.shard_bytes = 16 * 30; // 30 rows a shard: 4 shards
    auto b = build_dataset(owner, t, transform{}, o);
    BOOST_REQUIRE_MESSAGE(b, test::why(b));
    d = std::move(*b);
    std::memcpy(id.data(), opened<schema::DatasetManifest>{d.manifest}->getDatasetId().begin(), 32);
    job[0] = 42;
  }

  size_t count(store::db which) {
    auto t = store::txn::begin(*env, false);
    size_t n = 0;
    (void) t->for_each(which, [&](auto, auto) {
      ++n;
      return true;
    });
    return n;
  }

  caf::error send_all() {
    auto batches = upload_batches(d, node.id(), 1000);
    if (!batches)
      return batches.error();
    for (auto& b : *batches)
      if (auto err = upload_shares(*env, node, opened<schema::UploadShares>{b}.root()))
        return err;
    return caf::none;
  }

  void store_complete() {
    BOOST_REQUIRE(upload_begin(*env, d.manifest));
    BOOST_REQUIRE(!send_all());
    BOOST_REQUIRE(upload_commit(*env, id));
  }

  aicon::identity payer = aicon::identity::generate();
  hash256 chain{};

  caf::expected<envelope> release(const envelope& req, uint64_t now,
                                  std::optional<uint64_t> escrowed) {
    escrow_lookup lookup = [this, escrowed](const hash256&)
      -> caf::expected<std::optional<escrow_facts>> {
      if (!escrowed)
        return std::optional<escrow_facts>{};
      return std::optional<escrow_facts>{escrow_facts{*escrowed, payer.id()}};
    };
    return release_keys(*env, opened<schema::KeyRequest>{req}.root(), now, 10'000, lookup,
                        chain);
  }
};

std::string text(const caf::error& e) {
  return describe(e);
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(custody, fixture)

BOOST_AUTO_TEST_CASE(upload_is_invisible_until_committed_and_round_trips) {
  BOOST_REQUIRE_EQUAL(opened<schema::DatasetManifest>{d.manifest}->getShards().size(), 4u);
  auto fresh = upload_begin(*env, d.manifest);
  BOOST_REQUIRE_MESSAGE(fresh, test::why(fresh));
  BOOST_TEST(!*fresh);
  BOOST_TEST(list_datasets(*env)->empty());
  // Committing before every share is here names the missing one and leaves nothing.
  auto early = upload_commit(*env, id);
  BOOST_REQUIRE(!early);
  BOOST_TEST(text(early.error()).find("incomplete") != std::string::npos);
  BOOST_REQUIRE(!send_all());
  BOOST_TEST(list_datasets(*env)->empty());
  auto m = upload_commit(*env, id);
  BOOST_REQUIRE_MESSAGE(m, test::why(m));
  BOOST_TEST(list_datasets(*env)->size() == 1u);
  BOOST_TEST(count(store::db::uploads) == 0u);
  // The keys were unsealed and stored: the node reads the dataset back.
  auto back = read_dataset(*env, id);
  BOOST_REQUIRE_MESSAGE(back, test::why(back));
  BOOST_TEST(back->keys == d.keys);
  BOOST_TEST(back->shares == d.shares);
  // A second begin of a complete dataset says there is nothing to send.
  auto again = upload_begin(*env, d.manifest);
  BOOST_REQUIRE(again);
  BOOST_TEST(*again);
  // A retried commit answers with the manifest.
  BOOST_TEST(static_cast<bool>(upload_commit(*env, id)));
}

BOOST_AUTO_TEST_CASE(aborted_and_crashed_uploads_leave_nothing) {
  BOOST_REQUIRE(upload_begin(*env, d.manifest));
  BOOST_REQUIRE(!send_all());
  BOOST_TEST(count(store::db::shares) == 4u);
  // A restart rolls back every staged upload.
  auto n = abort_all_uploads(*env);
  BOOST_REQUIRE(n);
  BOOST_TEST(*n == 1u);
  BOOST_TEST(count(store::db::shares) == 0u);
  BOOST_TEST(count(store::db::shard_keys) == 0u);
  BOOST_TEST(count(store::db::uploads) == 0u);
  BOOST_TEST(list_datasets(*env)->empty());
  auto none = upload_commit(*env, id);
  BOOST_REQUIRE(!none);
  BOOST_TEST(code_of(none.error()) == errc::not_found);
}

BOOST_AUTO_TEST_CASE(bad_uploads_are_refused_by_name) {
  // A manifest whose id is not its hash (altered price).
  {
    capnp::MallocMessageBuilder mb;
    mb.setRoot(opened<schema::DatasetManifest>{d.manifest}.root());
    mb.getRoot<schema::DatasetManifest>().setPrice(0);
    auto forged = copy_envelope<schema::DatasetManifest>(
      mb.getRoot<schema::DatasetManifest>().asReader());
    auto r = upload_begin(*env, forged);
    BOOST_REQUIRE(!r);
    BOOST_TEST(text(r.error()).find("not the hash of the manifest") != std::string::npos);
  }
  // Shares for an upload never begun.
  auto batches = upload_batches(d, node.id(), 1000);
  BOOST_REQUIRE(batches);
  opened<schema::UploadShares> first_view{(*batches)[0]};
  auto first = first_view.root();
  BOOST_TEST(code_of(upload_shares(*env, node, first)) == errc::not_found);
  BOOST_REQUIRE(upload_begin(*env, d.manifest));
  // A share whose bytes do not hash to its address.
  {
    capnp::MallocMessageBuilder mb;
    mb.setRoot(first);
    auto b = mb.getRoot<schema::UploadShares>();
    auto bytes = b.getShares()[0].getBytes();
    bytes[10] ^= 1;
    auto err = upload_shares(*env, node, b.asReader());
    BOOST_TEST(text(err).find("corrupt") != std::string::npos, text(err));
  }
  // Keys sealed to another node do not open.
  {
    auto other = upload_batches(d, owner.id(), 1000);
    BOOST_REQUIRE(other);
    auto err = upload_shares(*env, node, opened<schema::UploadShares>{(*other)[0]}.root());
    BOOST_TEST(code_of(err) == errc::bad_signature, text(err));
  }
  // Nothing of the refused batches was stored.
  BOOST_TEST(count(store::db::shares) == 0u);
  BOOST_TEST(count(store::db::shard_keys) == 0u);
}

BOOST_AUTO_TEST_CASE(keys_go_only_to_a_leased_trainer_of_a_paid_job) {
  store_complete();
  auto now = uint64_t{1'700'000'000'000};
  auto req = make_key_request(trainer, id, job, now);
  // No lease.
  auto r = release(req, now, 100);
  BOOST_REQUIRE(!r);
  BOOST_TEST(text(r.error()).find("holds no lease") != std::string::npos);
  // A lease for another dataset.
  hash256 other{};
  other[0] = 1;
  BOOST_REQUIRE(!put_lease(*env, lease{job, trainer.id(), other, now + 60'000}));
  r = release(req, now, 100);
  BOOST_TEST(text(r.error()).find("another dataset") != std::string::npos);
  // An expired lease.
  BOOST_REQUIRE(!put_lease(*env, lease{job, trainer.id(), id, now - 1}));
  r = release(req, now, 100);
  BOOST_TEST(text(r.error()).find("expired") != std::string::npos);
  BOOST_REQUIRE(!put_lease(*env, lease{job, trainer.id(), id, now + 60'000}));
  // No escrow, too little escrow, no chain at all.
  r = release(req, now, std::nullopt);
  BOOST_TEST(text(r.error()).find("escrowed nothing") != std::string::npos);
  r = release(req, now, 6);
  BOOST_TEST(text(r.error()).find("below the dataset's price 7") != std::string::npos);
  auto no_chain = release_keys(*env, opened<schema::KeyRequest>{req}.root(), now, 10'000, {});
  BOOST_TEST(text(no_chain.error()).find("no chain") != std::string::npos);
  // A stale (or replayed much later) request.
  r = release(req, now + 20'000, 7);
  BOOST_TEST(text(r.error()).find("stale or replayed") != std::string::npos);
  // Someone else asking in the trainer's name.
  auto mallory = aicon::identity::generate();
  auto forged = make_key_request(mallory, id, job, now);
  auto swapped = make_envelope<schema::KeyRequest>([&](schema::KeyRequest::Builder b) {
    opened<schema::KeyRequest> o{forged};
    b.setDatasetId(o->getDatasetId());
    b.setJobId(o->getJobId());
    b.setTrainer(kj::arrayPtr(trainer.id().bytes.data(), 32));
    b.setTimeMs(o->getTimeMs());
    b.setSignature(o->getSignature());
  });
  r = release(swapped, now, 7);
  BOOST_TEST(code_of(r.error()) == errc::bad_signature);
  // Everything in order: the keys open for the trainer, and only for it.
  r = release(req, now, 7);
  BOOST_REQUIRE_MESSAGE(r, test::why(r));
  opened<schema::KeyRelease> rel{*r};
  opened<schema::DatasetManifest> m{d.manifest};
  auto keys = open_keys(trainer, rel.root(), m.root());
  BOOST_REQUIRE_MESSAGE(keys, test::why(keys));
  BOOST_TEST(*keys == d.keys);
  BOOST_TEST(!open_keys(mallory, rel.root(), m.root()));
  // And they decrypt the shares to the rows the manifest names.
  auto t = open_share(d.shares[1], [&] {
    hash256 h;
    std::memcpy(h.data(), m->getShards()[1].getHash().begin(), 32);
    return h;
  }(), (*keys)[1], m->getShards()[1], 3);
  BOOST_REQUIRE_MESSAGE(t, test::why(t));
  BOOST_TEST(t->rows == 30u);
  BOOST_TEST(t->x[0] == 30 * 3 * 0.25f);
}

BOOST_AUTO_TEST_CASE(storage_challenges_need_the_bytes) {
  store_complete();
  opened<schema::DatasetManifest> m{d.manifest};
  std::array<uint8_t, 32> nonce;
  randombytes_buf(nonce.data(), nonce.size());
  auto challenge = [&](capnp::Data::Reader hash, std::span<const uint8_t> n) {
    return make_envelope<schema::StorageChallenge>([&](schema::StorageChallenge::Builder b) {
      b.setHash(hash);
      b.setNonce(kj::arrayPtr(n.data(), n.size()));
    });
  };
  auto c = challenge(m->getShards()[2].getHash(), nonce);
  auto a = answer_challenge(*env, opened<schema::StorageChallenge>{c}.root());
  BOOST_REQUIRE_MESSAGE(a, test::why(a));
  auto want = challenge_digest(d.shares[2], nonce);
  BOOST_TEST(std::memcmp(opened<schema::ChallengeAnswer>{*a}->getDigest().begin(), want.data(), 32)
             == 0);
  // Another nonce, another digest: an old answer cannot be replayed.
  auto nonce2 = nonce;
  nonce2[0] ^= 1;
  BOOST_TEST(challenge_digest(d.shares[2], nonce2) != want);
  // A share not held, a short nonce.
  hash256 absent{};
  auto c2 = challenge(kj::arrayPtr(absent.data(), 32), nonce);
  auto a2 = answer_challenge(*env, opened<schema::StorageChallenge>{c2}.root());
  BOOST_TEST(text(a2.error()).find("not held here") != std::string::npos);
  auto c3 = challenge(m->getShards()[2].getHash(), std::span<const uint8_t>{nonce.data(), 8});
  BOOST_TEST(!answer_challenge(*env, opened<schema::StorageChallenge>{c3}.root()));
  // Records come back oldest first.
  for (uint64_t t : {200u, 100u})
    BOOST_REQUIRE(!record_challenge(*env, challenge_record{node.id(), owner.id(), absent, t,
                                                           t == 100, t == 100 ? "" : "gone"}));
  auto log = challenge_log(*env);
  BOOST_REQUIRE(log);
  opened<schema::ChallengeLog> l{*log};
  BOOST_REQUIRE_EQUAL(l->getRecords().size(), 2u);
  BOOST_TEST(l->getRecords()[0].getTimeMs() == 100u);
  BOOST_TEST(!l->getRecords()[1].getOk());
}

BOOST_AUTO_TEST_CASE(sealed_boxes_open_only_for_their_key) {
  std::vector<uint8_t> secret{1, 2, 3, 4, 5};
  auto box = seal_to(trainer.id(), secret);
  BOOST_REQUIRE(box);
  BOOST_TEST(*trainer.unseal(*box) == secret);
  BOOST_TEST(code_of(node.unseal(*box).error()) == errc::bad_signature);
  (*box)[box->size() - 1] ^= 1;
  BOOST_TEST(!trainer.unseal(*box));
  BOOST_TEST(!trainer.unseal(std::vector<uint8_t>(10)));
}

BOOST_AUTO_TEST_CASE(a_payers_grant_stands_in_for_a_lease_and_is_checked_rule_by_rule) {
  store_complete();
  chain[0] = 7;
  auto now = uint64_t{1'700'000'000'000};
  auto ask = [&](const envelope& grant) {
    return release(make_key_request(trainer, id, job, now, &grant), now, 7);
  };
  auto grant = [&](const aicon::identity& by, const hash256& on, const node_id& to,
                   const hash256& dataset, uint64_t expires) {
    return make_data_grant(by, on, job, to, dataset, expires);
  };
  // Signed by someone who is not the escrow's payer.
  auto mallory = aicon::identity::generate();
  auto r = ask(grant(mallory, chain, trainer.id(), id, now + 60'000));
  BOOST_REQUIRE(!r);
  BOOST_TEST(code_of(r.error()) == errc::bad_signature, text(r.error()));
  BOOST_TEST(text(r.error()).find("not signed by job") != std::string::npos, text(r.error()));
  // For another chain, another trainer, another dataset, or expired.
  hash256 elsewhere{};
  elsewhere[0] = 9;
  r = ask(grant(payer, elsewhere, trainer.id(), id, now + 60'000));
  BOOST_TEST(text(r.error()).find("another chain") != std::string::npos, text(r.error()));
  r = ask(grant(payer, chain, mallory.id(), id, now + 60'000));
  BOOST_TEST(text(r.error()).find("another job or trainer") != std::string::npos, text(r.error()));
  r = ask(grant(payer, chain, trainer.id(), elsewhere, now + 60'000));
  BOOST_TEST(text(r.error()).find("another dataset") != std::string::npos, text(r.error()));
  r = ask(grant(payer, chain, trainer.id(), id, now - 1));
  BOOST_TEST(text(r.error()).find("expired") != std::string::npos, text(r.error()));
  // No escrow for the job at all: no payer to grant anything.
  auto good = grant(payer, chain, trainer.id(), id, now + 60'000);
  r = release(make_key_request(trainer, id, job, now, &good), now, std::nullopt);
  BOOST_TEST(text(r.error()).find("has no escrow") != std::string::npos, text(r.error()));
  // The payer's own grant, escrow above the price: the keys, for the trainer only.
  r = ask(good);
  BOOST_REQUIRE_MESSAGE(r, test::why(r));
  opened<schema::KeyRelease> rel{*r};
  opened<schema::DatasetManifest> m{d.manifest};
  auto keys = open_keys(trainer, rel.root(), m.root());
  BOOST_REQUIRE_MESSAGE(keys, test::why(keys));
  BOOST_TEST(*keys == d.keys);
  // The same grant in mallory's request: her signature does not make her the trainer.
  r = release(make_key_request(mallory, id, job, now, &good), now, 7);
  BOOST_TEST(code_of(r.error()) == errc::forbidden, text(r.error()));
}

BOOST_AUTO_TEST_CASE(the_owner_grants_its_own_dataset_without_an_escrow) {
  store_complete();
  chain[0] = 7;
  auto now = uint64_t{1'700'000'000'000};
  // The owner's grant: no escrow needed (it would pay itself the price).
  auto own = make_data_grant(owner, chain, job, trainer.id(), id, now + 60'000);
  auto r = release(make_key_request(trainer, id, job, now, &own), now, std::nullopt);
  BOOST_REQUIRE_MESSAGE(r, test::why(r));
  auto keys = open_keys(trainer, opened<schema::KeyRelease>{*r}.root(),
                        opened<schema::DatasetManifest>{d.manifest}.root());
  BOOST_REQUIRE_MESSAGE(keys, test::why(keys));
  BOOST_TEST(*keys == d.keys);
  // Its checks still hold: expired, another chain.
  auto stale = make_data_grant(owner, chain, job, trainer.id(), id, now - 1);
  r = release(make_key_request(trainer, id, job, now, &stale), now, std::nullopt);
  BOOST_REQUIRE(!r);
  BOOST_TEST(text(r.error()).find("expired") != std::string::npos, text(r.error()));
  hash256 elsewhere{};
  elsewhere[0] = 9;
  auto other = make_data_grant(owner, elsewhere, job, trainer.id(), id, now + 60'000);
  r = release(make_key_request(trainer, id, job, now, &other), now, std::nullopt);
  BOOST_REQUIRE(!r);
  BOOST_TEST(text(r.error()).find("another chain") != std::string::npos, text(r.error()));
  // Anyone else's grant without an escrow: refused.
  auto mallory = aicon::identity::generate();
  auto forged = make_data_grant(mallory, chain, job, trainer.id(), id, now + 60'000);
  r = release(make_key_request(trainer, id, job, now, &forged), now, std::nullopt);
  BOOST_REQUIRE(!r);
  BOOST_TEST(text(r.error()).find("has no escrow") != std::string::npos, text(r.error()));
}

BOOST_AUTO_TEST_SUITE_END()
