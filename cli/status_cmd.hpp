// `aicon status` for operators: what a host runs and sees — roles, peers
// (up or down, site, roles), the round trip to it, its chain tip, the data
// it stores, its counters — as text or as JSON for scripts.
#pragma once

#include <string>

namespace aicon {

struct status_options {
  std::string connect;   ///< host:port
  std::string data_dir;  ///< this client's identity and trusted peers
  bool dev_open = false;
  bool json = false;
};

int status_cmd(const status_options& o);

} // namespace aicon
