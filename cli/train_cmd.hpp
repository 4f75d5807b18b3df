// `aicon train`: submits a data-parallel training job to the trainer roles
// of running hosts (--connect, repeatable) and coordinates it from this
// process: progress per step, held-out accuracy, signed work logs.
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
  train::job_options job;
};

int train_cmd(train_cmd_options o);

} // namespace aicon
