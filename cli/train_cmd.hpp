// `aicon train`: a data-parallel training job on the trainer roles of
// running hosts (--connect, repeatable). A connected host running the job
// role runs it (submitted as an unpaid job naming those hosts; it goes on
// if this process stops) and this process follows it; with --local, or
// on an operator's leases (--job), or where no job host is connected or
// the job host refuses this client, it is coordinated from this process.
// Either way: progress per step, the loss curve, held-out accuracy,
// signed work logs.
#pragma once

#include <string>
#include <vector>

#include "actors/job/job.hpp"

namespace aicon {

struct train_cmd_options {
  std::string data_dir;              ///< this client's identity and trusted peers
  std::vector<std::string> connect;  ///< host:port of trainer hosts
  std::vector<std::string> spares;   ///< host:port of stand-by trainer hosts
  bool dev_open = false;
  std::string csv;                   ///< per-step loss curve
  std::string plot;                  ///< the same as an SVG line plot
  std::string checkpoint;            ///< checkpoint file
  std::string dataset;               ///< id or prefix, instead of --data
  std::vector<std::string> data_connect; ///< host:port of data nodes holding it
  std::string job_hex;               ///< the job the trainers' leases are for
  bool local = false;                ///< coordinate here even with a job host connected
  train::job_options job;
};

int train_cmd(train_cmd_options o);

} // namespace aicon
