#include <boost/test/unit_test.hpp>

#include <vector>

#include "gpu/device.hpp"
#include "gpu/kernels.hpp"

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

BOOST_AUTO_TEST_SUITE_END()
