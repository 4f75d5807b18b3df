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

} // namespace aicon::gpu
