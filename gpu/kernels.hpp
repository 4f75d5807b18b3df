// What trainers do on device, with the CPU reference the GPU tests compare
// against. Depends on neither CAF nor Cap'n Proto. C++17 so nvcc compiles it.
#pragma once

#include <cstddef>
#include <string>

namespace aicon::gpu {

/// x[i] *= factor (e.g. averaging a summed gradient by 1/N).
void cpu_scale(float* x, size_t n, float factor);

/// The same on the GPU: copies `x` to the device, runs the kernel, copies
/// back. Returns an empty string on success, else the CUDA error (including
/// "no GPU").
std::string gpu_scale(float* x, size_t n, float factor);

/// Fused SGD with momentum and L2 weight decay, the trainer's update:
/// v = momentum v + (g + wd w); w -= lr v. Every multiply and add is
/// rounded on its own (no FMA), so the GPU kernel matches this bit for bit.
void cpu_sgd_momentum(float* w, float* v, const float* g, size_t n, float lr, float momentum,
                      float weight_decay);

/// The same on the GPU (copies in, kernel, copies out). Empty string on
/// success, else the CUDA error (including "no GPU").
std::string gpu_sgd_momentum(float* w, float* v, const float* g, size_t n, float lr,
                             float momentum, float weight_decay);

} // namespace aicon::gpu
