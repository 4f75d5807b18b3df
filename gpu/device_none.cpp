#include "gpu/device.hpp"
#include "gpu/kernels.hpp"
#include "gpu/nccl_reducer.hpp"

namespace aicon::gpu {

device_report query_devices() {
  device_report report;
  report.status = "this binary was built without CUDA/NCCL (nvcc not found)";
  return report;
}

std::string gpu_scale(float*, size_t, float) {
  return "built without CUDA";
}

std::string gpu_sgd_momentum(float*, float*, const float*, size_t, float, float, float) {
  return "built without CUDA";
}

struct nccl_reducer::impl {};

std::string nccl_unique_id(std::vector<uint8_t>&) {
  return "built without CUDA/NCCL";
}

std::unique_ptr<nccl_reducer> nccl_reducer::create(const std::vector<uint8_t>&, int, int, int,
                                                   std::string& error) {
  error = "built without CUDA/NCCL";
  return nullptr;
}

nccl_reducer::~nccl_reducer() = default;

std::string nccl_reducer::allreduce(std::span<float>, reduce_op) {
  return "built without CUDA/NCCL";
}

std::string nccl_reducer::allreduce_device(float*, size_t, reduce_op) {
  return "built without CUDA/NCCL";
}

} // namespace aicon::gpu
