#include "bench/messages.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <fmt/format.h>

#include "actors/echo/echo.hpp"
#include "runtime/client.hpp"
#include "runtime/temp_dir.hpp"
#include "runtime/envelope.hpp"
#include "runtime/tls.hpp"
#include "schemas/echo.capnp.h"

extern char** environ;

namespace aicon::bench {

namespace {

using sync_atom = caf::atom_constant<caf::atom("sync")>;
using run_atom = caf::atom_constant<caf::atom("run")>;
// CAF 0.17's built-in byte buffer type (no registration needed): the
// plainest way to carry bytes in a CAF message.
using byte_vector = std::vector<char>;
using clock_type = std::chrono::steady_clock;

// --- the server side: one actor that takes both formats ---------------------

struct bench_echo_state {
  uint64_t oneway = 0;
  uint64_t bytes = 0;
  static inline const char* name = "aicon.bench_echo";
};

caf::behavior bench_echo(caf::stateful_actor<bench_echo_state>* self) {
  return {
    [self](const envelope& env) -> caf::result<envelope> {
      opened<schema::EchoRequest> req{env};
      if (!req)
        return make_error_reply(req.error());
      if (!self->current_message_id().is_request()) {
        ++self->state.oneway;
        self->state.bytes += req->getPayload().size();
        return caf::delegated<envelope>{};
      }
      return make_echo_response(req.root(), nullptr);
    },
    [self](const byte_vector& bytes) -> caf::result<byte_vector> {
      if (!self->current_message_id().is_request()) {
        ++self->state.oneway;
        self->state.bytes += bytes.size();
        return caf::delegated<byte_vector>{};
      }
      return bytes;
    },
    [self](sync_atom) -> uint64_t {
      auto n = self->state.oneway;
      self->state.oneway = 0;
      return n;
    },
  };
}

int serve(const messages_options& opts) {
  auto id = load_identity(opts.data_dir);
  if (!id) {
    std::fprintf(stderr, "bench server: %s\n", describe(id.error()).c_str());
    return 2;
  }
  auto tls = prepare_tls_files(*id, opts.data_dir, trusted_peers(opts.data_dir),
                               std::filesystem::path{opts.data_dir} / "tls");
  if (!tls) {
    std::fprintf(stderr, "bench server: %s\n", describe(tls.error()).c_str());
    return 2;
  }
  system_options sys_opts;
  sys_opts.tls = *tls;
  caf::actor_system_config cfg;
  configure_system(cfg, sys_opts);
  caf::actor_system sys{cfg};
  harden_system(sys);
  auto echo = sys.spawn(bench_echo);
  auto tls_port = caf::openssl::publish(echo, 0, "127.0.0.1", true);
  auto plain_port = sys.middleman().publish(echo, 0, "127.0.0.1", true);
  if (!tls_port || !plain_port) {
    std::fprintf(stderr, "bench server: cannot publish\n");
    return 2;
  }
  std::printf("ports %u %u\n", *tls_port, *plain_port);
  std::fflush(stdout);
  // Runs until the parent closes our stdin (or dies).
  char buf[64];
  while (::read(0, buf, sizeof(buf)) > 0) {
  }
  caf::anon_send_exit(echo, caf::exit_reason::user_shutdown);
  return 0;
}

// --- the driver: one cell of the table --------------------------------------

struct cell_spec {
  bool use_envelope;
  bool round_trip; // false: one-way with a sync request every `window` messages
  size_t payload_bytes;
  double seconds;
};

struct driver_state {
  caf::actor target;
  cell_spec spec;
  byte_vector payload;
  clock_type::time_point start, deadline;
  uint64_t ops = 0, wrong = 0, seq = 0;
  size_t window = 0;
  caf::typed_response_promise<uint64_t, double, uint64_t> rp;
  static inline const char* name = "aicon.bench_driver";
};

using driver_ptr = caf::stateful_actor<driver_state>*;

envelope make_request(driver_state& st) {
  return make_envelope<schema::EchoRequest>(
    [&](schema::EchoRequest::Builder b, envelope_builder& eb) {
      b.setSeq(st.seq);
      if (st.payload.size() > 1024)
        b.adoptPayload(eb.orphanage().referenceExternalData(
          kj::arrayPtr(reinterpret_cast<const kj::byte*>(st.payload.data()), st.payload.size())));
      else
        b.setPayload(kj::arrayPtr(reinterpret_cast<const kj::byte*>(st.payload.data()), st.payload.size()));
    });
}

template <class Byte>
bool same_bytes(const Byte* data, size_t size, const byte_vector& expected) {
  return size == expected.size()
         && (size == 0
             || (static_cast<char>(data[0]) == expected[0]
                 && static_cast<char>(data[size / 2]) == expected[size / 2]
                 && static_cast<char>(data[size - 1]) == expected[size - 1]));
}

void finish(driver_ptr self) {
  auto& st = self->state;
  auto secs = std::chrono::duration<double>(clock_type::now() - st.start).count();
  st.rp.deliver(st.ops, secs, st.wrong);
  self->quit();
}

void next_round_trip(driver_ptr self) {
  auto& st = self->state;
  if (clock_type::now() >= st.deadline)
    return finish(self);
  auto on_error = [self](caf::error&) {
    ++self->state.wrong;
    finish(self);
  };
  if (st.spec.use_envelope) {
    self->request(st.target, std::chrono::seconds(10), make_request(st))
      .then(
        [self](envelope& reply) {
          auto& st = self->state;
          opened<schema::EchoResponse> resp{reply};
          if (!resp || resp->getSeq() != st.seq
              || !same_bytes(resp->getPayload().begin(), resp->getPayload().size(), st.payload))
            ++st.wrong;
          ++st.ops;
          ++st.seq;
          next_round_trip(self);
        },
        on_error);
  } else {
    self->request(st.target, std::chrono::seconds(10), byte_vector(st.payload))
      .then(
        [self](byte_vector& reply) {
          auto& st = self->state;
          if (!same_bytes(reply.data(), reply.size(), st.payload))
            ++st.wrong;
          ++st.ops;
          ++st.seq;
          next_round_trip(self);
        },
        on_error);
  }
}

void next_burst(driver_ptr self) {
  auto& st = self->state;
  if (clock_type::now() >= st.deadline)
    return finish(self);
  for (size_t i = 0; i < st.window; ++i) {
    if (st.spec.use_envelope)
      self->send(st.target, make_request(st));
    else
      self->send(st.target, byte_vector(st.payload));
    ++st.seq;
  }
  self->request(st.target, std::chrono::seconds(30), sync_atom::value)
    .then(
      [self](uint64_t received) {
        auto& st = self->state;
        if (received != st.window)
          st.wrong += received > st.window ? received - st.window : st.window - received;
        st.ops += received;
        next_burst(self);
      },
      [self](caf::error&) {
        ++self->state.wrong;
        finish(self);
      });
}

caf::behavior driver(driver_ptr self, caf::actor target, cell_spec spec) {
  auto& st = self->state;
  st.target = std::move(target);
  st.spec = spec;
  st.payload.resize(spec.payload_bytes);
  for (size_t i = 0; i < st.payload.size(); ++i)
    st.payload[i] = static_cast<char>(i * 131 + 17);
  // Bursts bounded in bytes: CAF's send has no backpressure.
  st.window = std::clamp<size_t>((1 << 20) / std::max<size_t>(spec.payload_bytes, 1), 8, 256);
  return {
    [self](run_atom) -> caf::typed_response_promise<uint64_t, double, uint64_t> {
      auto& st = self->state;
      st.rp = self->make_response_promise<caf::typed_response_promise<uint64_t, double, uint64_t>>();
      st.start = clock_type::now();
      st.deadline = st.start + std::chrono::duration_cast<clock_type::duration>(
                                 std::chrono::duration<double>(st.spec.seconds));
      if (st.spec.round_trip)
        next_round_trip(self);
      else
        next_burst(self);
      return st.rp;
    },
  };
}

struct cell_result {
  double rate = 0; // operations per second
  uint64_t wrong = 0;
};

cell_result run_cell(caf::actor_system& sys, const caf::actor& target, const cell_spec& spec) {
  auto d = sys.spawn(driver, target, spec);
  caf::scoped_actor self{sys};
  cell_result result;
  self->request(d, std::chrono::seconds(static_cast<int>(spec.seconds) + 60), run_atom::value)
    .receive(
      [&](uint64_t ops, double secs, uint64_t wrong) {
        result.rate = secs > 0 ? static_cast<double>(ops) / secs : 0;
        result.wrong = wrong;
      },
      [&](caf::error&) { result.wrong = 1; });
  return result;
}

// --- the server process -------------------------------------------------------

struct server_process {
  pid_t pid = -1;
  int stdin_fd = -1;
  uint16_t tls_port = 0;
  uint16_t plain_port = 0;

  ~server_process() {
    if (stdin_fd >= 0)
      ::close(stdin_fd); // the server exits on EOF
    if (pid > 0) {
      for (int i = 0; i < 50; ++i) {
        if (::waitpid(pid, nullptr, WNOHANG) == pid)
          return;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};

caf::error start_server(server_process& srv, const std::string& data_dir) {
  char exe[4096];
  auto n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0)
    return make_error(errc::io_error, "cannot find /proc/self/exe");
  exe[n] = '\0';
  std::vector<std::string> args{exe};
  if (std::filesystem::path{exe}.filename() == "aicon") {
    args.push_back("bench");
    args.push_back("messages");
  }
  args.push_back("--serve");
  args.push_back("--data-dir");
  args.push_back(data_dir);
  std::vector<char*> argv;
  for (auto& a : args)
    argv.push_back(a.data());
  argv.push_back(nullptr);
  int in_pipe[2], out_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0 || ::pipe2(out_pipe, O_CLOEXEC) != 0)
    return make_error(errc::io_error, "cannot create pipes");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out_pipe[1], 1);
  int rc = posix_spawn(&srv.pid, exe, &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  srv.stdin_fd = in_pipe[1];
  if (rc != 0) {
    ::close(out_pipe[0]);
    srv.pid = -1;
    return make_error(errc::io_error, fmt::format("cannot start {}", exe));
  }
  FILE* out = ::fdopen(out_pipe[0], "r");
  unsigned tls = 0, plain = 0;
  int matched = std::fscanf(out, "ports %u %u", &tls, &plain);
  std::fclose(out);
  if (matched != 2)
    return make_error(errc::io_error, "the benchmark server did not start");
  srv.tls_port = static_cast<uint16_t>(tls);
  srv.plain_port = static_cast<uint16_t>(plain);
  return caf::none;
}

std::string human_bytes(size_t n) {
  if (n >= 1024 && n % 1024 == 0)
    return fmt::format("{} KiB", n / 1024);
  return fmt::format("{} B", n);
}

} // namespace

void add_messages_flags(CLI::App& app, messages_options& opts) {
  app.add_option("--seconds", opts.seconds, "measuring time per cell and format (default 1)");
  app.add_flag("--quick", opts.quick, "tiny run (ctest): every cell for 0.05 s");
  app.add_option("--transports", opts.transports, "subset of local,tcp,tls");
  app.add_option("--csv", opts.csv, "also write the table to this CSV file");
  app.add_flag("--serve", opts.serve, "internal: run as the benchmark's server process");
  app.add_option("--data-dir", opts.data_dir, "internal: the server's data dir");
}

int run_messages(const messages_options& opts_in, const char*) {
  if (opts_in.serve)
    return serve(opts_in);
  auto opts = opts_in;
  if (opts.quick)
    opts.seconds = 0.05;
  std::signal(SIGPIPE, SIG_IGN);
  // Two throwaway identities that trust each other.
  auto tmp = temp_dir::create("aicon-bench");
  if (!tmp) {
    std::fprintf(stderr, "bench: %s\n", describe(tmp.error()).c_str());
    return 2;
  }
  auto server_dir = *tmp / "server", client_dir = *tmp / "client";
  if (!create_identity(server_dir) || !create_identity(client_dir)
      || !trust_certificate(server_dir, client_dir / node_cert_file)
      || !trust_certificate(client_dir, server_dir / node_cert_file)) {
    std::fprintf(stderr, "bench: cannot create identities\n");
    return 2;
  }
  server_process srv;
  if (auto err = start_server(srv, server_dir.string())) {
    std::fprintf(stderr, "bench: %s\n", describe(err).c_str());
    return 2;
  }
  client::options copts;
  copts.data_dir = client_dir;
  auto c = client::start(copts);
  if (!c) {
    std::fprintf(stderr, "bench: %s\n", describe(c.error()).c_str());
    return 2;
  }
  auto& sys = (*c)->system();
  auto local = sys.spawn(bench_echo);
  struct transport {
    std::string name;
    caf::actor target;
  };
  std::vector<transport> transports;
  for (auto& name : {std::string{"local"}, std::string{"tcp"}, std::string{"tls"}}) {
    if (opts.transports.find(name) == std::string::npos)
      continue;
    if (name == "local") {
      transports.push_back({name, local});
    } else if (name == "tcp") {
      auto h = sys.middleman().remote_actor("127.0.0.1", srv.plain_port);
      if (!h) {
        std::fprintf(stderr, "bench: plain connect failed: %s\n", caf::to_string(h.error()).c_str());
        return 2;
      }
      transports.push_back({name, *h});
    } else {
      auto h = caf::openssl::remote_actor(sys, "127.0.0.1", srv.tls_port);
      if (!h) {
        std::fprintf(stderr, "bench: TLS connect failed: %s\n", caf::to_string(h.error()).c_str());
        return 2;
      }
      transports.push_back({name, *h});
    }
  }
  std::printf("# aicon bench messages: Cap'n Proto envelope vs a plain CAF message carrying the "
              "same bytes\n");
  std::printf("# same run, same path; 'local' = one process, 'tcp'/'tls' = a second process on "
              "127.0.0.1\n");
  std::printf("# rr = request/response round trips/s; oneway = messages/s; best of 3 alternating "
              "rounds of %.2f s; %u cores\n",
              opts.seconds / 3, std::thread::hardware_concurrency());
  std::printf("%-9s %-7s %-8s %14s %14s %7s %9s %7s\n", "transport", "pattern", "payload",
              "envelope/s", "plain/s", "ratio", "env MB/s", "#wrong");
  std::ofstream csv;
  if (!opts.csv.empty()) {
    csv.open(opts.csv);
    csv << "transport,pattern,payload_bytes,envelope_per_s,plain_per_s,ratio,envelope_mb_s,wrong\n";
  }
  uint64_t total_wrong = 0;
  int misses = 0;
  for (auto& t : transports) {
    for (bool rr : {true, false}) {
      for (size_t payload : {size_t{64}, size_t{64} << 10}) {
        cell_result env_best, plain_best;
        for (int round = 0; round < 3; ++round) {
          auto e = run_cell(sys, t.target, {true, rr, payload, opts.seconds / 3});
          auto p = run_cell(sys, t.target, {false, rr, payload, opts.seconds / 3});
          env_best.rate = std::max(env_best.rate, e.rate);
          plain_best.rate = std::max(plain_best.rate, p.rate);
          env_best.wrong += e.wrong;
          plain_best.wrong += p.wrong;
        }
        auto ratio = plain_best.rate > 0 ? env_best.rate / plain_best.rate : 0;
        auto wrong = env_best.wrong + plain_best.wrong;
        total_wrong += wrong;
        auto mbs = env_best.rate * static_cast<double>(payload) * (rr ? 2 : 1) / 1e6;
        bool miss = ratio < 0.9;
        misses += miss ? 1 : 0;
        std::printf("%-9s %-7s %-8s %14.0f %14.0f %7.3f %9.1f %7llu%s\n", t.name.c_str(),
                    rr ? "rr" : "oneway", human_bytes(payload).c_str(), env_best.rate,
                    plain_best.rate, ratio, mbs, static_cast<unsigned long long>(wrong),
                    miss ? "  < 0.9" : "");
        std::fflush(stdout);
        if (csv)
          csv << fmt::format("{},{},{},{:.0f},{:.0f},{:.4f},{:.1f},{}\n", t.name,
                             rr ? "rr" : "oneway", payload, env_best.rate, plain_best.rate,
                             ratio, mbs, wrong);
      }
    }
  }
  std::printf("# %d row(s) below the 0.9 target; %llu wrong\n", misses,
              static_cast<unsigned long long>(total_wrong));
  caf::anon_send_exit(local, caf::exit_reason::user_shutdown);
  for (auto& t : transports)
    t.target = nullptr;
  return total_wrong == 0 ? 0 : 1;
}

} // namespace aicon::bench
