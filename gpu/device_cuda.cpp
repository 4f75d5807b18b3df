#include "gpu/device.hpp"

#include <cuda_runtime_api.h>
#include <nccl.h>

namespace aicon::gpu {

device_report query_devices() {
  device_report report;
  report.cuda_built = true;
  ncclGetVersion(&report.nccl_version);
  int count = 0;
  auto err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    report.status = std::string{"no usable GPU: "} + cudaGetErrorName(err) + " ("
                    + cudaGetErrorString(err) + ")";
    return report;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess)
      continue;
    report.devices.push_back(
      device_info{i, prop.name, prop.totalGlobalMem, prop.major, prop.minor});
  }
  report.status = report.devices.empty() ? "no CUDA device" : "ok";
  return report;
}

} // namespace aicon::gpu
