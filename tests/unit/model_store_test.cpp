// Models as assets at rest: a file stored under its BLAKE2b hash with its
// owner's signed manifest, read back bit-exact; a tampered, truncated,
// oversized or falsely signed model refused by name and never stored.
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <string>

#include "actors/data_node/model_store.hpp"
#include "runtime/error.hpp"
#include "test_util.hpp"

using namespace aicon;
using namespace aicon::data;

namespace {

struct fixture {
  test::temp_dir dir;
  std::unique_ptr<store::environment> env;
  aicon::identity owner = aicon::identity::generate();
  std::vector<uint8_t> file;
  fixture() {
    auto e = store::environment::open(dir.path());
    BOOST_REQUIRE_MESSAGE(e, test::why(e));
    env = std::move(*e);
    for (size_t i = 0; i < 5000; ++i)
      file.push_back(static_cast<uint8_t>(i * 131 + 7));
  }
  /// A ModelPut of `file` whose manifest and file `edit` changes.
  template <class F>
  envelope edited(F edit) {
    auto good = make_model_put(owner, file, "cnn.pt", 2);
    opened<schema::ModelPut> p{good};
    BOOST_REQUIRE(p);
    return make_envelope<schema::ModelPut>([&](schema::ModelPut::Builder b) {
      b.setManifest(p->getManifest());
      b.setFile(p->getFile());
      b.setReplicas(p->getReplicas());
      edit(b);
    });
  }
  caf::error check(const envelope& put, uint64_t bytes_max = 1 << 20) {
    opened<schema::ModelPut> p{put};
    BOOST_REQUIRE(p);
    return check_model(p->getManifest(), p->getFile(), bytes_max);
  }
};

std::string text(const caf::error& e) { return e ? describe(e) : "no error"; }

} // namespace

BOOST_FIXTURE_TEST_SUITE(model_store, fixture)

BOOST_AUTO_TEST_CASE(a_model_is_stored_under_its_hash_and_read_back_bit_exact) {
  auto put = make_model_put(owner, file, "cnn.pt", 2);
  BOOST_TEST(text(check(put)) == "no error");
  opened<schema::ModelPut> p{put};
  BOOST_REQUIRE(p);
  auto id = model_asset_id(owner.id(), model_hash(file));
  BOOST_TEST((std::vector<uint8_t>(p->getManifest().getModelId().begin(),
                                   p->getManifest().getModelId().end())
              == std::vector<uint8_t>(id.begin(), id.end())));
  BOOST_REQUIRE(!store_model(*env, p.root()));
  BOOST_REQUIRE(!store_model(*env, p.root())); // the same model again: nothing to do
  auto back = load_model(*env, id);
  BOOST_REQUIRE_MESSAGE(back, test::why(back));
  BOOST_REQUIRE(back->has_value());
  opened<schema::ModelFile> f{**back};
  BOOST_REQUIRE(f);
  BOOST_TEST((std::vector<uint8_t>(f->getFile().begin(), f->getFile().end()) == file));
  BOOST_TEST(std::string{f->getManifest().getName().cStr()} == "cnn.pt");
  BOOST_TEST(text(check_model(f->getManifest(), f->getFile(), 1 << 20)) == "no error");
  // Another id: not here, and no error.
  auto other = load_model(*env, model_hash(std::vector<uint8_t>{1, 2, 3}));
  BOOST_REQUIRE(other);
  BOOST_TEST(!other->has_value());
}

// model_bytes_per_owner: an owner's models together stay within the
// quota; a put past it is refused by name and stores nothing; the same
// model again and another owner's are not held against it.
BOOST_AUTO_TEST_CASE(an_owners_models_stay_within_its_quota) {
  auto quota = 2 * file.size() + 10;
  auto variant = [&](uint8_t k) {
    auto f = file;
    f[0] ^= k;
    return f;
  };
  auto put_of = [&](const aicon::identity& who, const std::vector<uint8_t>& f) {
    return make_model_put(who, f, "m.pt", 1);
  };
  for (uint8_t k : {0, 1}) {
    auto put = put_of(owner, variant(k));
    BOOST_REQUIRE(!store_model(*env, opened<schema::ModelPut>{put}.root(), quota));
  }
  auto again = put_of(owner, variant(0));
  BOOST_TEST(text(store_model(*env, opened<schema::ModelPut>{again}.root(), quota)) == "no error");
  auto third = put_of(owner, variant(2));
  auto e = store_model(*env, opened<schema::ModelPut>{third}.root(), quota);
  BOOST_TEST(text(e).find("has 2 model(s) of " + std::to_string(2 * file.size())
                          + " bytes here") != std::string::npos,
             text(e));
  BOOST_TEST(text(e).find("model_bytes_per_owner") != std::string::npos, text(e));
  auto id = model_asset_id(owner.id(), model_hash(variant(2)));
  auto absent = load_model(*env, id);
  BOOST_REQUIRE(absent);
  BOOST_TEST(!absent->has_value());
  auto stranger = aicon::identity::generate();
  auto theirs = put_of(stranger, variant(2));
  BOOST_TEST(text(store_model(*env, opened<schema::ModelPut>{theirs}.root(), quota)) == "no error");
  // Fresh keys cost nothing: the node's total caps them all (3 files here).
  auto sybil = put_of(aicon::identity::generate(), variant(3));
  auto full = store_model(*env, opened<schema::ModelPut>{sybil}.root(), quota, 3 * file.size() + 10);
  BOOST_TEST(text(full).find("this data node keeps " + std::to_string(3 * file.size())
                             + " bytes of models") != std::string::npos,
             text(full));
  BOOST_TEST(text(full).find("model_bytes_total") != std::string::npos, text(full));
}

BOOST_AUTO_TEST_CASE(a_tampered_file_is_a_hash_mismatch) {
  auto e = check(edited([&](schema::ModelPut::Builder b) {
    auto f = file;
    f[1234] ^= 1; // one bit of the weights
    b.setFile(kj::arrayPtr(f.data(), f.size()));
  }));
  BOOST_TEST(text(e).find("hash mismatch") != std::string::npos, text(e));
  // Truncated, with the manifest's size changed to match: still the hash.
  auto t = check(edited([&](schema::ModelPut::Builder b) {
    b.setFile(kj::arrayPtr(file.data(), file.size() - 10));
    b.getManifest().setBytes(file.size() - 10);
  }));
  BOOST_TEST(text(t).find("hash mismatch") != std::string::npos, text(t));
  // Another file with its own hash under the first file's id.
  auto other = check(edited([&](schema::ModelPut::Builder b) {
    auto f = file;
    f[0] ^= 1;
    auto h = model_hash(f);
    b.setFile(kj::arrayPtr(f.data(), f.size()));
    b.getManifest().setFileHash(kj::arrayPtr(h.data(), 32));
  }));
  BOOST_TEST(text(other).find("not the id of this file for owner") != std::string::npos, text(other));
}

// The id is bound to its owner: a peer that fetched the file and put or
// registered it under its own key gets another id, and the first owner's
// id registered by anyone else does not name that one as its owner.
BOOST_AUTO_TEST_CASE(a_model_id_is_bound_to_its_owner) {
  auto h = model_hash(file);
  auto mine = model_asset_id(owner.id(), h);
  auto mallory = aicon::identity::generate();
  auto theirs = model_asset_id(mallory.id(), h);
  BOOST_TEST((mine != theirs));
  BOOST_TEST((mine != h));
  BOOST_TEST(model_asset_owned(mine, owner.id(), h));
  BOOST_TEST(!model_asset_owned(mine, mallory.id(), h)); // a squatter's registration pays nothing
  BOOST_TEST(!model_asset_owned(mine, owner.id(), model_hash(std::vector<uint8_t>{1})));
  // Mallory's own put of the same file is valid, under her own id.
  auto put = make_model_put(mallory, file, "copy.pt", 1);
  BOOST_TEST(text(check(put)) == "no error");
  opened<schema::ModelPut> p{put};
  BOOST_REQUIRE(p);
  BOOST_TEST((std::vector<uint8_t>(p->getManifest().getModelId().begin(),
                                   p->getManifest().getModelId().end())
              == std::vector<uint8_t>(theirs.begin(), theirs.end())));
}

BOOST_AUTO_TEST_CASE(each_bad_manifest_is_refused_by_name) {
  auto size = check(edited([&](schema::ModelPut::Builder b) { b.getManifest().setBytes(4999); }));
  BOOST_TEST(text(size).find("the manifest says 4999 bytes, the file has 5000") != std::string::npos,
             text(size));
  auto big = check(make_model_put(owner, file, "cnn.pt", 1), 4096);
  BOOST_TEST(text(big).find("over the limit of 4096 (model_bytes_max)") != std::string::npos,
             text(big));
  auto id = check(edited([&](schema::ModelPut::Builder b) { b.getManifest().initModelId(31); }));
  BOOST_TEST(text(id).find("modelId must be 32 bytes") != std::string::npos, text(id));
  auto name = check(edited([&](schema::ModelPut::Builder b) {
    b.getManifest().setName(std::string(257, 'x'));
  }));
  BOOST_TEST(text(name).find("name is over 256 bytes") != std::string::npos, text(name));
  // Someone else's key claiming the model for this owner.
  auto mallory = aicon::identity::generate();
  auto forged = check(edited([&](schema::ModelPut::Builder b) {
    auto sig = mallory.sign(model_owner_signing_bytes(model_asset_id(owner.id(), model_hash(file))));
    b.getManifest().setOwnerSignature(kj::arrayPtr(sig.data(), sig.size()));
  }));
  BOOST_TEST(text(forged).find("ownerSignature is not by the owner it names") != std::string::npos,
             text(forged));
  BOOST_TEST(code_of(forged) == errc::bad_signature);
  // A signature the owner made for another model.
  auto replayed = check(edited([&](schema::ModelPut::Builder b) {
    auto sig = owner.sign(model_owner_signing_bytes(model_hash(std::vector<uint8_t>{9})));
    b.getManifest().setOwnerSignature(kj::arrayPtr(sig.data(), sig.size()));
  }));
  BOOST_TEST(text(replayed).find("ownerSignature") != std::string::npos, text(replayed));
  // Nothing refused was stored.
  auto back = load_model(*env, model_asset_id(owner.id(), model_hash(file)));
  BOOST_REQUIRE(back);
  BOOST_TEST(!back->has_value());
}

BOOST_AUTO_TEST_CASE(a_model_file_is_read_only_within_the_limit) {
  auto path = dir.path() / "cnn.pt";
  {
    std::ofstream f{path, std::ios::binary};
    f.write(reinterpret_cast<const char*>(file.data()), static_cast<std::streamsize>(file.size()));
  }
  auto read = read_model_file(path, 1 << 20);
  BOOST_REQUIRE_MESSAGE(read, test::why(read));
  BOOST_TEST((*read == file));
  auto big = read_model_file(path, 4096);
  BOOST_REQUIRE(!big);
  BOOST_TEST(describe(big.error()).find("is 5000 bytes, over model_bytes_max (4096)") != std::string::npos,
             describe(big.error()));
  auto missing = read_model_file(dir.path() / "nowhere.pt", 1 << 20);
  BOOST_REQUIRE(!missing);
  BOOST_TEST(describe(missing.error()).find("cannot read") != std::string::npos, describe(missing.error()));
  BOOST_TEST(describe(missing.error()).find("nowhere.pt") != std::string::npos, describe(missing.error()));
  // The ids a put names are the ones its manifest carries.
  auto [id, file_hash] = model_put_ids(make_model_put(owner, file, "cnn.pt", 1));
  BOOST_TEST((file_hash == model_hash(file)));
  BOOST_TEST((id == model_asset_id(owner.id(), file_hash)));
}

BOOST_AUTO_TEST_SUITE_END()
