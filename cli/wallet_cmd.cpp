#include "cli/wallet_cmd.hpp"

#include <chrono>
#include <cstdio>
#include <thread>

#include <fmt/format.h>

#include "actors/job/economy.hpp"
#include "actors/ledger/state.hpp"
#include "actors/ledger/work.hpp"
#include "runtime/client.hpp"
#include "runtime/error.hpp"
#include "schemas/chain.capnp.h"

namespace aicon {

namespace {

int fail(const caf::error& err) {
  std::fprintf(stderr, "aicon: %s\n", describe(err).c_str());
  return 1;
}

/// A client linked to one host, with that host's NodeId.
struct session {
  std::unique_ptr<client> c;
  node_id host;

  static caf::expected<session> open(const wallet_options& opts) {
    if (opts.connect.empty())
      return make_error(errc::invalid_argument, "--connect host:port is required");
    client::options co;
    co.data_dir = opts.data_dir;
    co.dev_open = opts.dev_open;
    co.threads = 2;
    auto c = client::start(co);
    if (!c)
      return c.error();
    std::optional<node_id> expected;
    if (!opts.node.empty()) {
      auto id = node_id::from_hex(opts.node);
      if (!id)
        return make_error(errc::invalid_argument, "--node: " + what_of(id.error()));
      expected = *id;
    }
    auto id = (*c)->connect(opts.connect, expected);
    if (!id)
      return id.error();
    return session{std::move(*c), *id};
  }

  caf::expected<envelope> ask(const std::string& role, envelope req) {
    auto dst = c->lookup(role + "@" + host.hex());
    if (!dst)
      return dst.error();
    return c->request(*dst, std::move(req), std::chrono::seconds(15));
  }

  caf::expected<ledger::account> account(const node_id& who) {
    auto reply = ask("ledger", make_envelope<schema::LedgerQuery>([&](auto q) {
                       q.setAccount(kj::arrayPtr(who.bytes.data(), 32));
                     }));
    if (!reply)
      return reply.error();
    opened<schema::AccountInfo> info{*reply};
    if (!info)
      return info.error();
    return ledger::account{info->getBalance(), info->getNonce(), info->getStake()};
  }
};

caf::expected<node_id> wallet_of(const wallet_options& opts) {
  if (!opts.wallet.empty()) {
    auto id = node_id::from_hex(opts.wallet);
    if (!id)
      return make_error(errc::invalid_argument, "wallet: " + what_of(id.error()));
    return *id;
  }
  if (opts.key.empty())
    return make_error(errc::invalid_argument, "give a wallet id or --key FILE");
  auto key = load_key_file(opts.key);
  if (!key)
    return key.error();
  return key->id();
}

} // namespace

int wallet_new(const wallet_options& opts) {
  if (opts.key.empty())
    return fail(make_error(errc::invalid_argument, "--key FILE is required"));
  auto id = create_key_file(opts.key);
  if (!id)
    return fail(id.error());
  std::printf("%s\n", id->id().hex().c_str());
  std::fprintf(stderr, "wrote %s (mode 0600); the line above is the wallet id to receive "
                       "payments\n",
               opts.key.c_str());
  return 0;
}

int wallet_balance(const wallet_options& opts) {
  auto who = wallet_of(opts);
  if (!who)
    return fail(who.error());
  auto s = session::open(opts);
  if (!s)
    return fail(s.error());
  auto a = s->account(*who);
  if (!a)
    return fail(a.error());
  std::printf("wallet   %s\nbalance  %llu\nstake    %llu\nnonce    %llu\n", who->hex().c_str(),
              static_cast<unsigned long long>(a->balance),
              static_cast<unsigned long long>(a->stake),
              static_cast<unsigned long long>(a->nonce));
  return 0;
}

int wallet_transfer(const wallet_options& opts) {
  auto key = load_key_file(opts.key);
  if (!key)
    return fail(key.error());
  auto to = node_id::from_hex(opts.to);
  if (!to)
    return fail(make_error(errc::invalid_argument, "--to: " + what_of(to.error())));
  if (opts.amount == 0)
    return fail(make_error(errc::invalid_argument, "--amount must be > 0"));
  auto s = session::open(opts);
  if (!s)
    return fail(s.error());
  auto before = s->account(key->id());
  if (!before)
    return fail(before.error());
  auto nonce = opts.nonce ? opts.nonce : before->nonce + 1;
  if (opts.nonce && before->nonce >= opts.nonce) {
    // Idempotent: that nonce is final already, so nothing is sent again.
    std::printf("final already: nonce %llu of %s is committed (balance %llu); nothing sent\n",
                static_cast<unsigned long long>(nonce), key->id().short_hex().c_str(),
                static_cast<unsigned long long>(before->balance));
    return 0;
  }
  if (opts.nonce > before->nonce + 1)
    return fail(make_error(errc::invalid_argument,
                           fmt::format("--nonce {} skips ahead: the next nonce of {} is {}",
                                       opts.nonce, key->id().short_hex(), before->nonce + 1)));
  auto chain = train::chain_id_of([&](envelope q) { return s->ask("ledger", std::move(q)); });
  if (!chain)
    return fail(chain.error());
  auto stx = ledger::make_signed_transaction(*key, *chain, nonce,
                                             [&](schema::Transaction::Body::Builder b) {
    auto t = b.initTransfer();
    t.setTo(kj::arrayPtr(to->bytes.data(), 32));
    t.setAmount(opts.amount);
  });
  auto ack = s->ask("block_generator", stx);
  bool pending_already = !ack && what_of(ack.error()).find("already pending") != std::string::npos;
  if (!ack && !pending_already) {
    // Not accepted, or no answer: say which, and how to retry safely.
    std::fprintf(stderr, "aicon: the transfer (nonce %llu) may not have been submitted: %s\n"
                         "aicon: retry with --nonce %llu: the same transfer, final at most once\n",
                 static_cast<unsigned long long>(nonce), describe(ack.error()).c_str(),
                 static_cast<unsigned long long>(nonce));
    return 1;
  }
  std::printf("%s transfer of %llu to %s (nonce %llu)\n",
              pending_already ? "already pending:" : "submitted", 
              static_cast<unsigned long long>(opts.amount), to->short_hex().c_str(),
              static_cast<unsigned long long>(nonce));
  if (opts.wait_s <= 0)
    return 0;
  auto deadline = std::chrono::steady_clock::now()
                  + std::chrono::milliseconds(static_cast<int64_t>(opts.wait_s * 1000));
  std::string last_error;
  while (std::chrono::steady_clock::now() < deadline) {
    auto now = s->account(key->id());
    if (now && now->nonce >= nonce) {
      std::printf("final: balance %llu\n", static_cast<unsigned long long>(now->balance));
      return 0;
    }
    last_error = now ? std::string{} : describe(now.error());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  // Submitted, outcome unknown: never report that as a failure to retry.
  std::printf("submitted, not final after %g s: %s\n"
              "do not send it again as a new transfer; `aicon wallet transfer --nonce %llu ...` "
              "re-submits this same one (final at most once) or says it is final\n",
              opts.wait_s,
              last_error.empty() ? "still pending (blocks need verified work)"
                                 : ("the ledger cannot be asked: " + last_error).c_str(),
              static_cast<unsigned long long>(nonce));
  return 3;
}

int work_receipt(const wallet_options& opts) {
  auto trainer = load_key_file(opts.trainer_key);
  if (!trainer)
    return fail(trainer.error());
  auto verifier = load_key_file(opts.verifier_key);
  if (!verifier)
    return fail(verifier.error());
  if (opts.units == 0)
    return fail(make_error(errc::invalid_argument, "--units must be > 0"));
  auto name_hash = [&](std::string_view what) {
    auto text = std::string{what} + ":" + opts.session;
    return ledger::blake2b("aicon-manual-session-v1",
                           {reinterpret_cast<const uint8_t*>(text.data()), text.size()});
  };
  ledger::work_facts f;
  f.session = name_hash("session");
  f.job = name_hash("job");
  f.model = name_hash("model");
  f.units = opts.units;
  f.seq = opts.seq ? opts.seq
                   : static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
  auto s = session::open(opts);
  if (!s)
    return fail(s.error());
  auto ack = s->ask("block_generator", ledger::make_work_receipt(*trainer, *verifier, f));
  if (!ack)
    return fail(ack.error());
  opened<schema::SubmitAck> a{*ack};
  if (!a)
    return fail(a.error());
  std::printf("receipt of %llu units for session '%s' accepted; %u receipts pending\n",
              static_cast<unsigned long long>(opts.units), opts.session.c_str(), a->getPoolSize());
  return 0;
}

} // namespace aicon
