#include "actors/ledger/ledger.hpp"

#include <map>
#include <mutex>

#include <caf/all.hpp>
#include <fmt/format.h>

#include "runtime/log.hpp"
#include "runtime/role.hpp"

namespace aicon {

namespace {

using ledger::chain;

envelope tip_query() {
  return make_envelope<schema::LedgerQuery>([](schema::LedgerQuery::Builder q) { q.setTip(); });
}

envelope block_query(uint64_t height) {
  return make_envelope<schema::LedgerQuery>(
    [height](schema::LedgerQuery::Builder q) { q.setBlockAt(height); });
}

struct ledger_state {
  role_context ctx;
  std::shared_ptr<chain> store;
  std::unique_ptr<message_table> table;
  bool syncing = false;
  size_t next_peer = 0; ///< peers are asked in turn
  /// Peers that served a block failing verification: not asked again until then.
  std::map<std::string, std::chrono::steady_clock::time_point> dropped;
  static inline const char* name = "aicon.ledger";
  static constexpr std::chrono::seconds drop_for{60};

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
      auto id = store->chain_id();
      b.setChainId(kj::arrayPtr(id.data(), 32));
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
          b.setPrice((*a)->price);
        });
      }
      case schema::LedgerQuery::ESCROW: {
        if (q.getEscrow().size() != 32)
          return make_error(errc::invalid_argument, "LedgerQuery.escrow must be 32 bytes");
        ledger::hash256 job;
        std::memcpy(job.data(), q.getEscrow().begin(), 32);
        auto e = store->escrow_of(job);
        if (!e)
          return e.error();
        if (!*e || (*e)->settled)
          return make_error(errc::not_found, fmt::format("no escrow for job {}{}", ledger::hex(job),
                                                         *e ? " (settled)" : ""));
        return make_envelope<schema::EscrowInfo>([&](schema::EscrowInfo::Builder b) {
          b.setJob(kj::arrayPtr(job.data(), 32));
          b.setPayer(kj::arrayPtr((*e)->payer.bytes.data(), 32));
          b.setAmount((*e)->amount);
          if (auto& t = (*e)->terms) {
            b.setAgent(kj::arrayPtr(t->agent.bytes.data(), 32));
            b.setMaxPrice(t->max_price);
            b.setUnits(t->units);
            b.setDeadlineMs(t->deadline_ms);
          }
        });
      }
      case schema::LedgerQuery::BLOCK_AT:
        return store->block_at(q.getBlockAt());
    }
    return make_error(errc::invalid_argument, "LedgerQuery has an unknown case");
  }
};

using ledger_actor = caf::stateful_actor<ledger_state>;

void sync_round(ledger_actor* self);

/// One catch-up run from one peer: up to `sync_window` block requests in
/// flight, answers appended strictly in height order as they come in.
struct fetch_run {
  std::string peer;
  uint64_t next_ask = 0;    ///< next height to ask for
  uint64_t next_append = 0; ///< next height to append
  uint64_t last = 0;        ///< last height of this run
  uint64_t target = 0;      ///< the peer's tip (beyond `last`: another run follows at once)
  uint64_t fetched = 0;
  uint32_t in_flight = 0;
  bool over = false; ///< failed or done: late answers are dropped
  std::map<uint64_t, caf::expected<envelope>> ready;
};

void fetch_more(ledger_actor* self, const std::shared_ptr<fetch_run>& run);

/// Appends what is ready in order; ends the run at the first error (the next
/// round starts over from the tip) or once `last` is in.
void append_ready(ledger_actor* self, const std::shared_ptr<fetch_run>& run) {
  auto& st = self->state;
  for (auto it = run->ready.find(run->next_append); !run->over && it != run->ready.end();
       it = run->ready.find(run->next_append)) {
    auto height = it->first;
    auto blk = std::move(it->second);
    run->ready.erase(it);
    caf::error err = blk ? st.store->append(*blk) : blk.error();
    if (err) {
      auto tip = st.store->tip();
      if (blk && tip && tip->height < height) {
        // It answered, and what it sent does not verify on our chain:
        // never build on that peer's word again for a while.
        st.dropped[run->peer] = std::chrono::steady_clock::now() + ledger_state::drop_for;
        st.ctx.counters->bad_blocks.fetch_add(1);
        log_error("ledger: peer {} served block {} that fails verification: {}; "
                  "dropped from catch-up for {} s",
                  run->peer.substr(0, 8), height, describe(err), ledger_state::drop_for.count());
      } else {
        log_warning("ledger: catch-up from {} stopped at block {}: {}", run->peer.substr(0, 8),
                    height, describe(err));
      }
      run->over = true;
      run->ready.clear();
      st.syncing = false;
      return;
    }
    ++run->fetched;
    ++run->next_append;
  }
  if (!run->over && run->next_append > run->last) {
    log_info("ledger: caught up {} blocks from {} (tip {})", run->fetched,
             run->peer.substr(0, 8), run->last);
    run->over = true;
    st.syncing = false;
    if (run->last < run->target)
      sync_round(self); // more to fetch: do not wait for the next tick
  }
}

void fetch_more(ledger_actor* self, const std::shared_ptr<fetch_run>& run) {
  auto& st = self->state;
  auto timeout = std::chrono::milliseconds{st.ctx.lim.request_timeout_ms};
  while (!run->over && run->in_flight < st.ctx.lim.sync_window && run->next_ask <= run->last) {
    auto height = run->next_ask++;
    ++run->in_flight;
    ask_role(self, st.ctx.directory, "ledger@" + run->peer, block_query(height), timeout,
             [self, run, height](caf::expected<envelope> blk) {
               --run->in_flight;
               if (run->over)
                 return;
               run->ready.emplace(height, std::move(blk));
               append_ready(self, run);
               fetch_more(self, run);
             });
  }
}

/// Fetches blocks `height` .. `target` (at most sync_blocks_max) from `peer`.
void fetch_blocks(ledger_actor* self, std::string peer, uint64_t height, uint64_t target) {
  auto run = std::make_shared<fetch_run>();
  run->peer = std::move(peer);
  run->next_ask = run->next_append = height;
  run->last = std::min(target, height + self->state.ctx.lim.sync_blocks_max - 1);
  run->target = target;
  fetch_more(self, run);
}

/// One catch-up round: the next peer in turn tells its tip; blocks above
/// ours are fetched.
void sync_round(ledger_actor* self) {
  auto& st = self->state;
  if (st.syncing || st.ctx.stopping->load())
    return;
  st.syncing = true;
  auto timeout = std::chrono::milliseconds{st.ctx.lim.request_timeout_ms};
  self->request(st.ctx.directory, timeout, peers_atom::value, std::string{"ledger"})
    .then(
      [self, timeout](std::vector<std::string>& peers) {
        auto& st = self->state;
        auto now = std::chrono::steady_clock::now();
        std::erase_if(st.dropped, [&](auto& kv) { return kv.second <= now; });
        std::erase_if(peers, [&](const std::string& p) { return st.dropped.count(p) > 0; });
        if (peers.empty()) {
          st.syncing = false;
          return;
        }
        auto peer = peers[st.next_peer++ % peers.size()];
        ask_role(self, st.ctx.directory, "ledger@" + peer, tip_query(), timeout,
                 [self, peer](caf::expected<envelope> reply) {
                   auto& st = self->state;
                   if (!reply) {
                     st.syncing = false;
                     return;
                   }
                   auto mine = st.store->tip();
                   opened<schema::TipInfo> theirs{*reply};
                   if (!theirs || !mine || theirs->getHeight() <= mine->height) {
                     st.syncing = false;
                     return;
                   }
                   fetch_blocks(self, peer, mine->height + 1, theirs->getHeight());
                 });
      },
      [self](caf::error&) { self->state.syncing = false; });
}

caf::behavior ledger_role(ledger_actor* self, role_context ctx, std::shared_ptr<chain> opened) {
  auto& st = self->state;
  st.ctx = std::move(ctx);
  st.store = std::move(opened);
  st.table = std::make_unique<message_table>("ledger", ledger_access);
  st.table->on<schema::LedgerQuery>([self](schema::LedgerQuery::Reader q)
                                      -> caf::result<envelope> {
    return self->state.answer(q);
  });
  // A whole block: every rule is checked again here, whoever sent it. A
  // block from ahead of our tip means we missed some: catch up now.
  st.table->on<schema::Block>([self](const envelope& env, schema::Block::Reader b)
                                 -> caf::result<envelope> {
    if (auto err = self->state.store->append(env)) {
      auto tip = self->state.store->tip();
      if (tip && b.getHeader().getHeight() > tip->height + 1)
        sync_round(self);
      return err;
    }
    return self->state.tip_info();
  });
  self->set_default_handler([self](caf::scheduled_actor*, caf::message_view& x) {
    return drop_unexpected(self, x, self->state.ctx.counters.get());
  });
  self->send(self, tick_atom::value);
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      return self->state.table->dispatch(self, env, self->state.ctx.counters.get());
    },
    [self](tick_atom) {
      sync_round(self);
      self->delayed_send(self, std::chrono::milliseconds{self->state.ctx.lim.ledger_sync_ms},
                         tick_atom::value);
    },
  };
}

} // namespace

caf::expected<std::shared_ptr<ledger::chain>> shared_chain(const role_context& ctx) {
  if (ctx.genesis.empty())
    return make_error(errc::config_invalid,
                      "the chain roles need the chain's genesis file ([chain] genesis in "
                      "host.toml)");
  static std::mutex mtx;
  static std::map<std::string, std::weak_ptr<chain>> open_chains;
  std::lock_guard<std::mutex> guard{mtx};
  auto key = std::filesystem::absolute(ctx.data_dir).lexically_normal().string();
  if (auto existing = open_chains[key].lock())
    return existing;
  auto g = ledger::load_genesis(ctx.genesis);
  if (!g)
    return g.error();
  auto c = chain::open(ctx.data_dir, *g);
  if (!c)
    return c.error();
  std::shared_ptr<chain> shared{std::move(*c)};
  open_chains[key] = shared;
  return shared;
}

caf::expected<host_store> open_host_store(const role_context& ctx) {
  host_store out;
  if (!ctx.genesis.empty()) {
    auto c = shared_chain(ctx);
    if (!c)
      return c.error();
    out.chain = *c;
    out.env = out.chain->shared_env();
    return out;
  }
  auto e = store::shared_environment(ctx.data_dir);
  if (!e)
    return e.error();
  out.env = *e;
  return out;
}

caf::expected<caf::actor> spawn_ledger(caf::actor_system& sys, const role_context& ctx) {
  auto store = shared_chain(ctx);
  if (!store)
    return store.error();
  return sys.spawn<caf::detached>(ledger_role, ctx, *store);
}

} // namespace aicon
