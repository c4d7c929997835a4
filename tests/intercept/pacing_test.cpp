// Compute pacing of libvgpu-cuda.so on the fake CUDA driver, whose simulated
// device runs kernels one at a time; processes given the same FAKE_CUDA_DEVICE
// share it. Each run is a few seconds of simulated load; shares are checked
// within +-5 points.
#include <apt/vgpu/runtime/accounting_region.hpp>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/mman.h>
#include <unistd.h>

namespace {

std::string unique(const std::string& what) { return what + "-" + std::to_string(::getpid()); }

std::string command(const std::string& env, const std::string& out, int kernel_us) {
  return "env LD_LIBRARY_PATH=" + std::string(FAKE_CUDA_DIR) + " LD_PRELOAD=" + VGPU_CUDA_PRELOAD + " " + env + " " +
         CUDA_APP_DLOPEN_PATH + " getproc busy:2000:" + std::to_string(kernel_us) + " >" + out + " 2>&1";
}

double share_in(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  const auto at = text.find("share=");
  EXPECT_NE(at, std::string::npos) << text;
  return at == std::string::npos ? -1 : std::stod(text.substr(at + 6));
}

// Runs the commands at once and returns each one's GPU share.
std::vector<double> run_together(const std::vector<std::string>& envs, int kernel_us = 1000) {
  std::string script;
  std::vector<std::string> outs;
  for (std::size_t i = 0; i < envs.size(); ++i) {
    outs.push_back((std::filesystem::temp_directory_path() / unique("vgpu-pacing-" + std::to_string(i))).string());
    script += command(envs[i], outs.back(), kernel_us) + " & ";
  }
  script += "wait";
  EXPECT_EQ(std::system(script.c_str()), 0);
  std::vector<double> shares;
  for (const auto& o : outs) {
    shares.push_back(share_in(o));
    std::filesystem::remove(o);
  }
  return shares;
}

struct Cleanup {
  std::vector<std::string> names;
  ~Cleanup() {
    for (const auto& n : names) ::shm_unlink(n.c_str());
  }
};

TEST(Pacing, UnconfiguredRunsAtFullSpeed) {
  const auto s = run_together({"FAKE_CUDA_DEVICE=" + unique("full")});
  EXPECT_GT(s[0], 0.9);
  ::shm_unlink(("/fake-cuda-" + unique("full")).c_str());
}

TEST(Pacing, ASliceAloneGetsItsShare) {
  const auto s = run_together({"FAKE_CUDA_DEVICE=" + unique("alone") + " VGPU_COMPUTE_SHARE=0.25"});
  EXPECT_NEAR(s[0], 0.25, 0.05);
  ::shm_unlink(("/fake-cuda-" + unique("alone")).c_str());
}

// Runs two slices with the given shares on one simulated device at once and
// returns the share of wall time each one's kernels ran.
std::vector<double> split_between_two_slices(const std::string& tag, const std::string& share_a,
                                             const std::string& share_b, int kernel_us) {
  const std::string device = unique(tag);
  using apt::vgpu::runtime::AccountingRegion;
  using apt::vgpu::runtime::RegionKind;
  const AccountingRegion a = AccountingRegion::create(RegionKind::slice, "/vgpu-pacing", 0);
  const AccountingRegion b = AccountingRegion::create(RegionKind::slice, "/vgpu-pacing", 0);
  const std::string& slice_a = a.name();
  const std::string& slice_b = b.name();
  Cleanup cleanup{{"/fake-cuda-" + device}};
  return run_together({"FAKE_CUDA_DEVICE=" + device + " VGPU_SHM_NAME=" + slice_a + " VGPU_COMPUTE_SHARE=" + share_a,
                       "FAKE_CUDA_DEVICE=" + device + " VGPU_SHM_NAME=" + slice_b + " VGPU_COMPUTE_SHARE=" + share_b},
                      kernel_us);
}

TEST(Pacing, TwoSlicesSplitTheGpuByTheirShares) {
  const auto s = split_between_two_slices("pair", "0.25", "0.75", /*kernel_us=*/1000);
  EXPECT_NEAR(s[0], 0.25, 0.05);
  EXPECT_NEAR(s[1], 0.75, 0.05);
}

// Short kernels (under 100 us) are collected in batches, one query per batch;
// the split must hold all the same. Shares stay well under what the host can
// feed with such kernels on a small machine (about 0.85 alone).
TEST(Pacing, TwoSlicesOfShortKernelsSplitTheGpuByTheirShares) {
  const auto s = split_between_two_slices("short", "0.2", "0.5", /*kernel_us=*/80);
  EXPECT_NEAR(s[0], 0.2, 0.05);
  EXPECT_NEAR(s[1], 0.5, 0.05);
}

TEST(Pacing, BurstUsesIdleTimeButLeavesOthersTheirShare) {
  const std::string device = unique("burst");
  using apt::vgpu::runtime::AccountingRegion;
  using apt::vgpu::runtime::RegionKind;
  const AccountingRegion gpu_region = AccountingRegion::create(RegionKind::gpu, "/vgpu-gpu-test", 0);
  const AccountingRegion c = AccountingRegion::create(RegionKind::slice, "/vgpu-pacing", 0);
  const AccountingRegion d = AccountingRegion::create(RegionKind::slice, "/vgpu-pacing", 0);
  const std::string gpu = "GPU-" + unique("burst") + " VGPU_GPU_SHM_NAME=" + gpu_region.name();
  Cleanup cleanup{{"/fake-cuda-" + device}};
  // Alone, a bursting 0.25 slice takes the whole idle GPU.
  auto s = run_together({"FAKE_CUDA_DEVICE=" + device + " VGPU_GPU_UUID=" + gpu + " VGPU_SHM_NAME=" + c.name() +
                         " VGPU_COMPUTE_SHARE=0.25 VGPU_BURST=1"});
  EXPECT_GT(s[0], 0.85);
  // Beside a 0.5 slice that runs at its cap, it takes the other half, not the 0.5 slice's share.
  s = run_together({
      "FAKE_CUDA_DEVICE=" + device + " VGPU_GPU_UUID=" + gpu + " VGPU_SHM_NAME=" + c.name() +
          " VGPU_COMPUTE_SHARE=0.25 VGPU_BURST=1",
      "FAKE_CUDA_DEVICE=" + device + " VGPU_GPU_UUID=" + gpu + " VGPU_SHM_NAME=" + d.name() +
          " VGPU_COMPUTE_SHARE=0.5",
  });
  EXPECT_GT(s[0], 0.40);
  EXPECT_NEAR(s[1], 0.5, 0.05);
}

}  // namespace
