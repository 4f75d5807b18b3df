#include <boost/test/unit_test.hpp>

#include <vector>

#include "gpu/device.hpp"
#include "gpu/kernels.hpp"
#include "gpu/nccl_reducer.hpp"

using namespace aicon;

BOOST_AUTO_TEST_SUITE(gpu)

BOOST_AUTO_TEST_CASE(query_never_fails_hard) {
  auto report = aicon::gpu::query_devices();
  BOOST_TEST(!report.status.empty());
  if (report.cuda_built)
    BOOST_TEST(report.nccl_version > 0);
}

BOOST_AUTO_TEST_CASE(scale_kernel_matches_cpu_reference) {
  auto report = aicon::gpu::query_devices();
  if (report.devices.empty()) {
    // ctest's SKIP_REGULAR_EXPRESSION turns this line into "skipped".
    BOOST_TEST_MESSAGE("GPU test skipped: " << report.status);
    return;
  }
  std::vector<float> cpu(100003), dev;
  for (size_t i = 0; i < cpu.size(); ++i)
    cpu[i] = static_cast<float>(i) * 0.37f - 1000.0f;
  dev = cpu;
  aicon::gpu::cpu_scale(cpu.data(), cpu.size(), 1.0f / 3.0f);
  auto err = aicon::gpu::gpu_scale(dev.data(), dev.size(), 1.0f / 3.0f);
  BOOST_REQUIRE_MESSAGE(err.empty(), err);
  size_t wrong = 0;
  for (size_t i = 0; i < cpu.size(); ++i)
    wrong += cpu[i] != dev[i] ? 1 : 0;
  BOOST_TEST(wrong == 0u);
}

BOOST_AUTO_TEST_CASE(sgd_momentum_kernel_matches_cpu_reference) {
  auto report = aicon::gpu::query_devices();
  if (report.devices.empty()) {
    BOOST_TEST_MESSAGE("GPU test skipped: " << report.status);
    return;
  }
  const size_t n = 65537;
  std::vector<float> w(n), v(n), g(n);
  for (size_t i = 0; i < n; ++i) {
    w[i] = static_cast<float>(i % 97) * 0.013f - 0.6f;
    v[i] = static_cast<float>(i % 13) * -0.002f;
    g[i] = static_cast<float>(i % 31) * 0.0071f - 0.1f;
  }
  auto w_gpu = w, v_gpu = v;
  for (int step = 0; step < 3; ++step) {
    aicon::gpu::cpu_sgd_momentum(w.data(), v.data(), g.data(), n, 0.05f, 0.9f, 1e-4f);
    auto err = aicon::gpu::gpu_sgd_momentum(w_gpu.data(), v_gpu.data(), g.data(), n, 0.05f, 0.9f,
                                            1e-4f);
    BOOST_REQUIRE_MESSAGE(err.empty(), err);
  }
  BOOST_TEST((w == w_gpu));
  BOOST_TEST((v == v_gpu));
}

BOOST_AUTO_TEST_CASE(nccl_reducer_on_one_rank) {
  auto report = aicon::gpu::query_devices();
  if (report.devices.empty()) {
    BOOST_TEST_MESSAGE("GPU test skipped: " << report.status);
    return;
  }
  std::vector<uint8_t> id;
  auto err = aicon::gpu::nccl_unique_id(id);
  BOOST_REQUIRE_MESSAGE(err.empty(), err);
  auto red = aicon::gpu::nccl_reducer::create(id, 0, 1, 0, err);
  BOOST_REQUIRE_MESSAGE(red, err);
  std::vector<float> x(1000);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(i);
  auto want = x;
  err = red->allreduce(x, aicon::gpu::reduce_op::sum);
  BOOST_REQUIRE_MESSAGE(err.empty(), err);
  BOOST_TEST((x == want));
  // A bad id is refused by name.
  std::vector<uint8_t> short_id(5);
  BOOST_TEST(!aicon::gpu::nccl_reducer::create(short_id, 0, 1, 0, err));
  BOOST_TEST(err.find("unique id") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
