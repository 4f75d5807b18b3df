#include "actors/data_node/model_store.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include "runtime/error.hpp"

namespace aicon::data {

hash256 model_hash(std::span<const uint8_t> file) {
  hash256 out;
  crypto_generichash(out.data(), out.size(), file.data(), file.size(), nullptr, 0);
  return out;
}

std::vector<uint8_t> model_owner_signing_bytes(const hash256& model) {
  static constexpr std::string_view tag = "aicon-model-owner-v1";
  std::vector<uint8_t> out(tag.begin(), tag.end());
  out.insert(out.end(), model.begin(), model.end());
  return out;
}

envelope make_model_put(const identity& owner, std::span<const uint8_t> file,
                        const std::string& name, uint32_t replicas) {
  auto id = model_hash(file);
  auto sig = owner.sign(model_owner_signing_bytes(id));
  return make_envelope<schema::ModelPut>([&](schema::ModelPut::Builder b) {
    auto m = b.initManifest();
    m.setModelId(kj::arrayPtr(id.data(), id.size()));
    m.setOwner(kj::arrayPtr(owner.id().bytes.data(), 32));
    m.setName(name);
    m.setBytes(file.size());
    m.setOwnerSignature(kj::arrayPtr(sig.data(), sig.size()));
    b.setFile(kj::arrayPtr(file.data(), file.size()));
    b.setReplicas(replicas);
  });
}

caf::error check_model(schema::ModelManifest::Reader m, capnp::Data::Reader file,
                       uint64_t bytes_max) {
  if (m.getModelId().size() != 32)
    return make_error(errc::invalid_argument, "model manifest: modelId must be 32 bytes");
  hash256 id;
  std::memcpy(id.data(), m.getModelId().begin(), 32);
  if (file.size() > bytes_max)
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: {} bytes, over the limit of {} (model_bytes_max)",
                                  ledger::short_hex(id), file.size(), bytes_max));
  if (m.getBytes() != file.size())
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: the manifest says {} bytes, the file has {}",
                                  ledger::short_hex(id), m.getBytes(), file.size()));
  auto h = model_hash({file.begin(), file.size()});
  if (h != id)
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: the file hashes to {} (hash mismatch: tampered or "
                                  "not the file its id names)",
                                  ledger::short_hex(id), ledger::short_hex(h)));
  if (m.getName().size() > 256)
    return make_error(errc::invalid_argument, "model manifest: name is over 256 bytes");
  auto owner = node_id::from_bytes({m.getOwner().begin(), m.getOwner().size()});
  auto sig = m.getOwnerSignature();
  if (!owner || sig.size() != 64
      || !verify_signature(*owner, model_owner_signing_bytes(id), {sig.begin(), sig.size()}))
    return make_error(errc::bad_signature,
                      fmt::format("model {}: ownerSignature is not by the owner it names ({})",
                                  ledger::short_hex(id), owner ? owner->short_hex() : "?"));
  return caf::none;
}

caf::error store_model(store::environment& env, schema::ModelPut::Reader put) {
  auto m = put.getManifest();
  auto t = store::txn::begin(env, true);
  if (!t)
    return t.error();
  auto key = std::span<const uint8_t>{m.getModelId().begin(), m.getModelId().size()};
  auto have = t->get(store::db::models, key);
  if (!have)
    return have.error();
  if (*have)
    return caf::none;
  auto value = make_envelope<schema::ModelFile>([&](schema::ModelFile::Builder b) {
    b.setManifest(m);
    b.setFile(put.getFile());
  });
  if (auto err = t->put(store::db::models, key, value.bytes()))
    return err;
  return t->commit();
}

caf::expected<std::optional<envelope>> load_model(store::environment& env, const hash256& id) {
  auto t = store::txn::begin(env, false);
  if (!t)
    return t.error();
  auto v = t->get(store::db::models, {id.data(), id.size()});
  if (!v)
    return v.error();
  if (!*v)
    return std::optional<envelope>{};
  return std::optional<envelope>{envelope_from_bytes(**v, capnp::typeId<schema::ModelFile>())};
}

} // namespace aicon::data
