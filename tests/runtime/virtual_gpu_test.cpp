#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/config/load_profile.hpp>
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/intercept/abi.h>
#include <apt/vgpu/runtime/mps_daemon.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>
#include <apt/vgpu/runtime/vgpu_scope.hpp>

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sys/mman.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace apt::vgpu::runtime {
namespace {

constexpr std::uint64_t kGB = 1'000'000'000ULL;

std::shared_ptr<Node> sim_node(std::uint32_t gpus = 4, LedgerOptions options = {8, 1.0}) {
  device::SimConfig config;
  config.gpu_count = gpus;
  return std::make_shared<Node>(std::make_unique<device::SimBackend>(config), options);
}

VirtualGpuOptions slice(std::uint32_t gpu, std::uint64_t memory, std::optional<double> compute = std::nullopt) {
  VirtualGpuOptions o;
  o.gpu_id = gpu;
  o.memory_limit = memory;
  o.compute_ratio = compute;
  return o;
}

TEST(VirtualGPU, SeedBasicThreeSlicesShareOneGpu) {
  auto node = sim_node();
  VirtualGPU v1(slice(0, 20 * kGB), node);
  VirtualGPU v2(slice(0, 20 * kGB), node);
  VirtualGPU v3(slice(0, 20 * kGB), node);
  EXPECT_EQ(v1.device(), "sim:0");
  EXPECT_EQ(node->ledger().capacity()[0].memory_leased, 60 * kGB);
  EXPECT_NE(v1.name(), v2.name());
  EXPECT_THROW(VirtualGPU(slice(0, 21 * kGB), node), CapacityError);
}

TEST(VirtualGPU, CreateVgpuParsesSizesAndReleasesOnDestruction) {
  auto node = sim_node();
  {
    VirtualGPU v = create_vgpu(1, "20GB", 0.5, {}, node);
    EXPECT_EQ(v.gpu_id(), 1U);
    EXPECT_EQ(v.options().memory_limit, 20 * kGB);
    EXPECT_EQ(v.lease().compute_share, 0.5);
    VirtualGPU copy = v;  // copies share the slice
    EXPECT_EQ(node->ledger().active_slices(), 1U);
  }
  EXPECT_EQ(node->ledger().active_slices(), 0U);
  EXPECT_THROW((void)create_vgpu(0, "20 gigs", 0.5, {}, node), InvalidArgument);
  EXPECT_THROW((void)create_vgpu(0, "20GB", 1.5, {}, node), InvalidArgument);
  EXPECT_THROW((void)create_vgpu(0, "20GB", 0.0, {}, node), InvalidArgument);
  EXPECT_THROW((void)create_vgpu(7, "20GB", 0.5, {}, node), InvalidArgument);
  EXPECT_THROW((void)create_vgpu(0, "0", 0.5, {}, node), InvalidArgument);
  EXPECT_THROW((void)create_vgpu(0, "81GB", 0.5, {}, node), CapacityError);
  EXPECT_EQ(node->ledger().active_slices(), 0U) << "failed creations leak nothing";
}

TEST(VirtualGPU, ScopesNestReenterAndRestore) {
  auto node = sim_node();
  VirtualGPU a(slice(0, kGB), node);
  VirtualGPU b(slice(1, kGB), node);
  EXPECT_FALSE(current_vgpu().has_value());
  {
    VgpuScope sa(a);
    EXPECT_EQ(current_vgpu()->name(), a.name());
    {
      VgpuScope sb(b);
      EXPECT_EQ(current_vgpu()->name(), b.name());
      {
        VgpuScope sa_again(a);
        EXPECT_EQ(current_vgpu()->name(), a.name());
      }
      EXPECT_EQ(current_vgpu()->name(), b.name());
    }
    EXPECT_EQ(current_vgpu()->name(), a.name());
    std::thread other([&] { EXPECT_FALSE(current_vgpu().has_value()) << "current is per thread"; });
    other.join();
  }
  EXPECT_FALSE(current_vgpu().has_value());
}

TEST(VirtualGPU, SimulatedMetricsFollowActiveSlices) {
  auto node = sim_node();
  auto& backend = node->backend();
  VirtualGPU training(slice(0, 60 * kGB, 0.8), node);
  VirtualGPU inference(slice(0, 20 * kGB, 0.2), node);
  EXPECT_EQ(backend.metrics(0).memory_used_bytes, 80 * kGB) << "leased memory shows as used";
  EXPECT_EQ(backend.metrics(0).utilization_percent, 0.0) << "no work entered yet";
  {
    VgpuScope s(training);
    EXPECT_NEAR(*backend.metrics(0).utilization_percent, 80.0, 1.0);
    {
      VgpuScope s2(inference);
      EXPECT_NEAR(*backend.metrics(0).utilization_percent, 100.0, 1.0);
    }
    EXPECT_NEAR(*backend.metrics(0).utilization_percent, 80.0, 1.0);
  }
  EXPECT_EQ(backend.metrics(0).utilization_percent, 0.0);
}

TEST(VirtualGPU, EnvironmentBindsAChildToTheSlice) {
  auto node = sim_node();
  VirtualGpuOptions o = slice(2, 16 * kGB, 0.25);
  o.priority = 7;
  o.burst = true;
  VirtualGPU v(o, node);
  const auto env = v.environment();
  EXPECT_EQ(env.at("CUDA_VISIBLE_DEVICES"), node->backend().gpu(2).uuid);
  EXPECT_EQ(env.at("CUDA_DEVICE_ORDER"), "PCI_BUS_ID");
  EXPECT_EQ(env.at(VGPU_ENV_MEMORY_LIMIT), "16000000000");
  EXPECT_EQ(env.at(VGPU_ENV_COMPUTE_SHARE), "0.25");
  EXPECT_EQ(env.at(VGPU_ENV_PRIORITY), "7");
  EXPECT_EQ(env.at(VGPU_ENV_BURST), "1");
  EXPECT_EQ(env.at(VGPU_ENV_ID), v.name());
  EXPECT_EQ(env.at(VGPU_ENV_PHYSICAL_GPU), "2");
  EXPECT_EQ(env.at(VGPU_ENV_ISOLATION), "none");
  EXPECT_EQ(env.count("LD_PRELOAD"), 0U);
  EXPECT_EQ(env.count("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), 0U);

  VirtualGPU unlimited(VirtualGpuOptions{}, node);
  EXPECT_EQ(unlimited.environment().count(VGPU_ENV_MEMORY_LIMIT), 0U) << "no limit means no variable, not 0";
}

TEST(VirtualGPU, MpsModeSetsClientLimits) {
  auto node = sim_node();
  VirtualGpuOptions o = slice(0, 16ULL << 30U, 0.3);
  o.isolation = config::Isolation::mps;
  const auto env = VirtualGPU(o, node).environment();
  EXPECT_EQ(env.at("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"), "30");
  EXPECT_EQ(env.at("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"), "0=16384M");
  EXPECT_EQ(env.at(VGPU_ENV_ISOLATION), "mps");
}

TEST(VirtualGPU, MpsRunStartsAndStopsTheControlDaemon) {
  auto node = sim_node();
  const auto dir = std::filesystem::temp_directory_path() / ("vgpu-mps-test-" + std::to_string(::getpid()));
  ::setenv("VGPU_MPS_CONTROL", (std::string(VGPU_SOURCE_DIR) + "/tests/fakes/nvidia-cuda-mps-control").c_str(), 1);
  ::setenv("VGPU_RUNTIME_DIR", dir.c_str(), 1);
  VirtualGpuOptions o = slice(1, 8ULL << 30U, 0.3);
  o.isolation = config::Isolation::mps;
  VirtualGPU v(o, node);
  const auto out = dir / "child.txt";
  const int status = v.run({"/bin/sh", "-c",
                            "test -e \"$CUDA_MPS_PIPE_DIRECTORY/control\" && echo \"$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE "
                            "$CUDA_MPS_PINNED_DEVICE_MEM_LIMIT\" > " + out.string()});
  EXPECT_EQ(status, 0) << "the daemon was running while the client ran";
  std::ifstream in(out);
  std::string percent, limit;
  in >> percent >> limit;
  EXPECT_EQ(percent, "30");
  EXPECT_EQ(limit, "0=8192M");
  const auto gpu_dir = MpsDaemon::directory_for(node->backend().gpu(1).uuid);
  EXPECT_FALSE(std::filesystem::exists(gpu_dir / "pipe" / "control")) << "stopped when the last client ended";
  std::ifstream log(gpu_dir / "log" / "fake-control.log");
  std::string line1, line2, word;
  std::getline(log, line1);
  std::getline(log, line2);
  EXPECT_EQ(line1, "start " + node->backend().gpu(1).uuid);
  EXPECT_EQ(line2, "quit");

  ::setenv("VGPU_MPS_CONTROL", "/nonexistent/nvidia-cuda-mps-control", 1);
  try {
    (void)v.run({"true"});
    FAIL();
  } catch (const ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("needs nvidia-cuda-mps-control"), std::string::npos) << e.what();
  }
  ::unsetenv("VGPU_MPS_CONTROL");
  ::unsetenv("VGPU_RUNTIME_DIR");
  std::filesystem::remove_all(dir);
}

TEST(VirtualGPU, InterceptModePreloadsTheLibraryWhenFound) {
  auto node = sim_node();
  const auto lib = std::filesystem::temp_directory_path() / "libvgpu-cuda-test.so";
  std::ofstream(lib) << "not really a library";
  ::setenv(VGPU_ENV_INTERCEPT_LIBRARY, lib.c_str(), 1);
  VirtualGpuOptions o = slice(0, kGB, 0.5);
  o.isolation = config::Isolation::intercept;
  VirtualGPU v(o, node);
  const auto env = v.environment();
  EXPECT_EQ(env.at("LD_PRELOAD").rfind(lib.string(), 0), 0U) << env.at("LD_PRELOAD");
  EXPECT_FALSE(env.at(VGPU_ENV_SHM_NAME).empty());

  ::setenv(VGPU_ENV_INTERCEPT_LIBRARY, "/nonexistent/libvgpu-cuda.so", 1);
  EXPECT_EQ(v.environment().count("LD_PRELOAD"), 0U);
  try {
    (void)v.run({"true"});
    FAIL() << "ran without enforcement although isolation is intercept";
  } catch (const ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find(VGPU_ENV_INTERCEPT_LIBRARY), std::string::npos) << e.what();
  }
  ::unsetenv(VGPU_ENV_INTERCEPT_LIBRARY);
  std::filesystem::remove(lib);
}

TEST(VirtualGPU, RunStartsABoundChildAndReturnsItsStatus) {
  auto node = sim_node();
  VirtualGPU v(slice(1, 8 * kGB, 0.5), node);
  const auto out = std::filesystem::temp_directory_path() / "vgpu-run-test.txt";
  const int status = v.run({"/bin/sh", "-c",
                            "echo \"$CUDA_VISIBLE_DEVICES $VGPU_MEMORY_LIMIT $VGPU_COMPUTE_SHARE\" > " + out.string() +
                                "; exit 7"});
  EXPECT_EQ(status, 7);
  std::ifstream in(out);
  std::string uuid, memory, share;
  in >> uuid >> memory >> share;
  EXPECT_EQ(uuid, node->backend().gpu(1).uuid);
  EXPECT_EQ(memory, "8000000000");
  EXPECT_EQ(share, "0.5");
  std::filesystem::remove(out);

  EXPECT_EQ(v.run({"/bin/sh", "-c", "kill -TERM $$"}), 128 + 15);
  EXPECT_THROW((void)v.run({"/nonexistent/program"}), ProcessError);
  EXPECT_THROW((void)v.run({}), InvalidArgument);
}

TEST(VirtualGPU, ACapturedRunEndsWithTheChildNotWithWhatItLeftBehind) {
  // The child starts a background process that keeps the output pipe open, and exits.
  // The run ends with the child: its output is kept, the straggler is not waited for.
  auto node = sim_node();
  VirtualGPU v(slice(0, 1 * kGB), node);
  const auto pid_file = std::filesystem::temp_directory_path() / ("vgpu-straggler-" + std::to_string(::getpid()));
  RunOptions o;
  o.capture_output = true;
  o.timeout = std::chrono::hours(1);  // supervised, with a deadline far away
  const RunResult r = v.run({"/bin/sh", "-c", "echo before; sleep 300 & echo $! > " + pid_file.string() + "; exit 3"}, o);
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_EQ(r.output, "before\n");
  EXPECT_FALSE(r.timed_out);
  std::ifstream in(pid_file);
  pid_t straggler = 0;
  in >> straggler;
  ASSERT_GT(straggler, 0);
  EXPECT_EQ(::kill(straggler, 0), 0) << "the run returned while the background process still ran";
  ::kill(straggler, SIGKILL);
  std::filesystem::remove(pid_file);
}

TEST(VirtualGPU, AChildIsKilledAndReapedWhenOnStartThrows) {
  auto node = sim_node();
  VirtualGPU v(slice(0, 1 * kGB), node);
  for (bool capture : {false, true}) {
    pid_t started = -1;
    RunOptions o;
    o.capture_output = capture;
    o.on_start = [&started](pid_t pid) {
      started = pid;
      throw std::runtime_error("bookkeeping failed");
    };
    EXPECT_THROW((void)v.run({"sleep", "300"}, o), std::runtime_error);
    ASSERT_GT(started, 0);
    errno = 0;
    EXPECT_EQ(::kill(started, 0), -1) << "the child still exists (running, or a zombie nobody reaped)";
    EXPECT_EQ(errno, ESRCH);
    EXPECT_TRUE(node->backend().processes(0).empty()) << "the simulated GPU does not keep the child";
  }
}

TEST(VirtualGPU, RunningChildShowsAsAProcessOnTheSimulatedGpu) {
  auto node = sim_node();
  VirtualGPU v(slice(3, kGB, 0.5), node);
  // The child runs until the test has seen it: no race with a fixed sleep.
  const auto release = std::filesystem::temp_directory_path() / ("vgpu-run-release-" + std::to_string(::getpid()));
  std::thread runner([&] {
    (void)v.run({"/bin/sh", "-c", "while [ ! -e " + release.string() + " ]; do sleep 0.01; done"});
  });
  bool seen = false;
  while (!seen) {  // registered right after the spawn; ctest's timeout bounds a bug here
    for (const auto& p : node->backend().processes(3)) seen = seen || p.command == "sh";
    std::this_thread::yield();
  }
  std::ofstream(release).put('x');
  runner.join();
  std::filesystem::remove(release);
  EXPECT_TRUE(seen);
  EXPECT_TRUE(node->backend().processes(3).empty());
}

TEST(VirtualGPU, AutoRecoverMovesToTheFallbackGpu) {
  auto node = sim_node();
  auto* sim = node->backend().simulator();
  VirtualGpuOptions o = slice(0, 30 * kGB, 0.5);
  o.auto_recover = true;
  o.fallback_gpu = 2;
  VirtualGPU v(o, node);
  sim->set_health(0, device::HealthState::lost, "test");
  {
    VgpuScope scope(v);
    EXPECT_EQ(v.gpu_id(), 2U);
    EXPECT_EQ(v.device(), "sim:2");
  }
  const auto recoveries = v.recoveries();
  ASSERT_EQ(recoveries.size(), 1U);
  EXPECT_EQ(recoveries[0].from_gpu, 0U);
  EXPECT_EQ(recoveries[0].to_gpu, 2U);
  EXPECT_NE(recoveries[0].reason.find("lost"), std::string::npos);
  const auto gpus = node->ledger().capacity();
  EXPECT_EQ(gpus[0].memory_leased, 0U);
  EXPECT_EQ(gpus[2].memory_leased, 30 * kGB);
  EXPECT_EQ(v.environment().at("CUDA_VISIBLE_DEVICES"), node->backend().gpu(2).uuid);
}

TEST(VirtualGPU, AutoRecoverSkipsFullOrUnhealthyFallbacks) {
  auto node = sim_node();
  auto* sim = node->backend().simulator();
  VirtualGPU filler(slice(1, 70 * kGB), node);
  VirtualGpuOptions o = slice(0, 30 * kGB);
  o.auto_recover = true;
  o.fallback_gpu = 1;  // full
  VirtualGPU v(o, node);
  sim->set_health(2, device::HealthState::unhealthy, "XID 79", 79);
  sim->set_health(0, device::HealthState::unhealthy, "XID 48", 48);
  v.ensure_healthy();
  EXPECT_EQ(v.gpu_id(), 3U) << "GPU 1 has no room and GPU 2 is unhealthy";
}

TEST(VirtualGPU, WithoutAutoRecoverUseFailsClearly) {
  auto node = sim_node();
  VirtualGPU v(slice(1, kGB), node);
  node->backend().simulator()->set_health(1, device::HealthState::lost, "test");
  try {
    VgpuScope scope(v);
    FAIL();
  } catch (const DeviceError& e) {
    EXPECT_NE(std::string(e.what()).find("auto_recover"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("GPU 1 is lost"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)v.run({"true"}), DeviceError);
  EXPECT_FALSE(current_vgpu().has_value()) << "a failed enter leaves no scope behind";
}

TEST(VirtualGPU, NoHealthyGpuWithRoomIsADeviceError) {
  auto node = sim_node(2);
  VirtualGpuOptions o = slice(0, kGB);
  o.auto_recover = true;
  VirtualGPU v(o, node);
  node->backend().simulator()->set_health(0, device::HealthState::lost, "a");
  node->backend().simulator()->set_health(1, device::HealthState::lost, "b");
  EXPECT_THROW(v.ensure_healthy(), DeviceError);
}

TEST(VirtualGPU, FromConfigUsesTheProfile) {
  auto node = sim_node();
  const config::Config training = config::load_profile("training");
  VirtualGPU v = VirtualGPU::from_config(training.vgpu, node);
  EXPECT_EQ(v.gpu_id(), 0U);
  EXPECT_EQ(v.options().memory_limit, 40 * kGB);
  EXPECT_EQ(v.options().compute_ratio, 0.5);
  EXPECT_TRUE(v.options().auto_recover);
  EXPECT_EQ(v.options().fallback_gpu, 1U);
  EXPECT_EQ(v.options().isolation, config::Isolation::intercept);
  EXPECT_EQ(v.options().priority, 10);
}

TEST(VirtualGPU, SeedScenarioSharedDevelopmentServer) {
  // 16 developers, VirtualGPU(gpu_id=i % 4, memory_limit='16GB') on a 4-GPU node.
  auto node = sim_node(4, {32, 1.0});
  std::vector<VirtualGPU> developers;
  for (std::uint32_t i = 0; i < 16; ++i) developers.emplace_back(slice(i % 4, 16 * kGB), node);
  for (const auto& g : node->ledger().capacity()) {
    EXPECT_EQ(g.slices, 4U);
    EXPECT_EQ(g.memory_leased, 64 * kGB);
  }
}

TEST(VirtualGPU, DefaultNodeIsOpenedFromTheEnvironment) {
  // Tests run with VGPU_BACKEND=sim (see tests/CMakeLists.txt).
  Node::set_default_node(nullptr);
  ::setenv("VGPU_SIM_GPUS", "2x40GB", 1);
  VirtualGPU v = create_vgpu(1, "10GB", 0.5);
  ::unsetenv("VGPU_SIM_GPUS");
  EXPECT_EQ(v.node().backend().name(), "sim");
  EXPECT_EQ(v.node().backend().gpu_count(), 2U);
  EXPECT_EQ(v.device(), "sim:1");
  Node::set_default_node(nullptr);
}

}  // namespace
}  // namespace apt::vgpu::runtime

namespace apt::vgpu::runtime {
namespace {

TEST(NodeRegions, APacingRegionIsRemovedWhenItsProcessExitsWithTheNodeStillAlive) {
  // Python does not destroy every object at exit: a Node kept alive to the end never ran its
  // destructor, and its per-GPU pacing region stayed in /dev/shm.
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(out[0]);
    device::SimConfig config;
    config.gpu_count = 1;
    auto* kept = new std::shared_ptr<Node>(std::make_shared<Node>(std::make_unique<device::SimBackend>(config),
                                                                  LedgerOptions{8, 1.0}));
    const std::string name = (*kept)->gpu_region(0);
    (void)!::write(out[1], name.data(), name.size());
    ::close(out[1]);
    std::exit(0);  // a normal exit: atexit handlers and static destructors run; *kept is never destroyed
  }
  ::close(out[1]);
  char buffer[256] = {};
  const ssize_t n = ::read(out[0], buffer, sizeof buffer - 1);
  ::close(out[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_GT(n, 0);
  const std::string name(buffer, static_cast<std::size_t>(n));
  ASSERT_EQ(name.rfind("/vgpu-gpu-0-", 0), 0U) << name;
  EXPECT_FALSE(std::filesystem::exists("/dev/shm" + name)) << name << " outlived the process that made it";
  (void)::shm_unlink(name.c_str());
}

}  // namespace
}  // namespace apt::vgpu::runtime
