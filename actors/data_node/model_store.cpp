#include "actors/data_node/model_store.hpp"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string_view>

#include <fmt/format.h>
#include <sodium.h>

#include "runtime/error.hpp"

namespace aicon::data {

hash256 model_hash(std::span<const uint8_t> file) {
  hash256 out;
  crypto_generichash(out.data(), out.size(), file.data(), file.size(), nullptr, 0);
  return out;
}

hash256 model_asset_id(const node_id& owner, const hash256& file_hash) {
  static constexpr std::string_view tag = "aicon-model-asset-v1";
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, 32);
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(tag.data()), tag.size());
  crypto_generichash_update(&st, owner.bytes.data(), 32);
  crypto_generichash_update(&st, file_hash.data(), 32);
  hash256 out;
  crypto_generichash_final(&st, out.data(), 32);
  return out;
}

bool model_asset_owned(const hash256& id, const node_id& owner, const hash256& metadata) {
  return model_asset_id(owner, metadata) == id;
}

caf::expected<std::vector<uint8_t>> read_model_file(const std::filesystem::path& path,
                                                    uint64_t bytes_max) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path, ec);
  if (ec)
    return make_error(errc::not_found, fmt::format("cannot read {}: {}", path.string(), ec.message()));
  if (size > bytes_max)
    return make_error(errc::invalid_argument,
                      fmt::format("{} is {} bytes, over model_bytes_max ({})", path.string(), size,
                                  bytes_max));
  std::ifstream f{path, std::ios::binary};
  std::vector<uint8_t> out(size);
  if (!f || !f.read(reinterpret_cast<char*>(out.data()), static_cast<std::streamsize>(size)))
    return make_error(errc::io_error, fmt::format("cannot read {}", path.string()));
  return out;
}

std::vector<uint8_t> model_owner_signing_bytes(const hash256& model) {
  static constexpr std::string_view tag = "aicon-model-owner-v1";
  std::vector<uint8_t> out(tag.size() + model.size());
  std::memcpy(out.data(), tag.data(), tag.size());
  std::memcpy(out.data() + tag.size(), model.data(), model.size());
  return out;
}

envelope make_model_put(const identity& owner, std::span<const uint8_t> file,
                        const std::string& name, uint32_t replicas) {
  auto file_hash = model_hash(file);
  auto id = model_asset_id(owner.id(), file_hash);
  auto sig = owner.sign(model_owner_signing_bytes(id));
  return make_envelope<schema::ModelPut>([&](schema::ModelPut::Builder b) {
    auto m = b.initManifest();
    m.setModelId(kj::arrayPtr(id.data(), id.size()));
    m.setFileHash(kj::arrayPtr(file_hash.data(), file_hash.size()));
    m.setOwner(kj::arrayPtr(owner.id().bytes.data(), 32));
    m.setName(name);
    m.setBytes(file.size());
    m.setOwnerSignature(kj::arrayPtr(sig.data(), sig.size()));
    b.setFile(kj::arrayPtr(file.data(), file.size()));
    b.setReplicas(replicas);
  });
}

std::pair<hash256, hash256> model_put_ids(const envelope& put) {
  opened<schema::ModelPut> p{put};
  hash256 id{}, file_hash{};
  if (p && p->getManifest().getModelId().size() == 32 && p->getManifest().getFileHash().size() == 32) {
    std::memcpy(id.data(), p->getManifest().getModelId().begin(), 32);
    std::memcpy(file_hash.data(), p->getManifest().getFileHash().begin(), 32);
  }
  return {id, file_hash};
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
  if (m.getFileHash().size() != 32)
    return make_error(errc::invalid_argument, "model manifest: fileHash must be 32 bytes");
  hash256 file_hash;
  std::memcpy(file_hash.data(), m.getFileHash().begin(), 32);
  auto h = model_hash({file.begin(), file.size()});
  if (h != file_hash)
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: the file hashes to {}, its manifest says {} (hash "
                                  "mismatch: tampered or not the file its id names)",
                                  ledger::short_hex(id), ledger::short_hex(h),
                                  ledger::short_hex(file_hash)));
  if (m.getName().size() > 256)
    return make_error(errc::invalid_argument, "model manifest: name is over 256 bytes");
  auto owner = node_id::from_bytes({m.getOwner().begin(), m.getOwner().size()});
  if (!owner)
    return make_error(errc::invalid_argument, "model manifest: owner must be a 32-byte NodeId");
  if (model_asset_id(*owner, file_hash) != id)
    return make_error(errc::invalid_argument,
                      fmt::format("model {}: not the id of this file for owner {} (modelId must be "
                                  "BLAKE2b of \"aicon-model-asset-v1\", the owner and fileHash)",
                                  ledger::short_hex(id), owner->short_hex()));
  auto sig = m.getOwnerSignature();
  if (sig.size() != 64
      || !verify_signature(*owner, model_owner_signing_bytes(id), {sig.begin(), sig.size()}))
    return make_error(errc::bad_signature,
                      fmt::format("model {}: ownerSignature is not by the owner it names ({})",
                                  ledger::short_hex(id), owner->short_hex()));
  return caf::none;
}

caf::error store_model(store::environment& env, schema::ModelPut::Reader put,
                       uint64_t owner_bytes_max, uint64_t total_bytes_max) {
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
  // The owner's models here, all together, within its quota.
  uint64_t held = 0, all = 0;
  size_t count = 0;
  auto owner = m.getOwner();
  if (auto err = t->for_each(store::db::models, [&](auto, std::span<const uint8_t> v) {
        auto f = envelope_from_bytes(v, capnp::typeId<schema::ModelFile>());
        opened<schema::ModelFile> mf{f};
        if (!mf)
          return true;
        all += mf->getFile().size();
        if (mf->getManifest().getOwner() == owner) {
          held += mf->getFile().size();
          ++count;
        }
        return true;
      }))
    return err;
  if (all + put.getFile().size() > total_bytes_max)
    return make_error(errc::busy,
                      fmt::format("this data node keeps {} bytes of models; {} more would pass "
                                  "model_bytes_total ({})",
                                  all, put.getFile().size(), total_bytes_max));
  if (held + put.getFile().size() > owner_bytes_max) {
    hash256 id{};
    std::memcpy(id.data(), m.getModelId().begin(), std::min<size_t>(32, m.getModelId().size()));
    return make_error(errc::forbidden,
                      fmt::format("model {}: its owner {} has {} model(s) of {} bytes here; {} more "
                                  "bytes would pass model_bytes_per_owner ({})",
                                  ledger::short_hex(id),
                                  to_hex({owner.begin(), std::min<size_t>(owner.size(), 4)}), count,
                                  held, put.getFile().size(), owner_bytes_max));
  }
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
