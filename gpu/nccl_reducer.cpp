#include "gpu/nccl_reducer.hpp"

#include <cstring>

#include <cuda_runtime_api.h>
#include <nccl.h>

namespace aicon::gpu {

namespace {

std::string cuda_error(cudaError_t err, const char* what) {
  return err == cudaSuccess ? std::string{} : std::string{what} + ": " + cudaGetErrorString(err);
}

std::string nccl_error(ncclResult_t r, const char* what) {
  return r == ncclSuccess ? std::string{} : std::string{what} + ": " + ncclGetErrorString(r);
}

} // namespace

struct nccl_reducer::impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  int device = 0;
  float* buffer = nullptr; ///< staging for host buffers
  size_t capacity = 0;
};

std::string nccl_unique_id(std::vector<uint8_t>& out) {
  int count = 0;
  if (auto err = cuda_error(cudaGetDeviceCount(&count), "cudaGetDeviceCount"); !err.empty())
    return err;
  if (count == 0)
    return "no CUDA device";
  ncclUniqueId id;
  if (auto err = nccl_error(ncclGetUniqueId(&id), "ncclGetUniqueId"); !err.empty())
    return err;
  out.assign(reinterpret_cast<const uint8_t*>(id.internal),
             reinterpret_cast<const uint8_t*>(id.internal) + sizeof(id.internal));
  return {};
}

std::unique_ptr<nccl_reducer> nccl_reducer::create(const std::vector<uint8_t>& unique_id,
                                                   int rank, int size, int device,
                                                   std::string& error) {
  ncclUniqueId id;
  if (unique_id.size() != sizeof(id.internal)) {
    error = "NCCL unique id must be " + std::to_string(sizeof(id.internal)) + " bytes, not "
            + std::to_string(unique_id.size());
    return nullptr;
  }
  if (rank < 0 || size < 1 || rank >= size) {
    error = "NCCL rank " + std::to_string(rank) + " is not in 0.." + std::to_string(size - 1);
    return nullptr;
  }
  std::memcpy(id.internal, unique_id.data(), sizeof(id.internal));
  std::unique_ptr<nccl_reducer> r{new nccl_reducer};
  r->impl_ = std::make_unique<impl>();
  r->rank_ = rank;
  r->size_ = size;
  r->impl_->device = device;
  if ((error = cuda_error(cudaSetDevice(device), "cudaSetDevice")).empty()
      && (error = cuda_error(cudaStreamCreateWithFlags(&r->impl_->stream, cudaStreamNonBlocking),
                             "cudaStreamCreate"))
           .empty()
      && (error = nccl_error(ncclCommInitRank(&r->impl_->comm, size, id, rank),
                             "ncclCommInitRank"))
           .empty())
    return r;
  return nullptr;
}

nccl_reducer::~nccl_reducer() {
  if (!impl_)
    return;
  cudaSetDevice(impl_->device);
  if (impl_->comm)
    ncclCommDestroy(impl_->comm);
  if (impl_->buffer)
    cudaFree(impl_->buffer);
  if (impl_->stream)
    cudaStreamDestroy(impl_->stream);
}

std::string nccl_reducer::allreduce_device(float* data, size_t n, reduce_op op) {
  if (n == 0)
    return {};
  cudaSetDevice(impl_->device);
  auto nop = op == reduce_op::average ? ncclAvg : ncclSum;
  if (auto err = nccl_error(ncclAllReduce(data, data, n, ncclFloat32, nop, impl_->comm,
                                          impl_->stream),
                            "ncclAllReduce");
      !err.empty())
    return err;
  return cuda_error(cudaStreamSynchronize(impl_->stream), "cudaStreamSynchronize");
}

std::string nccl_reducer::allreduce(std::span<float> data, reduce_op op) {
  if (data.empty())
    return {};
  cudaSetDevice(impl_->device);
  if (impl_->capacity < data.size()) {
    if (impl_->buffer)
      cudaFree(impl_->buffer);
    impl_->buffer = nullptr;
    impl_->capacity = 0;
    if (auto err = cuda_error(cudaMalloc(&impl_->buffer, data.size_bytes()), "cudaMalloc");
        !err.empty())
      return err;
    impl_->capacity = data.size();
  }
  if (auto err = cuda_error(cudaMemcpyAsync(impl_->buffer, data.data(), data.size_bytes(),
                                            cudaMemcpyHostToDevice, impl_->stream),
                            "cudaMemcpy to device");
      !err.empty())
    return err;
  if (auto err = allreduce_device(impl_->buffer, data.size(), op); !err.empty())
    return err;
  if (auto err = cuda_error(cudaMemcpyAsync(data.data(), impl_->buffer, data.size_bytes(),
                                            cudaMemcpyDeviceToHost, impl_->stream),
                            "cudaMemcpy to host");
      !err.empty())
    return err;
  return cuda_error(cudaStreamSynchronize(impl_->stream), "cudaStreamSynchronize");
}

} // namespace aicon::gpu
