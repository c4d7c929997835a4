// libvgpu-cuda.so under LD_PRELOAD, against the fake CUDA driver, reached by
// direct linking, dlsym and cuGetProcAddress.
#include "support/shell.hpp"

#include <apt/vgpu/intercept/abi.h>
#include <apt/vgpu/runtime/accounting_region.hpp>
#include <gtest/gtest.h>

#include <fcntl.h>

#include <csignal>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace {

// Kills and reaps a child at scope exit (a failed assertion returns early); release() when done.
struct ReapOnExit {
  pid_t pid;
  ~ReapOnExit() {
    if (pid <= 0) return;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
};

// Writes into a slice's accounting region as a crashed or killed process would have left it.
void edit_region(const std::string& name, const std::function<void(vgpu_shm_region&)>& edit) {
  const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, sizeof(vgpu_shm_region), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ASSERT_NE(p, MAP_FAILED);
  edit(*static_cast<vgpu_shm_region*>(p));
  ::munmap(p, sizeof(vgpu_shm_region));
}

using AppRun = apt::vgpu::testing::ShellResult;
using apt::vgpu::testing::slurp;

const char* app(const std::string& mode) { return mode == "direct" ? CUDA_APP_LINKED_PATH : CUDA_APP_DLOPEN_PATH; }

// Runs the app through /bin/sh with `env` (KEY=VALUE ...) and the preload.
AppRun run(const std::string& mode, const std::string& ops, const std::string& env, bool preload = true) {
  std::string command = "env LD_LIBRARY_PATH=" + std::string(FAKE_CUDA_DIR) + " " + env;
  if (preload) command += std::string(" LD_PRELOAD=") + VGPU_CUDA_PRELOAD;
  return apt::vgpu::testing::run_shell(command + " " + app(mode) + " " + mode + " " + ops);
}

class EveryWayIn : public ::testing::TestWithParam<std::string> {};

TEST_P(EveryWayIn, PassThroughWhenUnconfigured) {
  const AppRun r = run(GetParam(), "alloc:5000000000 info launch:100", "");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "init ok\nalloc ok\ninfo ok free=75000000000 total=80000000000\nlaunch ok\n");
  EXPECT_EQ(r.err, "");
}

TEST_P(EveryWayIn, MemoryLimitIsEnforcedAndMemGetInfoShowsTheSlice) {
  const AppRun r = run(GetParam(), "alloc:600000 alloc:600000 info free:0 alloc:600000 info launch:10",
                    "VGPU_MEMORY_LIMIT=1000000");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "init ok\nalloc ok\nalloc oom\ninfo ok free=400000 total=1000000\nfree ok\nalloc ok\n"
            "info ok free=400000 total=1000000\nlaunch ok\n");
  EXPECT_NE(r.err.find("cuMemAlloc of 600000 bytes refused: 600000 of 1000000 in use"), std::string::npos) << r.err;
}

TEST_P(EveryWayIn, EveryAllocationPathIsAdmitted) {
  const AppRun r = run(GetParam(), "async:300000 managed:300000 create:300000 alloc:200000 array:1000x1000 pitch:500x100 pitch:1000x100",
                    "VGPU_MEMORY_LIMIT=1000000 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // 300000 x 3 admitted; the fourth 200000 is over; a 4 MB float array is over; a 500-byte-wide pitch
  // allocation fits once padded to 512 (51200); a 1000-byte-wide one (102400 padded) does not fit, and
  // the driver is never asked for it, so there is no pitch to report.
  EXPECT_EQ(r.out, "init ok\nasync ok\nmanaged ok\ncreate ok\nalloc oom\narray oom\npitch ok 512\npitch oom 0\n");
}

TEST_P(EveryWayIn, AContextIsChargedWhileItLives) {
  // A context takes device memory no allocation shows (here 300 KB, as configured):
  // charged when a device's primary context is first retained or a context created,
  // given back when it goes.
  const std::string env = "VGPU_MEMORY_LIMIT=1000000 VGPU_CONTEXT_BYTES=300000 FAKE_CUDA_CONTEXT_BYTES=300000 VGPU_LOG_LEVEL=error";
  AppRun r = run(GetParam(), "ctx ctx info alloc:800000 ctxrelease info ctxrelease info ctxcreate info ctxdestroy info", env);
  EXPECT_EQ(r.out, "init ok\nctx ok\nctx ok\ninfo ok free=700000 total=1000000\nalloc oom\nctxrelease ok\n"
                   "info ok free=700000 total=1000000\nctxrelease ok\ninfo ok free=1000000 total=1000000\n"
                   "ctxcreate ok\ninfo ok free=700000 total=1000000\nctxdestroy ok\ninfo ok free=1000000 total=1000000\n");
  // A reset destroys the primary context whatever its count.
  r = run(GetParam(), "ctx ctx ctxreset info", env);
  EXPECT_EQ(r.out, "init ok\nctx ok\nctx ok\nctxreset ok\ninfo ok free=1000000 total=1000000\n");
  // A context that does not fit is refused, as the driver refuses one on a full GPU.
  r = run(GetParam(), "alloc:800000 ctxcreate", env);
  EXPECT_EQ(r.out, "init ok\nalloc ok\nctxcreate oom\n");
}

TEST_P(EveryWayIn, MipmappedArraysAreCountedLevelByLevel) {
  // 512 x 512 bytes with 4 levels: 262144 + 65536 + 16384 + 4096 = 348160 bytes.
  const AppRun r = run(GetParam(), "mipmap:512:4 info mipmap:1024:1", "VGPU_MEMORY_LIMIT=1000000 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\nmipmap ok\ninfo ok free=651840 total=1000000\nmipmap oom\n");
}

TEST_P(EveryWayIn, GraphMemoryIsCountedAndTrimmedBeforeRefusing) {
  // A graph whose memory nodes need 600 KB: after it runs, the graph memory pool keeps
  // them, and the slice shows it. A cudaMalloc that does not fit beside it first makes
  // the pool give its idle memory back (cuDeviceGraphMemTrim), then fits.
  AppRun r = run(GetParam(), "graphlaunch info alloc:600000 info drvused",
                 "VGPU_MEMORY_LIMIT=1000000 FAKE_CUDA_GRAPH_MEM=600000 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\ngraphlaunch ok\ninfo ok free=400000 total=1000000\nalloc ok\n"
                   "info ok free=400000 total=1000000\ndrvused 600000\n");
  // A stream-ordered allocation made while the stream is captured is a graph memory
  // node: nothing is taken until the graph runs, so nothing is charged now.
  r = run(GetParam(), "async:500000 info", "VGPU_MEMORY_LIMIT=1000000 FAKE_CUDA_CAPTURING=1 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\nasync ok\ninfo ok free=1000000 total=1000000\n");
}

TEST_P(EveryWayIn, PacingEventsBelongToTheLaunchsContext) {
  // Launches in a second context: timing events made in the first cannot be recorded on
  // the second's streams (the driver refuses), which left those launches unpaced.
  const AppRun r = run(GetParam(), "launch:20 ctxcreate launch:20 badrecords ctxdestroy launch:20 badrecords",
                       "VGPU_COMPUTE_SHARE=0.5 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\nlaunch ok\nctxcreate ok\nlaunch ok\nbadrecords 0\nctxdestroy ok\nlaunch ok\nbadrecords 0\n");
}

TEST_P(EveryWayIn, PacedLaunchesFromTwoThreadsReachTheDriverTogether) {
  // The pacer's lock is not held across the real launch: the fake driver holds the first
  // launch until a second thread's launch is inside it too (or 10 s have passed).
  const AppRun r = run(GetParam(), "concurrent", "VGPU_COMPUTE_SHARE=0.5 FAKE_CUDA_LAUNCH_RENDEZVOUS=1 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\nconcurrent together\n");
}

// getproc_ptds: every lookup with the per-thread-default-stream flag (cudart built with
// --default-stream per-thread); functions the driver has no _ptsz form of must still work.
INSTANTIATE_TEST_SUITE_P(Intercept, EveryWayIn, ::testing::Values("direct", "dlsym", "getproc", "getproc_ptds"));

TEST(Intercept, WithoutThePreloadThereIsNoLimit) {
  const AppRun r = run("direct", "alloc:600000 alloc:600000", "VGPU_MEMORY_LIMIT=1000000", false);
  EXPECT_EQ(r.out, "init ok\nalloc ok\nalloc ok\n");
}

TEST(Intercept, BadConfigurationFailsLoudlyNotSilentlyUnlimited) {
  AppRun r = run("getproc", "alloc:1000", "VGPU_MEMORY_LIMIT='20 gigs'");
  EXPECT_EQ(r.out, "init invalid\nalloc invalid\n");
  EXPECT_NE(r.err.find("VGPU_MEMORY_LIMIT='20 gigs' is not a positive byte count"), std::string::npos) << r.err;
  r = run("direct", "alloc:1000", "VGPU_COMPUTE_SHARE=1.5");
  EXPECT_EQ(r.out, "init invalid\nalloc invalid\n");
  EXPECT_NE(r.err.find("VGPU_COMPUTE_SHARE='1.5' is not a share"), std::string::npos) << r.err;
}

TEST(Intercept, LimitIsSharedAcrossProcessesAndACrashedProcessIsReclaimed) {
  // The runtime (or vgpud) creates the slice's region; the library only opens it.
  apt::vgpu::runtime::AccountingRegion region =
      apt::vgpu::runtime::AccountingRegion::create(apt::vgpu::runtime::RegionKind::slice, "/vgpu-test", 0);
  const std::string env = "VGPU_MEMORY_LIMIT=1000000 VGPU_SHM_NAME=" + region.name() + " VGPU_LOG_LEVEL=error";
  // As a process killed in the middle of a reclaim left it when the lock was a flag in
  // the region: reclaim must still happen (the lock is now one the kernel drops).
  ASSERT_NO_FATAL_FAILURE(edit_region(region.name(), [](vgpu_shm_region& r) { r.reclaim_lock = 1; }));
  // Process A takes 700 KB and keeps it.
  const std::string hold_out = std::filesystem::temp_directory_path() / ("vgpu-hold-" + std::to_string(::getpid()));
  // Built before fork(): after it, a multithreaded parent's child may only call
  // async-signal-safe functions (no allocation), so the child only execs.
  const std::string command = "exec env LD_LIBRARY_PATH=" + std::string(FAKE_CUDA_DIR) + " " + env +
                              " LD_PRELOAD=" + VGPU_CUDA_PRELOAD + " " + CUDA_APP_LINKED_PATH +
                              " direct alloc:700000 hold >" + hold_out;
  const pid_t holder = ::fork();
  if (holder == 0) {
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // A failed assertion returns early: the holder (it waits an hour) must not outlive the test.
  ReapOnExit reap{holder};
  // Until the holder has its memory, or has died trying (no time limit: ctest's bounds a bug).
  while (slurp(hold_out).find("alloc ok") == std::string::npos && ::waitpid(holder, nullptr, WNOHANG) == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_NE(slurp(hold_out).find("alloc ok"), std::string::npos);
  // Process B sees the other's use: the vGPU's limit is for all its processes.
  AppRun b = run("getproc", "info alloc:500000 alloc:300000", env);
  EXPECT_EQ(b.out, "init ok\ninfo ok free=300000 total=1000000\nalloc oom\nalloc ok\n");
  // A dies without freeing (SIGKILL): its 700 KB comes back to the next process.
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  reap.pid = -1;
  AppRun c = run("dlsym", "alloc:900000 info", env);
  EXPECT_EQ(c.out, "init ok\nalloc ok\ninfo ok free=100000 total=1000000\n");
  // Normal exits gave their share back: a fresh process starts from zero.
  AppRun d = run("direct", "info", env);
  EXPECT_EQ(d.out, "init ok\ninfo ok free=1000000 total=1000000\n");
  std::filesystem::remove(hold_out);
}

TEST_P(EveryWayIn, MemoryReleasedWhileMappedStaysCountedUntilUnmapped) {
  // cuMemRelease while the memory is still mapped frees nothing (llama.cpp's VMM pool does
  // this): the 600 KB stay counted until the last cuMemUnmap.
  const AppRun r = run(GetParam(), "vmmhold:600000 alloc:600000 unmapall alloc:600000 info",
                       "VGPU_MEMORY_LIMIT=1000000 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\nvmmhold ok\nalloc oom\nunmapall ok\nalloc ok\ninfo ok free=400000 total=1000000\n");
}

TEST_P(EveryWayIn, MemoryAPoolKeepsStaysCountedUntilThePoolLetsItGo) {
  const std::string env = "VGPU_MEMORY_LIMIT=1000000 VGPU_LOG_LEVEL=error";
  // A pool that never gives memory back (PyTorch's cudaMallocAsync backend): after an async
  // alloc+free of 768 KB the pool still holds it. A cudaMalloc of 768 KB fits only once the
  // pool is trimmed, and then the device really holds 768 KB, not 1.5 MB on a 1 MB slice.
  AppRun r = run(GetParam(), "poolhigh async:768000 freeasync:0 alloc:768000 drvused info", env);
  EXPECT_EQ(r.out, "init ok\npoolhigh ok\nasync ok\nfreeasync ok\nalloc ok\ndrvused 768000\n"
                   "info ok free=232000 total=1000000\n");
  // The pool's memory serves the next stream-ordered allocation without a second charge.
  r = run(GetParam(), "poolhigh async:768000 freeasync:0 async:768000 drvused info", env);
  EXPECT_EQ(r.out, "init ok\npoolhigh ok\nasync ok\nfreeasync ok\nasync ok\ndrvused 768000\n"
                   "info ok free=232000 total=1000000\n");
  // A pool that lets memory go at once (the default threshold, 0) returns it to the slice too.
  r = run(GetParam(), "async:768000 freeasync:0 drvused info", env);
  EXPECT_EQ(r.out, "init ok\nasync ok\nfreeasync ok\ndrvused 0\ninfo ok free=1000000 total=1000000\n");
}

TEST_P(EveryWayIn, LaunchesIntoACapturingStreamAreNotBracketedWithTimingEvents) {
  // While a stream is captured into a CUDA graph, the pacer must not record its timing
  // events there (they would become graph nodes whose queries fail); launches still work.
  const AppRun r = run(GetParam(), "launch:200 capturedrecords",
                       "VGPU_COMPUTE_SHARE=0.5 FAKE_CUDA_CAPTURING=1 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\nlaunch ok\ncapturedrecords 0\n");
}

TEST(Intercept, WhatNvmlSeesBeyondTheHooksIsCounted) {
  // The context, modules and unhooked paths take memory the hooks never see. NVML's
  // per-process figure for this process (here 300 KB, scripted in the fake NVML) is
  // charged against the slice, so the next allocation cannot overcommit the GPU.
  const auto config = std::filesystem::temp_directory_path() / ("vgpu-nvml-net-" + std::to_string(::getpid()) + ".json");
  std::ofstream(config) << R"({"devices": [{"name": "Fake", "uuid": "GPU-net-0", "memory_total": 80000000000,
                                            "processes": [{"pid": "self", "used": 300000}]}]})";
  // The unsanitised fake: it loads into the (never sanitised) program under the preload.
  const std::string nvml = std::string(FAKE_NVML_DIR) + "/libnvidia-ml.so.1";
  const std::string env = "VGPU_MEMORY_LIMIT=1000000 VGPU_GPU_UUID=GPU-net-0 VGPU_REAL_LIBNVML=" + nvml +
                          " FAKE_NVML_CONFIG=" + config.string() + " VGPU_LOG_LEVEL=error";
  AppRun r = run("dlsym", "info alloc:800000 info", env);
  EXPECT_EQ(r.out, "init ok\ninfo ok free=700000 total=1000000\nalloc oom\ninfo ok free=700000 total=1000000\n");
  // Without the slice's GPU (no NVML view of it) the net is off.
  r = run("dlsym", "info", "VGPU_MEMORY_LIMIT=1000000 VGPU_REAL_LIBNVML=" + nvml + " FAKE_NVML_CONFIG=" +
                               config.string() + " VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\ninfo ok free=1000000 total=1000000\n");
  std::filesystem::remove(config);
}

TEST(Intercept, AContextIsMeasuredThroughNvmlWhenNoSizeIsConfigured) {
  // NVML says the process holds 300 KB once its context exists: that is the context.
  const auto config = std::filesystem::temp_directory_path() / ("vgpu-nvml-ctx-" + std::to_string(::getpid()) + ".json");
  std::ofstream(config) << R"({"devices": [{"name": "Fake", "uuid": "GPU-ctx-0", "memory_total": 80000000000,
                                            "processes": [{"pid": "self", "used": 300000}]}]})";
  const std::string nvml = std::string(FAKE_NVML_DIR) + "/libnvidia-ml.so.1";
  const AppRun r = run("dlsym", "ctx info", "VGPU_MEMORY_LIMIT=1000000 VGPU_GPU_UUID=GPU-ctx-0 VGPU_REAL_LIBNVML=" + nvml +
                                                " FAKE_NVML_CONFIG=" + config.string() + " VGPU_LOG_LEVEL=info");
  EXPECT_EQ(r.out, "init ok\nctx ok\ninfo ok free=700000 total=1000000\n");
  EXPECT_NE(r.err.find("a CUDA context takes 300000 bytes (measured by NVML)"), std::string::npos) << r.err;
  std::filesystem::remove(config);
}

TEST(Intercept, MemGetInfoNeverReportsMoreThanTheDeviceHas) {
  // A 100 GB limit (an oversubscribed slice) on the fake's 80 GB device.
  const AppRun r = run("dlsym", "info", "VGPU_MEMORY_LIMIT=100000000000 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\ninfo ok free=80000000000 total=80000000000\n");
}

TEST(Intercept, FreesRacingWithAllocationsOfTheSameAddressLeakNothing) {
  // Two threads x 20,000 alloc/free pairs of 4 KiB on a driver that reuses addresses at
  // once. The record of a free used to be erased after the real free, when the address
  // could already belong to the other thread: its bytes then stayed charged forever.
  const AppRun r = run("dlsym", "race:20000 info", "VGPU_MEMORY_LIMIT=1000000 VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "init ok\nrace ok\ninfo ok free=1000000 total=1000000\n") << "bytes left charged after every free";
}

// A sleeping child with its real start time, for a live slot of a region.
struct Sleeper {
  pid_t pid = ::fork();
  Sleeper() {
    if (pid == 0) {
      ::execl("/bin/sleep", "sleep", "300", static_cast<char*>(nullptr));
      ::_exit(127);
    }
  }
  ~Sleeper() { ReapOnExit{pid}; }
  std::uint32_t start_time() const {
    // /proc/PID/stat field 22, after the command in parentheses (set at fork; exec keeps it).
    const std::string stat = slurp("/proc/" + std::to_string(pid) + "/stat");
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));
    std::string field;
    for (int i = 3; i <= 22; ++i) fields >> field;
    return static_cast<std::uint32_t>(std::stoull(field));
  }
};

pid_t dead_pid() {
  const pid_t dead = ::fork();
  if (dead == 0) ::_exit(0);
  ::waitpid(dead, nullptr, 0);
  return dead;
}

std::uint64_t own_pid_namespace() {
  struct stat st {};
  return ::stat("/proc/self/ns/pid", &st) == 0 ? static_cast<std::uint64_t>(st.st_ino) : 0;
}

TEST(Intercept, TheSlicesUseIsTheSumOfItsProcessesSlots) {
  // The slots are the only books (there is no separate total that a process killed
  // between two steps could leave out of step, or that reclaim could wrap): a live
  // process's 200 KB count, a dead one's 500 KB are reclaimed.
  apt::vgpu::runtime::AccountingRegion region =
      apt::vgpu::runtime::AccountingRegion::create(apt::vgpu::runtime::RegionKind::slice, "/vgpu-sum", 0);
  const Sleeper live;
  const std::uint32_t live_start = live.start_time();
  const pid_t dead = dead_pid();
  ASSERT_NO_FATAL_FAILURE(edit_region(region.name(), [&](vgpu_shm_region& r) {
    r.slots[0] = vgpu_shm_slot{dead, 0, 500000, 0};
    r.slots[1] = vgpu_shm_slot{live.pid, live_start, 200000, 0};
  }));
  EXPECT_EQ(apt::vgpu::runtime::AccountingRegion::used_bytes(region.name()), 700000U);
  const AppRun r = run("dlsym", "info alloc:900000 alloc:800000 info",
                       "VGPU_MEMORY_LIMIT=1000000 VGPU_SHM_NAME=" + region.name() + " VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\ninfo ok free=800000 total=1000000\nalloc oom\nalloc ok\ninfo ok free=0 total=1000000\n");
  EXPECT_EQ(apt::vgpu::runtime::AccountingRegion::used_bytes(region.name()), 200000U) << "the app gave its share back at exit";
}

TEST(Intercept, ASlotOfAnotherPidNamespaceIsNotJudgedHere) {
  // Two containers share a slice: a pid written by a process of another PID namespace
  // names some other process (or none) here, so it must not be reclaimed from here.
  apt::vgpu::runtime::AccountingRegion region =
      apt::vgpu::runtime::AccountingRegion::create(apt::vgpu::runtime::RegionKind::slice, "/vgpu-pidns", 0);
  const pid_t dead = dead_pid();
  const std::uint64_t ours = own_pid_namespace();
  ASSERT_NE(ours, 0U);
  ASSERT_NO_FATAL_FAILURE(edit_region(region.name(), [&](vgpu_shm_region& r) {
    r.slots[0] = vgpu_shm_slot{dead, 0, 500000, ours + 1};
  }));
  const std::string env = "VGPU_MEMORY_LIMIT=1000000 VGPU_SHM_NAME=" + region.name() + " VGPU_LOG_LEVEL=error";
  AppRun r = run("dlsym", "info", env);
  EXPECT_EQ(r.out, "init ok\ninfo ok free=500000 total=1000000\n") << "another namespace's slot was reclaimed";
  // The same pid in our own namespace is dead, and is reclaimed.
  ASSERT_NO_FATAL_FAILURE(edit_region(region.name(), [&](vgpu_shm_region& region_now) { region_now.slots[0].pid_namespace = ours; }));
  r = run("dlsym", "info", env);
  EXPECT_EQ(r.out, "init ok\ninfo ok free=1000000 total=1000000\n");
}

TEST(Intercept, ARecycledPidDoesNotKeepADeadProcesssBytes) {
  // The slot's process died and its pid now belongs to another (here: a live sleeper with
  // another start time). kill(pid, 0) says "alive"; the start time says it is not the same.
  apt::vgpu::runtime::AccountingRegion region =
      apt::vgpu::runtime::AccountingRegion::create(apt::vgpu::runtime::RegionKind::slice, "/vgpu-reuse", 0);
  const Sleeper sleeper;
  ASSERT_NO_FATAL_FAILURE(edit_region(region.name(), [&](vgpu_shm_region& r) {
    r.slots[0].pid = sleeper.pid;
    r.slots[0].start_time = 1;  // no process on this machine started at tick 1
    r.slots[0].used_bytes = 500000;
  }));
  const AppRun r = run("dlsym", "info", "VGPU_MEMORY_LIMIT=1000000 VGPU_SHM_NAME=" + region.name() + " VGPU_LOG_LEVEL=error");
  EXPECT_EQ(r.out, "init ok\ninfo ok free=1000000 total=1000000\n") << "the recycled pid's 500 KB were not reclaimed";
}

TEST(Intercept, ARegionThatTheRuntimeDidNotCreateIsRefused) {
  // The library never creates a region: a made-up name fails closed, and so does
  // an object that is not an accounting region.
  const std::string made_up = "/vgpu-made-up-" + std::to_string(::getpid());
  AppRun r = run("direct", "alloc:1000", "VGPU_MEMORY_LIMIT=1000000 VGPU_SHM_NAME=" + made_up);
  EXPECT_EQ(r.out, "init invalid\nalloc invalid\n");
  EXPECT_NE(r.err.find("cannot open the slice's shared memory " + made_up), std::string::npos) << r.err;
  EXPECT_EQ(::shm_open(made_up.c_str(), O_RDONLY, 0), -1) << "the library must not have created it";
  const int fd = ::shm_open(made_up.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 4096), 0);
  ::close(fd);
  r = run("direct", "alloc:1000", "VGPU_MEMORY_LIMIT=1000000 VGPU_SHM_NAME=" + made_up);
  EXPECT_EQ(r.out, "init invalid\nalloc invalid\n");
  EXPECT_NE(r.err.find("has magic 0x0"), std::string::npos) << r.err;
  ::shm_unlink(made_up.c_str());
}

TEST(Intercept, DlsymRtldNextStillMeansNextAfterTheCaller) {
  // The first probe library asks for the *next* vgpu_probe; it must get the second
  // library's, not its own (which it would if RTLD_NEXT were taken relative to
  // the preloaded interposer).
  EXPECT_EQ(apt::vgpu::testing::run_shell(NEXT_APP_PATH).out, "next=2\n");
  EXPECT_EQ(apt::vgpu::testing::run_shell(std::string("env LD_PRELOAD=") + VGPU_CUDA_PRELOAD + " " + NEXT_APP_PATH).out,
            "next=2\n");
}

TEST(Intercept, NvmlMemoryQueriesOfTheSlicesGpuShowTheSlice) {
  const auto config = std::filesystem::temp_directory_path() / ("vgpu-nvml-" + std::to_string(::getpid()) + ".json");
  std::ofstream(config) << R"({"devices": [{"name": "NVIDIA H100", "uuid": "GPU-mine", "memory_total": 80000000000,
                                            "memory_used": 5000000000}]})";
  const std::string base = "env LD_LIBRARY_PATH=" + std::string(FAKE_NVML_DIR) + " FAKE_NVML_CONFIG=" + config.string() +
                           " LD_PRELOAD=" + VGPU_CUDA_PRELOAD + " VGPU_MEMORY_LIMIT=1000000 ";
  auto run_nvml = [](const std::string& command) {
    std::string out;
    FILE* pipe = ::popen(command.c_str(), "r");
    char buffer[256];
    while (pipe != nullptr && std::fgets(buffer, sizeof buffer, pipe) != nullptr) out += buffer;
    if (pipe != nullptr) ::pclose(pipe);
    return out;
  };
  EXPECT_EQ(run_nvml(base + "VGPU_GPU_UUID=GPU-mine " + NVML_APP_PATH),
            "v1 0 total=1000000 used=0 free=1000000\nv2 0 total=1000000 used=0 free=1000000\n");
  // Another GPU (or no binding) is reported as NVML sees it.
  EXPECT_EQ(run_nvml(base + "VGPU_GPU_UUID=GPU-other " + NVML_APP_PATH),
            "v1 0 total=80000000000 used=5000000000 free=75000000000\n"
            "v2 0 total=80000000000 used=5000000000 free=75000000000\n");
  std::filesystem::remove(config);
}

TEST(Intercept, NvmlProcessListsShowOnlyTheSlicesProcesses) {
  // NVML lists every process on the GPU; a tenant sees its own slice's only (here itself,
  // not pid 1), with NVML's buffer contract kept: too small a buffer gets the count needed.
  const auto config = std::filesystem::temp_directory_path() / ("vgpu-nvml-procs-" + std::to_string(::getpid()) + ".json");
  std::ofstream(config) << R"({"devices": [{"name": "NVIDIA H100", "uuid": "GPU-mine", "memory_total": 80000000000,
                                            "processes": [{"pid": "self", "used": 1000}, {"pid": 1, "used": 2000}]}]})";
  const std::string base = "env LD_LIBRARY_PATH=" + std::string(FAKE_NVML_DIR) + " FAKE_NVML_CONFIG=" + config.string() +
                           " LD_PRELOAD=" + VGPU_CUDA_PRELOAD + " VGPU_MEMORY_LIMIT=1000000 ";
  EXPECT_EQ(apt::vgpu::testing::run_shell(base + "VGPU_GPU_UUID=GPU-mine " + NVML_APP_PATH + " procs").out,
            "sizing 7 n=1\nv3 0 n=1 self=1\nv1 0 n=1 self=1\n");
  EXPECT_EQ(apt::vgpu::testing::run_shell(base + "VGPU_GPU_UUID=GPU-other " + NVML_APP_PATH + " procs").out,
            "sizing 7 n=2\nv3 0 n=2 self=1\nv1 0 n=2 self=1\n");
  std::filesystem::remove(config);
}

}  // namespace
