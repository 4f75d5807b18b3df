#include "runtime/client.hpp"

#include <thread>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <fmt/format.h>

#include "runtime/atoms.hpp"
#include "runtime/directory.hpp"
#include "runtime/error.hpp"
#include "runtime/peer_manager.hpp"
#include "runtime/tls.hpp"

namespace aicon {

caf::expected<std::unique_ptr<client>> client::start(const options& opts) {
  std::unique_ptr<client> c{new client};
  c->opts_ = opts;
  auto id = load_identity(opts.data_dir);
  if (!id)
    return id.error();
  c->self_ = std::make_shared<const identity>(*id);
  system_options sys_opts;
  sys_opts.lim = opts.lim;
  sys_opts.threads = opts.threads;
  if (!opts.dev_open && !opts.plain_tcp) {
    // A private directory: the host's own tls/allowed.pem is re-read by CAF
    // for every connection it accepts and must never change under it.
    auto dir = temp_dir::create("aicon-client");
    if (!dir)
      return dir.error();
    c->tls_dir_.emplace(std::move(*dir));
    auto tls = prepare_tls_files(*c->self_, opts.data_dir, trusted_peers(opts.data_dir),
                                 c->tls_dir_->path());
    if (!tls)
      return tls.error();
    sys_opts.tls = *tls;
  }
  c->cfg_ = std::make_unique<caf::actor_system_config>();
  configure_system(*c->cfg_, sys_opts);
  c->sys_ = std::make_unique<caf::actor_system>(*c->cfg_);
  harden_system(*c->sys_);
  role_context ctx;
  c->stopping_ = ctx.stopping;
  ctx.self = c->self_;
  ctx.lim = opts.lim;
  ctx.counters = std::make_shared<host_counters>();
  ctx.site = "client";
  c->directory_ = spawn_directory(*c->sys_, ctx);
  ctx.directory = c->directory_;
  c->peers_ = spawn_peer_manager(*c->sys_, ctx, !opts.plain_tcp);
  return c;
}

client::~client() {
  if (sys_) {
    stopping_->store(true);
    caf::anon_send_exit(directory_, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(peers_, caf::exit_reason::user_shutdown);
    directory_ = nullptr;
    peers_ = nullptr;
    sys_.reset();
  }
}

caf::expected<node_id> client::connect(const std::string& address,
                                       std::optional<node_id> expected) {
  caf::scoped_actor self{*sys_};
  caf::expected<node_id> result = make_error(errc::internal, "no answer");
  auto timeout = std::chrono::milliseconds(opts_.lim.connect_timeout_ms * 2);
  self
    ->request(peers_, timeout, dial_atom::value, address,
              expected ? expected->hex() : std::string{}, false)
    .receive([&](const std::string& hex) { result = node_id::from_hex(hex); },
             [&](caf::error& err) {
               result = make_error(code_of(err) == errc::internal ? errc::peer_down
                                                                   : code_of(err),
                                   fmt::format("cannot connect to {}: {}", address,
                                               describe(err)));
             });
  return result;
}

caf::expected<caf::actor> client::lookup(const std::string& name) {
  return lookup_blocking(*sys_, directory_, name,
                         std::chrono::milliseconds(opts_.lim.request_timeout_ms));
}

caf::expected<envelope> client::watch(const std::string& address, const node_id& node,
                                      const std::string& role, const envelope& req,
                                      std::chrono::milliseconds timeout,
                                      std::chrono::milliseconds patience,
                                      const std::function<void(const caf::error&)>& on_retry) {
  auto deadline = std::chrono::steady_clock::now() + patience;
  for (;;) {
    auto dst = lookup(role + "@" + node.hex());
    caf::expected<envelope> r = dst ? request(*dst, req, timeout) : caf::expected<envelope>{dst.error()};
    if (r)
      return r;
    auto code = code_of(r.error());
    bool passing = code == errc::peer_down || code == errc::unknown_node || code == errc::timeout;
    if (!passing || std::chrono::steady_clock::now() >= deadline)
      return r;
    if (on_retry)
      on_retry(r.error());
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    // (A link that is still up answers this at once; a host restarting
    // refuses it until it listens again.)
    (void)connect(address, node);
  }
}

caf::expected<envelope> client::request(const caf::actor& dst, envelope req,
                                        std::chrono::milliseconds timeout) {
  caf::scoped_actor self{*sys_};
  caf::expected<envelope> result = make_error(errc::internal, "no answer");
  self->request(dst, timeout, std::move(req))
    .receive(
      [&](envelope& reply) {
        if (auto err = error_of_reply(reply))
          result = std::move(err);
        else
          result = std::move(reply);
      },
      [&](caf::error& err) {
        // This request's own timeout says so; a timeout the other side
        // reports keeps its own words.
        result = err.category() == caf::atom("system")
                     && err.code() == static_cast<uint8_t>(caf::sec::request_timeout)
                   ? make_error(errc::timeout,
                                fmt::format("no answer within {} ms", timeout.count()))
                   : std::move(err);
      });
  return result;
}

} // namespace aicon
