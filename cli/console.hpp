// The researcher's console: a Lua 5.4 REPL (`aicon console`, libedit line
// editing and history, multi-line input) and scripts (`aicon run FILE`) over
// one API: nodes(), dataset.put/list/preview, train{...} returning a job
// object (:wait, :status, :cancel, :metrics), chain.tip/block,
// wallet.balance, asset.owner, help(). Wrong arguments raise a Lua error
// naming the argument; a failed remote call raises the remote reason; the
// REPL survives every error.
#pragma once

#include <string>
#include <vector>

namespace aicon {

struct console_options {
  std::string data_dir;              ///< this client's identity and trusted peers
  std::vector<std::string> connect;  ///< host:port of the hosts to use
  bool dev_open = false;
  std::string script;                ///< aicon run: the file
  std::vector<std::string> args;     ///< aicon run: after --
};

int console_cmd(const console_options& o);
int run_cmd(const console_options& o);

} // namespace aicon
