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

__global__ void sgd_momentum_kernel(float* w, float* v, const float* g, size_t n, float lr,
                                    float momentum, float wd) {
  size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  for (; i < n; i += stride) {
    float grad = __fadd_rn(g[i], __fmul_rn(wd, w[i]));
    float vel = __fadd_rn(__fmul_rn(momentum, v[i]), grad);
    v[i] = vel;
    w[i] = __fsub_rn(w[i], __fmul_rn(lr, vel));
  }
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

std::string gpu_sgd_momentum(float* w, float* v, const float* g, size_t n, float lr,
                             float momentum, float weight_decay) {
  int count = 0;
  if (auto err = check(cudaGetDeviceCount(&count), "cudaGetDeviceCount"); !err.empty())
    return err;
  if (count == 0)
    return "no CUDA device";
  float* dev = nullptr;
  auto bytes = n * sizeof(float);
  if (auto err = check(cudaMalloc(&dev, 3 * bytes + 1), "cudaMalloc"); !err.empty())
    return err;
  float *dw = dev, *dv = dev + n, *dg = dev + 2 * n;
  std::string err = check(cudaMemcpy(dw, w, bytes, cudaMemcpyHostToDevice), "cudaMemcpy w");
  if (err.empty())
    err = check(cudaMemcpy(dv, v, bytes, cudaMemcpyHostToDevice), "cudaMemcpy v");
  if (err.empty())
    err = check(cudaMemcpy(dg, g, bytes, cudaMemcpyHostToDevice), "cudaMemcpy g");
  if (err.empty()) {
    int threads = 256;
    int blocks = static_cast<int>(std::min<size_t>((n + threads - 1) / threads, 4096));
    sgd_momentum_kernel<<<blocks > 0 ? blocks : 1, threads>>>(dw, dv, dg, n, lr, momentum,
                                                              weight_decay);
    err = check(cudaGetLastError(), "sgd_momentum_kernel");
  }
  if (err.empty())
    err = check(cudaMemcpy(w, dw, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy w back");
  if (err.empty())
    err = check(cudaMemcpy(v, dv, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy v back");
  cudaFree(dev);
  return err;
}

} // namespace aicon::gpu
