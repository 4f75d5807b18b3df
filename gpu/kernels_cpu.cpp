#include "gpu/kernels.hpp"

namespace aicon::gpu {

void cpu_scale(float* x, size_t n, float factor) {
  for (size_t i = 0; i < n; ++i)
    x[i] *= factor;
}

} // namespace aicon::gpu
