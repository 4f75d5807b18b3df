// Two `aicon host` processes, A dialing B, and helpers to talk to them from
// the test process through the same client path `aicon ping` uses.
#pragma once

#include <boost/test/unit_test.hpp>

#include <cstdlib>

#include <fmt/format.h>

#include "actors/trainer/torch_model.hpp"
#include "cluster.hpp"
#include "runtime/client.hpp"
#include "runtime/error.hpp"
#include "schemas/echo.capnp.h"
#include "schemas/host.capnp.h"
#include "schemas/job.capnp.h"

namespace aicon::test {

inline std::string why_not(const caf::error& err) {
  return describe(err);
}

template <class T>
std::string why(const caf::expected<T>& x) {
  return x ? std::string{} : describe(x.error());
}

/// Whether this build has no libtorch; then says so in the words the torch
/// tests' ctest entries take as "skipped".
inline bool torch_skipped() {
  if (train::torch_available())
    return false;
  BOOST_TEST_MESSAGE("torch test skipped: this build has no libtorch");
  return true;
}

/// Writes the TorchScript test models (examples/models/make_models.py) into
/// `dir`; false, said as a skip, where /usr/bin/python3 cannot.
inline bool make_torch_models(const std::filesystem::path& dir) {
  auto make = fmt::format("/usr/bin/python3 {}/examples/models/make_models.py {} > {}.log 2>&1",
                          AICON_SOURCE_DIR, dir.string(), dir.string());
  if (std::system(make.c_str()) == 0)
    return true;
  BOOST_TEST_MESSAGE("torch test skipped: /usr/bin/python3 cannot make TorchScript models");
  return false;
}

/// 32 bytes from 64 hex digits (a job or dataset id a command printed).
inline std::array<uint8_t, 32> id_bytes(const std::string& hex) {
  auto id = node_id::from_hex(hex);
  BOOST_REQUIRE_MESSAGE(id, "not 64 hex digits: '" << hex << "'");
  return id->bytes;
}

/// A small valid job: mlp:64-64-10, 2 trainers, 10 steps of batch 32 (the
/// data source, budget and the rest left to the test).
inline void small_job_spec(schema::JobSpec::Builder spec) {
  spec.setModel("mlp:64-64-10");
  spec.setTrainers(2);
  spec.setSteps(10);
  spec.setBatch(32);
  spec.setLr(0.05f);
  spec.setMomentum(0.9f);
  spec.setHoldoutPercent(20);
  spec.setTransport(schema::Transport::STREAM);
}

struct host_pair {
  test::temp_dir root;
  node_dir a, b;
  running_host hb, ha;
  std::string limits_toml;

  explicit host_pair(std::string limits = "") : limits_toml(std::move(limits)) {
    a = make_node(root, "a");
    b = make_node(root, "b");
    trust(a, b);
    trust(b, a);
    hb = start_host(config_b(0), root / "b.log");
    ha = start_host(config_a(), root / "a.log");
    BOOST_REQUIRE_MESSAGE(ha.proc->wait_for_log("peer up " + b.id.short_hex(), 15s),
                          "A never linked to B:\n" << ha.proc->log_text());
  }

  std::filesystem::path config_b(uint16_t port) {
    return write_file(root.path(), "b.toml",
                      fmt::format("[host]\ndata_dir = \"b\"\nsite = \"site-b\"\n"
                                  "listen = \"127.0.0.1:{}\"\n[peers]\nallow = [\"{}\"]\n{}",
                                  port, a.id.hex(), limits_toml));
  }

  std::filesystem::path config_a() {
    return write_file(root.path(), "a.toml",
                      fmt::format("[host]\ndata_dir = \"a\"\nsite = \"site-a\"\n[peers]\n"
                                  "connect = [ {{ address = \"127.0.0.1:{}\", node = \"{}\" }} ]\n{}",
                                  hb.port, b.id.hex(), limits_toml));
  }

  /// A client in this test process with `who`'s identity, linked to A.
  std::unique_ptr<client> client_of(const node_dir& who) {
    client::options opts;
    opts.data_dir = who.dir;
    opts.threads = 2;
    auto c = client::start(opts);
    BOOST_REQUIRE_MESSAGE(c, why(c));
    auto node = (*c)->connect(fmt::format("127.0.0.1:{}", ha.port), a.id);
    BOOST_REQUIRE_MESSAGE(node, why(node));
    return std::move(*c);
  }
};

inline envelope echo_request(uint64_t seq, const std::string& forward_to,
                             uint32_t delay_ms = 0) {
  return make_envelope<schema::EchoRequest>([&](schema::EchoRequest::Builder b) {
    b.setSeq(seq);
    std::string text = "payload-" + std::to_string(seq);
    b.setPayload(kj::arrayPtr(reinterpret_cast<const kj::byte*>(text.data()), text.size()));
    b.setForwardTo(forward_to);
    b.setDelayMs(delay_ms);
  });
}

/// Status of the host `node` as seen through `c`.
inline caf::expected<envelope> status_of(client& c, const node_id& node) {
  auto dir = c.lookup("directory@" + node.hex());
  if (!dir)
    return dir.error();
  return c.request(*dir, make_envelope<schema::StatusRequest>([](auto) {}), 5s);
}

} // namespace aicon::test
