#include "runtime/system.hpp"

#include <unistd.h>

#include <string_view>

#include <algorithm>
#include <csignal>
#include <filesystem>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "runtime/envelope.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"
#include "runtime/openssl_fix.hpp"

namespace aicon {

void configure_system(caf::actor_system_config& cfg, const system_options& opts) {
  using namespace std::chrono;
  if (!openssl_fix_installed())
    log_warning("OpenSSL error-queue fix not active: a peer's disconnect may drop other links");
  // OpenSSL writes with write(): a peer that vanished must not kill the
  // process with SIGPIPE (hosts, clients, the demo and tests alike).
  std::signal(SIGPIPE, SIG_IGN);
  cfg.load<caf::io::middleman>();
  cfg.load<caf::openssl::manager>();
  cfg.add_message_type<envelope>("aicon::envelope");
  cfg.add_error_category(error_category, render_error);
  cfg.set("middleman.heartbeat-interval",
          caf::timespan{milliseconds(opts.lim.heartbeat_interval_ms)});
  cfg.set("middleman.connection-timeout",
          caf::timespan{milliseconds(opts.lim.connection_timeout_ms)});
  cfg.set("middleman.enable-automatic-connections", false);
  if (opts.threads > 0)
    cfg.set("scheduler.max-threads", opts.threads);
  if (opts.tls) {
    cfg.openssl_certificate = opts.tls->certificate.string();
    cfg.openssl_key = opts.tls->private_key.string();
    cfg.openssl_cafile = opts.tls->cafile.string();
  }
  set_current_reader_limits(reader_limits_from(opts.lim));
}

void harden_system(caf::actor_system& sys) {
  sys.registry().erase(caf::atom("SpawnServ"));
  sys.registry().erase(caf::atom("ConfigServ"));
}

std::vector<std::string> child_host_environment() {
  std::vector<std::string> out;
  for (char** e = environ; *e; ++e)
    if (std::string_view{*e}.rfind("AICON_PARENT_PID=", 0) != 0)
      out.emplace_back(*e);
  out.push_back("AICON_PARENT_PID=" + std::to_string(::getpid()));
  return out;
}

caf::error check_data_file(const std::vector<std::filesystem::path>& dirs,
                           const std::string& file) {
  std::error_code ec;
  auto real = std::filesystem::weakly_canonical(file, ec);
  if (!ec)
    for (auto& d : dirs) {
      auto dir = std::filesystem::weakly_canonical(d, ec);
      if (ec)
        continue;
      auto [end, _] = std::mismatch(dir.begin(), dir.end(), real.begin(), real.end());
      if (end == dir.end())
        return caf::none;
    }
  std::string allowed;
  for (auto& d : dirs)
    allowed += (allowed.empty() ? "" : ", ") + d.string();
  return make_error(errc::forbidden,
                    "TrainConfig.dataFile '" + file + "': this host reads local data files only "
                      + (dirs.empty() ? std::string{"from none ([host] data_files is empty: "
                                                    "datasets come from data nodes)"}
                                      : "under " + allowed + " ([host] data_files)"));
}

} // namespace aicon
