#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/device/backend_factory.hpp>

#include "support/fakes.hpp"

#include <cstdlib>

namespace apt::vgpu::device {
namespace {

TEST(BackendFactory, ParsesKinds) {
  EXPECT_EQ(parse_backend_kind("auto"), BackendKind::automatic);
  EXPECT_EQ(parse_backend_kind("nvml"), BackendKind::nvml);
  EXPECT_EQ(parse_backend_kind("rocm"), BackendKind::rocm);
  EXPECT_EQ(parse_backend_kind("sim"), BackendKind::sim);
  try {
    (void)parse_backend_kind("cuda");
    FAIL();
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("auto, nvml, rocm, sim"), std::string::npos);
  }
}

TEST(BackendFactory, AutoPrefersNvmlWhenItWorks) {
  testing::configure_nvml(testing::kTwoNvidiaGpus);
  ::setenv("VGPU_NVML_LIBRARY", FAKE_NVML_PATH, 1);
  auto backend = open_backend(BackendKind::automatic);
  ::unsetenv("VGPU_NVML_LIBRARY");
  EXPECT_EQ(backend->name(), "nvml");
  EXPECT_EQ(backend->gpu_count(), 2U);
}

TEST(BackendFactory, AutoFallsBackToTheSimulatedNode) {
  ::setenv("VGPU_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
  SimConfig shape;
  shape.gpu_count = 3;
  auto backend = open_backend(BackendKind::automatic, shape);
  ::unsetenv("VGPU_NVML_LIBRARY");
  EXPECT_EQ(backend->name(), "sim");
  EXPECT_EQ(backend->gpu_count(), 3U);
}

TEST(BackendFactory, ExplicitBackendThatCannotOpenIsAnError) {
  ::setenv("VGPU_NVML_LIBRARY", "/nonexistent/libnvidia-ml.so.1", 1);
  EXPECT_THROW((void)open_backend(BackendKind::nvml), DeviceError);
  ::unsetenv("VGPU_NVML_LIBRARY");
  ::setenv("VGPU_ROCM_SMI_LIBRARY", "/nonexistent/librocm_smi64.so", 1);
  EXPECT_THROW((void)open_backend(BackendKind::rocm), DeviceError);
  ::unsetenv("VGPU_ROCM_SMI_LIBRARY");
}

}  // namespace
}  // namespace apt::vgpu::device
