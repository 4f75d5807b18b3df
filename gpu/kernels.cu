#include "gpu/kernels.hpp"

#include <algorithm>

#include <cuda_runtime.h>

namespace aicon::gpu {

namespace {

__global__ void scale_kernel(float* x, size_t n, float factor) {
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (; i < n; i += stride)
    x[i] = __fmul_rn(x[i], factor); // no contraction: matches cpu_scale bit for bit
}

std::string check(cudaError_t err, const char* what) {
  if (err == cudaSuccess)
    return {};
  return std::string{what} + ": " + cudaGetErrorString(err);
}

} // namespace

std::string gpu_scale(float* x, size_t n, float factor) {
  int count = 0;
  if (auto err = check(cudaGetDeviceCount(&count), "cudaGetDeviceCount"); !err.empty())
    return err;
  if (count == 0)
    return "no CUDA device";
  float* dev = nullptr;
  auto bytes = n * sizeof(float);
  if (auto err = check(cudaMalloc(&dev, bytes), "cudaMalloc"); !err.empty())
    return err;
  std::string err = check(cudaMemcpy(dev, x, bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
  if (err.empty()) {
    int threads = 256;
    int blocks = static_cast<int>(std::min<size_t>((n + threads - 1) / threads, 4096));
    scale_kernel<<<blocks > 0 ? blocks : 1, threads>>>(dev, n, factor);
    err = check(cudaGetLastError(), "scale_kernel");
  }
  if (err.empty())
    err = check(cudaMemcpy(x, dev, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy");
  cudaFree(dev);
  return err;
}

} // namespace aicon::gpu
