// `aicon peer add|rm|ls`: a host's peers at run time, kept in
// DATA_DIR/peers.toml (runtime/peers_file.hpp). A running host reloads the
// file within a second: it admits and dials an added peer, and drops a
// removed one, closing its link at once.
#pragma once

#include <string>

namespace aicon {

struct peer_options {
  std::string data_dir = "aicon-data"; ///< the host's data directory
  std::string config;                  ///< or its host.toml (data_dir and configured peers from it)
  std::string address;                 ///< add: host:port
  std::string node;                    ///< add, rm: NodeId
  std::string cert;                    ///< add: the peer's node.crt (else fetched from it)
  std::string connect;                 ///< ls: the running host, for up/down and round trips
};

int peer_add_cmd(const peer_options& o);
int peer_rm_cmd(const peer_options& o);
int peer_ls_cmd(const peer_options& o);

} // namespace aicon
