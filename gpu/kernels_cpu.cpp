#include "gpu/kernels.hpp"

namespace aicon::gpu {

void cpu_scale(float* x, size_t n, float factor) {
  for (size_t i = 0; i < n; ++i)
    x[i] *= factor;
}

void cpu_sgd_momentum(float* w, float* v, const float* g, size_t n, float lr, float momentum,
                      float weight_decay) {
  for (size_t i = 0; i < n; ++i) {
    float grad = g[i] + weight_decay * w[i];
    v[i] = momentum * v[i] + grad;
    w[i] -= lr * v[i];
  }
}

} // namespace aicon::gpu
