#include "runtime/peers_file.hpp"

#include <algorithm>
#include <fstream>
#include <memory>
#include <sstream>

#include <arpa/inet.h>
#include <dirent.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <toml++/toml.h>

#include "runtime/error.hpp"
#include "runtime/identity.hpp"
#include "runtime/tls.hpp"

namespace aicon {

caf::expected<runtime_peers> load_runtime_peers(const std::filesystem::path& data_dir) {
  auto path = data_dir / peers_file_name;
  runtime_peers out;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    return out;
  toml::table root;
  try {
    root = toml::parse_file(path.string());
  } catch (const toml::parse_error& e) {
    return make_error(errc::config_invalid,
                      fmt::format("{}:{}: {}", path.string(), e.source().begin.line,
                                  std::string{e.description()}));
  }
  auto bad = [&](const std::string& key, const std::string& what) {
    return make_error(errc::config_invalid, fmt::format("{}: {}: {}", path.string(), key, what));
  };
  if (auto peers = root["peer"]) {
    auto arr = peers.as_array();
    if (!arr)
      return bad("peer", "expected [[peer]] tables");
    for (size_t i = 0; i < arr->size(); ++i) {
      auto t = arr->get(i)->as_table();
      auto key = fmt::format("peer[{}]", i);
      if (!t)
        return bad(key, "expected a table");
      auto addr = (*t)["address"].value<std::string>();
      auto node = (*t)["node"].value<std::string>();
      if (!addr || !node)
        return bad(key, "needs address and node");
      auto a = net_address::parse(*addr);
      if (!a)
        return bad(key + ".address", describe(a.error()));
      auto n = node_id::from_hex(*node);
      if (!n)
        return bad(key + ".node", describe(n.error()));
      out.added.push_back({*a, *n});
    }
  }
  if (auto removed = root["removed"]["nodes"]) {
    auto arr = removed.as_array();
    if (!arr)
      return bad("removed.nodes", "expected a list of NodeIds");
    for (size_t i = 0; i < arr->size(); ++i) {
      auto text = arr->get(i)->value<std::string>();
      auto n = text ? node_id::from_hex(*text)
                    : caf::expected<node_id>{make_error(errc::invalid_argument, "not a string")};
      if (!n)
        return bad(fmt::format("removed.nodes[{}]", i), describe(n.error()));
      out.removed.push_back(*n);
    }
  }
  return out;
}

caf::error save_runtime_peers(const std::filesystem::path& data_dir, const runtime_peers& p) {
  std::string text = "# Peers added and removed with `aicon peer`; the host reloads this file "
                     "when it changes.\n";
  for (auto& e : p.added)
    text += fmt::format("\n[[peer]]\naddress = \"{}\"\nnode = \"{}\"\n", e.address.to_string(),
                        e.node.hex());
  if (!p.removed.empty()) {
    text += "\n[removed]\nnodes = [\n";
    for (auto& n : p.removed)
      text += fmt::format("  \"{}\",\n", n.hex());
    text += "]\n";
  }
  return write_file_atomic(data_dir / peers_file_name, text, 0644);
}

void add_peer(runtime_peers& p, const peer_entry& e) {
  std::erase_if(p.added, [&](const peer_entry& x) { return x.node == e.node; });
  std::erase(p.removed, e.node);
  p.added.push_back(e);
}

void remove_peer(runtime_peers& p, const node_id& id) {
  std::erase_if(p.added, [&](const peer_entry& x) { return x.node == id; });
  if (std::find(p.removed.begin(), p.removed.end(), id) == p.removed.end())
    p.removed.push_back(id);
}

std::vector<node_id> effective_admitted(const host_config& cfg, const runtime_peers& p) {
  auto out = cfg.admitted();
  for (auto& e : p.added)
    if (std::find(out.begin(), out.end(), e.node) == out.end())
      out.push_back(e.node);
  std::erase_if(out, [&](const node_id& n) {
    return std::find(p.removed.begin(), p.removed.end(), n) != p.removed.end();
  });
  return out;
}

std::vector<peer_entry> effective_connect(const host_config& cfg, const runtime_peers& p) {
  std::vector<peer_entry> out;
  auto removed = [&](const node_id& n) {
    return std::find(p.removed.begin(), p.removed.end(), n) != p.removed.end();
  };
  for (auto& e : cfg.connect)
    if (!removed(e.node))
      out.push_back(e);
  for (auto& e : p.added) {
    std::erase_if(out, [&](const peer_entry& x) { return x.node == e.node; });
    out.push_back(e);
  }
  return out;
}

namespace {

thread_local std::string captured_pem;

int capture_certificate(int, X509_STORE_CTX* store) {
  // Only the leaf (depth 0) matters: aicon certificates are self-signed.
  if (X509_STORE_CTX_get_error_depth(store) == 0 && captured_pem.empty())
    if (auto cert = X509_STORE_CTX_get_current_cert(store)) {
      std::unique_ptr<BIO, decltype(&BIO_free)> bio{BIO_new(BIO_s_mem()), BIO_free};
      if (bio && PEM_write_bio_X509(bio.get(), cert) == 1) {
        char* data = nullptr;
        auto len = BIO_get_mem_data(bio.get(), &data);
        captured_pem.assign(data, static_cast<size_t>(len));
      }
    }
  return 1; // checked below, by NodeId
}

} // namespace

caf::expected<std::string> fetch_peer_certificate(const net_address& address,
                                                  const node_id& expected,
                                                  std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(address.host.c_str(), std::to_string(address.port).c_str(), &hints, &res) != 0
      || !res)
    return make_error(errc::peer_down, fmt::format("cannot resolve {}", address.to_string()));
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> guard{res, freeaddrinfo};
  int fd = ::socket(res->ai_family, SOCK_STREAM, 0);
  if (fd < 0)
    return make_error(errc::io_error, "socket() failed");
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
    ::close(fd);
    return make_error(errc::peer_down, fmt::format("cannot connect to {}", address.to_string()));
  }
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx{SSL_CTX_new(TLS_client_method()),
                                                        SSL_CTX_free};
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl{ctx ? SSL_new(ctx.get()) : nullptr, SSL_free};
  if (!ssl) {
    ::close(fd);
    return make_error(errc::internal, "cannot create an OpenSSL session");
  }
  SSL_set_verify(ssl.get(), SSL_VERIFY_PEER, capture_certificate);
  SSL_set_fd(ssl.get(), fd);
  captured_pem.clear();
  SSL_connect(ssl.get()); // fails once the peer sees we have no certificate
  ::close(fd);
  std::string pem = std::move(captured_pem);
  captured_pem.clear();
  if (pem.empty())
    return make_error(errc::peer_down,
                      fmt::format("{} presented no certificate (not an aicon host?)",
                                  address.to_string()));
  auto id = verify_node_certificate(pem);
  if (!id)
    return make_error(code_of(id.error()), fmt::format("the certificate {} presented: {}",
                                                       address.to_string(),
                                                       describe(id.error())));
  if (*id != expected)
    return make_error(errc::forbidden,
                      fmt::format("{} is {}, not {}", address.to_string(), id->hex(),
                                  expected.hex()));
  return pem;
}

size_t shutdown_connections_to(const std::string& ip, uint16_t port) {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d)
    return 0;
  while (auto* e = readdir(d)) {
    int fd = std::atoi(e->d_name);
    if (fd <= 2)
      continue;
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
      continue;
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      continue;
    char host[INET6_ADDRSTRLEN] = {};
    uint16_t p = 0;
    if (addr.ss_family == AF_INET) {
      auto* a = reinterpret_cast<sockaddr_in*>(&addr);
      inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
      p = ntohs(a->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&addr);
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
      p = ntohs(a->sin6_port);
    } else {
      continue;
    }
    if (p == port && ip == host && ::shutdown(fd, SHUT_RDWR) == 0)
      ++n;
  }
  closedir(d);
  return n;
}

} // namespace aicon
