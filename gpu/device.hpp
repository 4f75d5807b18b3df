// GPU discovery. Depends on neither CAF nor Cap'n Proto. Safe to call on a
// machine without a GPU or driver: it reports none, it never fails hard.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace aicon::gpu {

struct device_info {
  int index = 0;
  std::string name;
  size_t memory_bytes = 0;
  int cc_major = 0; ///< compute capability
  int cc_minor = 0;
};

struct device_report {
  bool cuda_built = false;   ///< this binary was built with CUDA and NCCL
  std::string status;        ///< "ok" or why no GPU is usable
  int nccl_version = 0;      ///< e.g. 22809 for 2.28.9; 0 when not built
  std::vector<device_info> devices;
};

/// Queries the CUDA runtime. `cudaErrorInsufficientDriver` and
/// `cudaErrorNoDevice` are "no GPU", reported in `status`.
device_report query_devices();

} // namespace aicon::gpu
