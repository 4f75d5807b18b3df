#include "actors/ledger/ledger.hpp"

#include <caf/all.hpp>
#include <fmt/format.h>

#include "actors/ledger/chain.hpp"
#include "runtime/role.hpp"

namespace aicon {

namespace {

using ledger::chain;

struct ledger_state {
  role_context ctx;
  std::unique_ptr<chain> store;
  std::unique_ptr<message_table> table;
  static inline const char* name = "aicon.ledger";

  caf::expected<envelope> tip_info() {
    auto tip = store->tip();
    if (!tip)
      return tip.error();
    return make_envelope<schema::TipInfo>([&](schema::TipInfo::Builder b) {
      b.setHeight(tip->height);
      b.setHash(kj::arrayPtr(tip->hash.data(), 32));
      b.setStateRoot(kj::arrayPtr(tip->state_root.data(), 32));
      b.setDifficulty(tip->difficulty);
      b.setTimeMs(tip->time_ms);
    });
  }

  caf::expected<envelope> answer(schema::LedgerQuery::Reader q) {
    switch (q.which()) {
      case schema::LedgerQuery::TIP:
        return tip_info();
      case schema::LedgerQuery::ACCOUNT: {
        auto who = node_id::from_bytes({q.getAccount().begin(), q.getAccount().size()});
        if (!who)
          return make_error(errc::invalid_argument, "LedgerQuery.account: " + what_of(who.error()));
        auto a = store->account_of(*who);
        if (!a)
          return a.error();
        return make_envelope<schema::AccountInfo>([&](schema::AccountInfo::Builder b) {
          b.setWallet(kj::arrayPtr(who->bytes.data(), 32));
          b.setBalance(a->balance);
          b.setNonce(a->nonce);
          b.setStake(a->stake);
        });
      }
      case schema::LedgerQuery::ASSET: {
        if (q.getAsset().size() != 32)
          return make_error(errc::invalid_argument, "LedgerQuery.asset must be 32 bytes");
        ledger::hash256 id;
        std::memcpy(id.data(), q.getAsset().begin(), 32);
        auto a = store->asset(id);
        if (!a)
          return a.error();
        if (!*a)
          return make_error(errc::not_found, fmt::format("no asset {}", ledger::hex(id)));
        return make_envelope<schema::AssetInfo>([&](schema::AssetInfo::Builder b) {
          b.setAssetId(kj::arrayPtr(id.data(), 32));
          b.setOwner(kj::arrayPtr((*a)->owner.bytes.data(), 32));
          b.setKind((*a)->kind);
          b.setMetadataHash(kj::arrayPtr((*a)->metadata.data(), 32));
        });
      }
      case schema::LedgerQuery::BLOCK_AT:
        return store->block_at(q.getBlockAt());
    }
    return make_error(errc::invalid_argument, "LedgerQuery has an unknown case");
  }
};

caf::behavior ledger_role(caf::stateful_actor<ledger_state>* self, role_context ctx,
                          std::shared_ptr<std::unique_ptr<chain>> opened_store) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.store = std::move(*opened_store);
  st.table = std::make_unique<message_table>("ledger");
  st.table->on<schema::LedgerQuery>([self](schema::LedgerQuery::Reader q)
                                      -> caf::result<envelope> {
    return self->state.answer(q);
  });
  // A whole block: every rule is checked again here, whoever sent it.
  st.table->on<schema::Block>([self](const envelope& env, schema::Block::Reader)
                                 -> caf::result<envelope> {
    if (auto err = self->state.store->append(env))
      return err;
    return self->state.tip_info();
  });
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
  };
}

} // namespace

caf::expected<caf::actor> spawn_ledger(caf::actor_system& sys, const role_context& ctx) {
  if (ctx.genesis.empty())
    return make_error(errc::config_invalid,
                      "the ledger needs the chain's genesis file ([chain] genesis in host.toml)");
  auto g = ledger::load_genesis(ctx.genesis);
  if (!g)
    return g.error();
  auto store = chain::open(ctx.data_dir, *g);
  if (!store)
    return store.error();
  auto holder = std::make_shared<std::unique_ptr<chain>>(std::move(*store));
  return sys.spawn<caf::detached>(ledger_role, ctx, holder);
}

} // namespace aicon
