// `aicon job submit|ls|status|logs|wait|cancel|fetch`: jobs that a job host (the
// `job` role) runs for the researcher, who may go offline once `submit`
// returns. With --budget, `submit` first locks the budget on the chain in
// an escrow whose terms name the job host its agent.
#pragma once

#include <cstdint>
#include <string>

namespace aicon {

struct job_cmd_options {
  std::string connect;    ///< the job host, host:port
  std::string node;       ///< its expected NodeId (optional)
  std::string data_dir;   ///< this client's identity (the payer's key) and trusted peers
  bool dev_open = false;
  // submit
  std::string model = "mlp:64-64-10";
  std::string dataset;    ///< 64 hex digits (a dataset on the data nodes)
  std::string data;       ///< or a file on the trainer hosts (absolute path)
  uint32_t trainers = 1;
  uint64_t steps = 0;
  double epochs = 0;
  uint32_t batch = 32;
  float lr = 0.05f;
  float momentum = 0.9f;
  std::string optimizer = "sgd";
  double holdout = 0.2;
  uint64_t seed = 1;
  std::string transport = "stream"; ///< stream, stream-plain, actor or nccl
  uint64_t budget = 0;
  uint32_t priority = 0;
  bool verify = false;
  uint64_t deadline_s = 6 * 3600; ///< the agent must settle within this
  // status, logs, wait, cancel
  std::string job;        ///< job id (or a prefix of 8+ hex digits)
  bool follow = false;    ///< logs: until the job ends
  double timeout_s = 0;   ///< wait: give up after this (0: never)
  std::string out;        ///< fetch: the checkpoint file to write
  std::string torchscript; ///< fetch: the TorchScript file to write (a job on a model asset)
  std::string ledger;     ///< fetch: host:port of a chain host whose ledger checks the asset
};

int job_submit(const job_cmd_options& o);
int job_ls(const job_cmd_options& o);
int job_status(const job_cmd_options& o);
int job_logs(const job_cmd_options& o);
int job_wait(const job_cmd_options& o);
int job_cancel(const job_cmd_options& o);
/// The trained weights of a done (or cancelled) job, for its payer: checked
/// against the trained-model asset the chain holds, written as an aicon
/// checkpoint (--out) and, for a job on a model asset, as the TorchScript
/// file its job host wrote (--torchscript; for torch:FILE, aicon model
/// export turns the checkpoint into one).
int job_fetch(const job_cmd_options& o);

} // namespace aicon
