#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <thread>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/io/basp_broker.hpp>
#include <caf/openssl/all.hpp>

#include <csignal>
#include <sys/stat.h>

#include "fixtures.hpp"
#include "site_proxy.hpp"
#include "runtime/atoms.hpp"
#include "runtime/system.hpp"

using namespace aicon;
using namespace aicon::test;

namespace {

struct counters {
  uint64_t served = 0;
  uint64_t dropped = 0;
  uint32_t actors = 0;
};

counters read_status(client& c, const node_id& node) {
  auto st = status_of(c, node);
  BOOST_REQUIRE_MESSAGE(st, why(st));
  opened<schema::StatusResponse> r{*st};
  BOOST_REQUIRE(r.ok());
  return {r->getRequestsServed(), r->getMalformedDropped(), r->getRunningActors()};
}

/// Reads until EOF or error; true if the host closed within `timeout`.
bool closed_within(int fd, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      auto n = ::read(fd, buf, sizeof(buf));
      if (n <= 0)
        return true;
    }
  }
  return false;
}

} // namespace

BOOST_AUTO_TEST_SUITE(admission)

BOOST_AUTO_TEST_CASE(a_host_that_is_not_allowed_gets_nothing_in) {
  host_pair hp;
  auto friendly = hp.client_of(hp.a);
  auto before = read_status(*friendly, hp.a.id);
  // C knows and trusts A's certificate, but A does not allow C.
  auto c_node = make_node(hp.root, "c");
  trust(c_node, hp.a);
  client::options opts;
  opts.data_dir = c_node.dir;
  opts.lim.connect_timeout_ms = 3000;
  auto stranger = client::start(opts);
  BOOST_REQUIRE(stranger);
  auto t0 = std::chrono::steady_clock::now();
  auto linked = (*stranger)->connect(fmt::format("127.0.0.1:{}", hp.ha.port));
  BOOST_TEST(!linked, "a stranger linked to A");
  BOOST_TEST((std::chrono::steady_clock::now() - t0 < 10s));
  // Straight CAF, no aicon client logic: still refused at the link, so no
  // actor of A (not even one whose handle A gave to B) can be addressed.
  auto raw = caf::openssl::remote_actor((*stranger)->system(), "127.0.0.1", hp.ha.port);
  BOOST_TEST(!raw);
  auto after = read_status(*friendly, hp.a.id);
  // Exactly one more routed request: the status query itself.
  BOOST_TEST(after.served == before.served + 1);
  BOOST_TEST(hp.ha.proc->log_text().find("peer up " + c_node.id.short_hex()) == std::string::npos);
}

BOOST_AUTO_TEST_CASE(a_third_host_process_that_is_not_allowed_never_links) {
  host_pair hp;
  // B already holds handles A gave it (A's gatekeeper, and the link actors
  // behind A's requests). C, a real host that trusts A's certificate and
  // dials it, must still get nothing in: the TLS handshake fails before any
  // BASP byte, so no actor id of A can even be named.
  auto c_node = make_node(hp.root, "c");
  trust(c_node, hp.a);
  auto cfg = write_file(hp.root.path(), "c.toml",
                        fmt::format("[host]\ndata_dir = \"c\"\n[peers]\nconnect = [ {{ address = "
                                    "\"127.0.0.1:{}\", node = \"{}\" }} ]\n",
                                    hp.ha.port, hp.a.id.hex()));
  auto c = start_host(cfg, hp.root / "c.log");
  BOOST_TEST(c.proc->wait_for_log("unreachable", 10s).has_value(), c.proc->log_text());
  std::this_thread::sleep_for(2s); // a few redials
  BOOST_TEST(c.proc->log_text().find("peer up") == std::string::npos, c.proc->log_text());
  BOOST_TEST(hp.ha.proc->log_text().find(c_node.id.short_hex()) == std::string::npos);
  // A's link to B is unaffected.
  BOOST_TEST(hp.ha.proc->log_text().find("peer down") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(dev_mode_is_loud_and_still_encrypted) {
  test::temp_dir root;
  auto n = make_node(root, "n");
  auto cfg = write_file(root.path(), "dev.toml",
                        "[host]\ndata_dir = \"n\"\n[peers]\ndev_open = true\n");
  auto h = start_host(cfg, root / "dev.log");
  BOOST_TEST(h.proc->log_text().find("DEV MODE") != std::string::npos, h.proc->log_text());
  BOOST_TEST(h.proc->log_text().find("unauthenticated dev mode") != std::string::npos);
  auto other = make_node(root, "o"); // a key n never heard of
  auto ping = run_command({aicon_binary(), "ping", fmt::format("127.0.0.1:{}", h.port),
                           "--data-dir", other.dir.string(), "--dev-open", "--count", "3"});
  BOOST_TEST(ping.exit_code == 0, ping.output);
  // A plain CAF client still cannot talk to it: the port speaks only TLS.
  caf::actor_system_config sys_cfg;
  configure_system(sys_cfg, system_options{});
  caf::actor_system sys{sys_cfg};
  BOOST_TEST(!sys.middleman().remote_actor("127.0.0.1", h.port));
}

BOOST_AUTO_TEST_CASE(plain_clients_and_raw_bytes_are_cut_off_without_hanging_the_host) {
  host_pair hp{"[limits]\nidle_connection_ms = 1500\n"};
  // A plain (non-TLS) CAF client.
  {
    caf::actor_system_config cfg;
    system_options opts;
    opts.lim.connect_timeout_ms = 3000;
    configure_system(cfg, opts);
    caf::actor_system sys{cfg};
    auto t0 = std::chrono::steady_clock::now();
    auto h = sys.middleman().remote_actor("127.0.0.1", hp.ha.port);
    BOOST_TEST(!h, "plain CAF reached A");
    BOOST_TEST((std::chrono::steady_clock::now() - t0 < 10s));
  }
  // Garbage bytes.
  {
    int fd = tcp_connect(hp.ha.port);
    BOOST_REQUIRE(fd >= 0);
    std::string junk(3000, '\x5a');
    BOOST_REQUIRE(::write(fd, junk.data(), junk.size()) > 0);
    BOOST_TEST(closed_within(fd, 5s));
    ::close(fd);
  }
  // A connection that never sends a byte.
  {
    int fd = tcp_connect(hp.ha.port);
    BOOST_REQUIRE(fd >= 0);
    BOOST_TEST(closed_within(fd, 6s));
    ::close(fd);
    BOOST_TEST(hp.ha.proc->wait_for_log("no data for", 2s).has_value());
  }
  // A still serves allowed clients.
  auto c = hp.client_of(hp.a);
  auto echo = c->lookup("echo@" + hp.a.id.hex());
  BOOST_REQUIRE(echo);
  BOOST_TEST(static_cast<bool>(c->request(*echo, echo_request(1, ""), 5s)));
}

BOOST_AUTO_TEST_CASE(admitted_clients_behind_a_delay_link_and_a_trickler_is_cut) {
  // The watchdog judges each socket by its own age and by whether its TLS
  // handshake completed: a slow honest handshake (behind 120 ms each way,
  // several round trips) is never cut for another socket's age, and stays
  // linked past the handshake deadline; a stranger that keeps its
  // connection busy with a byte every 200 ms (never idle, never a
  // handshake) is cut at the deadline.
  host_pair hp{"[limits]\nidle_connection_ms = 1500\nhandshake_deadline_ms = 3000\n"};
  site_proxy wan{hp.ha.port, 120ms};
  std::vector<std::unique_ptr<client>> clients;
  std::vector<caf::actor> echoes;
  for (int i = 0; i < 6; ++i) {
    client::options opts;
    opts.data_dir = hp.b.dir;
    opts.threads = 1;
    auto c = client::start(opts);
    BOOST_REQUIRE_MESSAGE(c, why(c));
    auto t0 = std::chrono::steady_clock::now();
    auto node = (*c)->connect(fmt::format("127.0.0.1:{}", wan.port()), hp.a.id);
    BOOST_REQUIRE_MESSAGE(node, "client " << i << " behind the delay: " << why(node) << "\n"
                                          << hp.ha.proc->log_text());
    BOOST_TEST_MESSAGE("client " << i << " linked through the delay in "
                                 << std::chrono::duration_cast<std::chrono::milliseconds>(
                                      std::chrono::steady_clock::now() - t0)
                                      .count()
                                 << " ms");
    auto echo = (*c)->lookup("echo@" + hp.a.id.hex());
    BOOST_REQUIRE_MESSAGE(echo, why(echo));
    echoes.push_back(*echo);
    clients.push_back(std::move(*c));
  }
  // The trickler, straight to the host.
  int fd = tcp_connect(hp.ha.port);
  BOOST_REQUIRE(fd >= 0);
  auto t0 = std::chrono::steady_clock::now();
  bool cut = false;
  // Bounded: the deadline is 3 s, the watchdog looks every 500 ms.
  // A well-formed TLS record header announcing a 16 KiB handshake record,
  // then its body one byte at a time: OpenSSL waits for the whole record.
  const unsigned char header[] = {0x16, 0x03, 0x01, 0x40, 0x00};
  size_t sent = 0;
  while (!cut && std::chrono::steady_clock::now() - t0 < 8s) {
    char byte = sent < sizeof header ? static_cast<char>(header[sent]) : 0;
    ++sent;
    if (::send(fd, &byte, 1, MSG_NOSIGNAL) != 1)
      cut = true;
    else
      cut = closed_within(fd, 200ms);
  }
  auto lived = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  BOOST_TEST(cut, "a trickling stranger was never cut");
  BOOST_TEST((lived >= 2500ms), "the trickler was cut before the handshake deadline, after "
                                  << std::chrono::duration_cast<std::chrono::milliseconds>(lived).count()
                                  << " ms (by idleness?)");
  // Every delayed client, older than the deadline by now, is still served.
  for (size_t i = 0; i < clients.size(); ++i) {
    auto r = clients[i]->request(echoes[i], echo_request(i, ""), 10s);
    BOOST_TEST(static_cast<bool>(r), "client " << i << " after the deadline: " << why(r));
  }
}

BOOST_AUTO_TEST_CASE(only_tls_1_3_is_spoken) {
  // A client that offers at most TLS 1.2 (Python's ssl module: its own
  // OpenSSL use, outside aicon's process) is refused for the version; one
  // that offers 1.3 gets 1.3.
  host_pair hp;
  const char* script =
    "import socket, ssl, sys\n"
    "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
    "ctx.check_hostname = False\n"
    "ctx.verify_mode = ssl.CERT_NONE\n"
    "if sys.argv[2] == '1.2':\n"
    "    ctx.minimum_version = ssl.TLSVersion.TLSv1_2\n"
    "    ctx.maximum_version = ssl.TLSVersion.TLSv1_2\n"
    "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
    "try:\n"
    "    print('negotiated', ctx.wrap_socket(s).version())\n"
    "except Exception as e:\n"
    "    print('refused', e)\n";
  auto port = std::to_string(hp.ha.port);
  auto old = run_command({"/usr/bin/python3", "-c", script, port, "1.2"});
  BOOST_TEST(old.output.find("refused") != std::string::npos, old.output);
  BOOST_TEST((old.output.find("PROTOCOL_VERSION") != std::string::npos
              || old.output.find("protocol version") != std::string::npos
              || old.output.find("unsupported protocol") != std::string::npos),
             old.output);
  auto now = run_command({"/usr/bin/python3", "-c", script, port, "1.3"});
  BOOST_TEST(now.output.find("negotiated TLSv1.3") != std::string::npos, now.output);
}

BOOST_AUTO_TEST_CASE(an_allowed_peer_cannot_spawn_or_reach_caf_services) {
  host_pair hp;
  auto c = hp.client_of(hp.a);
  // A's own actors settle first: its directory makes its link to B's
  // directory at the first gossip round or ping (<= ping_ms).
  std::this_thread::sleep_for(1500ms);
  auto before = read_status(*c, hp.a.id);
  auto& sys = c->system();
  auto gk = caf::openssl::remote_actor(sys, "127.0.0.1", hp.ha.port);
  BOOST_REQUIRE(gk);
  auto nid = gk->node();
  auto spawned = sys.middleman().remote_spawn<caf::actor>(nid, "echo", caf::make_message(),
                                                          std::chrono::seconds(3));
  BOOST_TEST(!spawned, "remote spawn succeeded");
  // ConfigServ is a key-value store any peer could read and write; it must
  // not answer. (CAF's remote_lookup waits 5 minutes; ask with a bound.)
  auto basp = sys.middleman().named_broker<caf::io::basp_broker>(caf::atom("BASP"));
  {
    caf::scoped_actor self{sys};
    self->send(basp, caf::forward_atom::value, nid, caf::atom("ConfigServ"),
               caf::make_message(caf::get_atom::value, std::string{"*"}));
    bool answered = false;
    self->receive(caf::others >> [&](caf::message_view&) -> caf::result<caf::message> {
      answered = true;
      return caf::message{};
    }, caf::after(std::chrono::seconds(2)) >> [] {});
    BOOST_TEST(!answered, "ConfigServ answered a peer");
  }
  // Anything but (route, role, envelope) sent to the gatekeeper is dropped.
  {
    caf::scoped_actor self{sys};
    bool answered_with_error = false;
    self->request(caf::actor_cast<caf::actor>(*gk), 5s, 42)
      .receive([&](int) {}, [&](caf::error&) { answered_with_error = true; });
    BOOST_TEST(answered_with_error);
  }
  auto after = read_status(*c, hp.a.id);
  BOOST_TEST(after.actors == before.actors);
  BOOST_TEST(after.dropped >= before.dropped + 1);
}

BOOST_AUTO_TEST_CASE(an_allowed_peer_cannot_kill_or_confuse_the_gatekeeper) {
  host_pair hp;
  auto c = hp.client_of(hp.a);
  auto& sys = c->system();
  auto gk = caf::openssl::remote_actor(sys, "127.0.0.1", hp.ha.port);
  BOOST_REQUIRE(gk);
  auto handle = caf::actor_cast<caf::actor>(*gk);
  // What CAF would otherwise act on before any handler: kill, a bare error,
  // a down message, and a forged response.
  caf::anon_send_exit(handle, caf::exit_reason::kill);
  caf::anon_send_exit(handle, caf::exit_reason::user_shutdown);
  caf::anon_send(handle, caf::make_error(caf::sec::runtime_error));
  caf::anon_send(handle, caf::down_msg{handle.address(), caf::exit_reason::kill});
  {
    caf::scoped_actor self{sys};
    self->send(handle, route_atom::value, std::string{"echo"}, 7);
  }
  std::this_thread::sleep_for(500ms);
  // The gatekeeper still routes: echo, status and a new link all work.
  auto echo = c->lookup("echo@" + hp.a.id.hex());
  BOOST_REQUIRE(echo);
  auto reply = c->request(*echo, echo_request(1, ""), 5s);
  BOOST_TEST(static_cast<bool>(reply), why(reply));
  auto fresh = hp.client_of(hp.a);
  auto st = status_of(*fresh, hp.a.id);
  BOOST_TEST(static_cast<bool>(st), why(st));
  BOOST_TEST(hp.ha.proc->running());
}

BOOST_AUTO_TEST_CASE(hosts_refuse_to_start_unsafely) {
  test::temp_dir root;
  auto n = make_node(root, "n");
  auto stranger = aicon::identity::generate().id();
  // An allowed NodeId whose certificate was never imported.
  auto cfg = write_file(root.path(), "h.toml",
                        fmt::format("[host]\ndata_dir = \"n\"\n[peers]\nallow = [\"{}\"]\n",
                                    stranger.hex()));
  auto res = run_command({aicon_binary(), "host", "--config", cfg.string()}, 20s);
  BOOST_TEST(res.exit_code == 2, res.output);
  BOOST_TEST(res.output.find(stranger.hex()) != std::string::npos, res.output);
  BOOST_TEST(res.output.find("aicon trust") != std::string::npos, res.output);
  // A key readable by others.
  ::chmod((n.dir / "node.key").c_str(), 0644);
  auto cfg2 = write_file(root.path(), "h2.toml", "[host]\ndata_dir = \"n\"\n");
  auto res2 = run_command({aicon_binary(), "host", "--config", cfg2.string()}, 20s);
  BOOST_TEST(res2.exit_code == 2, res2.output);
  BOOST_TEST(res2.output.find("0600") != std::string::npos, res2.output);
  // A config error names file, line and key.
  auto cfg3 = write_file(root.path(), "h3.toml", "[host]\ndata_dir = \"n\"\nport = 7\n");
  auto res3 = run_command({aicon_binary(), "host", "--config", cfg3.string()}, 20s);
  BOOST_TEST(res3.exit_code == 1, res3.output);
  BOOST_TEST(res3.output.find("h3.toml:3: host.port: unknown key") != std::string::npos,
             res3.output);
}

BOOST_AUTO_TEST_SUITE_END()
