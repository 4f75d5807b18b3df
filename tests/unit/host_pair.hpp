// Two real hosts in one test process, B allowing A and A dialing B over
// mutual TLS on 127.0.0.1, and helpers to ask their roles.
#pragma once

#include <boost/test/unit_test.hpp>

#include <functional>
#include <thread>

#include <caf/all.hpp>

#include "actors/roles.hpp"
#include "runtime/directory.hpp"
#include "runtime/envelope.hpp"
#include "runtime/host.hpp"
#include "runtime/tls.hpp"
#include "test_util.hpp"

namespace aicon::test {

/// Asks `dst` from inside `from`; an ErrorReply comes back as its error.
inline caf::expected<envelope> ask(host& from, const caf::actor& dst, envelope req,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  caf::scoped_actor self{from.system()};
  caf::expected<envelope> result = make_error(errc::internal, "no answer");
  self->request(dst, timeout, std::move(req))
    .receive(
      [&](envelope& e) {
        if (auto err = error_of_reply(e))
          result = err;
        else
          result = std::move(e);
      },
      [&](caf::error& e) { result = e; });
  return result;
}

/// Looks `name` up in `from`'s directory and asks it.
inline caf::expected<envelope> ask(host& from, const std::string& name, envelope req) {
  auto dst = lookup_blocking(from.system(), from.directory(), name, std::chrono::seconds(5));
  if (!dst)
    return dst.error();
  return ask(from, *dst, std::move(req));
}

struct host_pair {
  temp_dir dir;
  std::unique_ptr<host> a, b;

  /// `tune_a` / `tune_b` adjust the configs; returns once A can look up
  /// `role@B`.
  void start(const std::function<void(host_config&)>& tune_a,
             const std::function<void(host_config&)>& tune_b, const std::string& role) {
    auto ia = create_identity(dir / "a");
    auto ib = create_identity(dir / "b");
    BOOST_REQUIRE(ia && ib);
    BOOST_REQUIRE(trust_certificate(dir / "a", dir / "b" / node_cert_file));
    BOOST_REQUIRE(trust_certificate(dir / "b", dir / "a" / node_cert_file));
    host_config cb;
    cb.data_dir = dir / "b";
    cb.allow = {ia->id()};
    tune_b(cb);
    auto hb = host::start(cb, role_table());
    BOOST_REQUIRE_MESSAGE(hb, why(hb));
    b = std::move(*hb);
    host_config ca;
    ca.data_dir = dir / "a";
    ca.connect = {peer_entry{net_address{"127.0.0.1", b->port()}, ib->id()}};
    tune_a(ca);
    auto ha = host::start(ca, role_table());
    BOOST_REQUIRE_MESSAGE(ha, why(ha));
    a = std::move(*ha);
    // Wait (bounded) until A's link to B is up.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!lookup_blocking(a->system(), a->directory(), role + "@" + b->id().hex(),
                            std::chrono::seconds(5))) {
      BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline, "A never linked to B");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
};

} // namespace aicon::test
