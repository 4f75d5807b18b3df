// The table between aicon and its libtorch plug-in (libaicon_torch.so, built
// from torch_plugin.cpp, the only file that includes libtorch). aicon opens
// the plug-in with dlopen the first time a torch model is loaded, so a host
// that never trains one never maps libtorch (about 150 MB and 0.5 s per
// process start). Plain C types only: the two sides share no C++ objects.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {

/// Errors: a message written to `err` (at most `err_len` bytes, NUL
/// terminated) and a code: 1 not found, 2 invalid argument, 3 i/o error.
struct aicon_torch_api {
  uint32_t version; ///< aicon_torch_api_version
  void* (*load)(const char* path, uint64_t file_bytes_max, uint64_t params_max, int* code,
                char* err, size_t err_len);
  void (*release)(void* module);
  uint32_t (*features)(void* module);
  uint32_t (*classes)(void* module);
  size_t (*param_count)(void* module);
  void (*initial_params)(void* module, float* out);
  /// The summed loss: cross-entropy, or for a regression model (classes
  /// 1) the squared error against y's float32 targets (their bits). NaN
  /// with the reason in `err` when forward or backward throws.
  double (*accumulate_gradient)(void* module, const float* params, const float* x,
                                const int32_t* y, size_t rows, float scale, float* grad, char* err,
                                size_t err_len);
  void (*predict)(void* module, const float* params, const float* x, size_t rows, int32_t* out);
  int (*save)(void* module, const float* params, const char* path, char* err, size_t err_len);
  double (*bare_samples_per_s)(const char* path, const float* x, const int32_t* y, size_t rows,
                               uint32_t batch, uint64_t steps, float lr, int* code, char* err,
                               size_t err_len);
  void (*environment)(void* module, char* out, size_t out_len);
  /// The parameters' share of the flat state (param_count adds the buffers).
  size_t (*trainable_count)(void* module);
  /// A regression model's value (its one output column, eval mode) per row.
  void (*predict_values)(void* module, const float* params, const float* x, size_t rows,
                         float* out);
};

/// The plug-in's one symbol.
const aicon_torch_api* aicon_torch_api_v1();
}

inline constexpr uint32_t aicon_torch_api_version = 3;
