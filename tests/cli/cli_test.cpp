// Runs the real `vgpu` binary and checks its output and exit codes.
#include "support/fakes.hpp"
#include "support/shell.hpp"

#include <nlohmann/json.hpp>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace apt::vgpu {
namespace {

using CliResult = testing::ShellResult;
using testing::slurp;

// Runs `vgpu ARGS` through the shell with extra environment assignments.
CliResult vgpu(const std::string& args, const std::string& env = "") {
  return testing::run_shell(env + " " + VGPU_CLI_PATH + " " + args);
}

TEST(Cli, HelpListsEverySubcommandAndExitCodes) {
  const auto r = vgpu("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"devices", "profile", "create", "run", "demo", "--backend", "Exit codes"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word << "\n" << r.out;
  }
}

TEST(Cli, DevicesTableOnTheSimulatedNode) {
  const auto r = vgpu("devices --backend sim");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("backend: sim, 8 GPUs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Simulated H100 80GB"), std::string::npos);
  EXPECT_NE(r.out.find("healthy"), std::string::npos);
}

TEST(Cli, DevicesJsonOverTheFakeNvml) {
  const auto script = std::filesystem::temp_directory_path() / "vgpu-cli-fake-nvml.json";
  std::ofstream(script) << R"({"devices": [{"name": "NVIDIA A10", "uuid": "GPU-a10", "memory_total": 24000000000,
      "memory_used": 1000, "utilization_gpu": 55, "errors": {"nvmlDeviceGetTemperature": "NOT_SUPPORTED"}}]})";
  const auto r = vgpu("devices --backend nvml --json", std::string("FAKE_NVML_CONFIG=") + script.string() +
                                                           " VGPU_NVML_LIBRARY=" + FAKE_NVML_PATH);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["backend"], "nvml");
  ASSERT_EQ(j["gpus"].size(), 1U);
  EXPECT_EQ(j["gpus"][0]["name"], "NVIDIA A10");
  EXPECT_EQ(j["gpus"][0]["metrics"]["utilization_percent"], 55.0);
  EXPECT_TRUE(j["gpus"][0]["metrics"]["temperature_celsius"].is_null()) << "unsupported is null, not 0";
  std::filesystem::remove(script);
}

TEST(Cli, SimShapeFromFlagAndEnvironment) {
  auto r = vgpu("devices --backend sim --sim-gpus 2x40GB:Sim-A100 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["gpus"].size(), 2U);
  EXPECT_EQ(j["gpus"][1]["memory_total_bytes"], 40000000000ULL);
  EXPECT_EQ(j["gpus"][1]["name"], "Sim-A100");
  r = vgpu("devices --backend sim --json", "VGPU_SIM_GPUS=3");
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["gpus"].size(), 3U);
}

TEST(Cli, ExplicitBackendThatIsMissingFailsWithExitOne) {
  const auto r = vgpu("devices --backend nvml", "VGPU_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot load /nonexistent/libnvidia-ml.so.1"), std::string::npos) << r.err;
}

TEST(Cli, ProfileShowValidateAndList) {
  auto r = vgpu("profile show training");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("memory_limit: 40GB"), std::string::npos) << r.out;
  r = vgpu("profile validate standard training inference development research");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("research.yaml: ok"), std::string::npos);
  r = vgpu("profile list");
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("development"), std::string::npos);
}

TEST(Cli, InvalidProfileIsExitTwoWithFileLineAndKey) {
  const auto bad = std::filesystem::temp_directory_path() / "vgpu-bad-profile.yaml";
  std::ofstream(bad) << "vgpu:\n  max_virtual_gpu: 8\n  scheduling: fiar\n";
  const auto r = vgpu("profile validate " + bad.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(bad.string() + ":2:3: vgpu.max_virtual_gpu: unknown key; did you mean 'max_virtual_gpus'?"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find(":3:15: vgpu.scheduling"), std::string::npos) << r.err;
  EXPECT_EQ(vgpu("create --profile " + bad.string()).exit_code, 2);
  EXPECT_EQ(vgpu("profile show nosuchprofile").exit_code, 2);
  std::filesystem::remove(bad);
}

TEST(Cli, CreateShowsTheSliceAndItsEnvironment) {
  const auto r = vgpu("create --backend sim --gpu 0 --memory 20GB --compute 0.5 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["device"], "sim:0");
  EXPECT_EQ(j["memory_limit_bytes"], 20000000000ULL);
  EXPECT_EQ(j["environment"]["VGPU_MEMORY_LIMIT"], "20000000000");
  EXPECT_EQ(j["environment"]["VGPU_COMPUTE_SHARE"], "0.5");
  const auto table = vgpu("create --backend sim --gpu 1 --memory 16GiB --compute 0.25 --isolation mps");
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=25"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT=0=16384M"), std::string::npos) << table.out;
}

TEST(Cli, CreateWithAProfileUsesItsDefaults) {
  auto r = vgpu("create --backend sim --profile research --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["memory_limit_bytes"], 8000000000ULL);
  EXPECT_EQ(j["isolation"], "intercept");
  EXPECT_NE(j["environment"]["LD_PRELOAD"].get<std::string>().find("libvgpu-cuda.so"), std::string::npos)
      << "the build tree's interception library is found next to the CLI";
  r = vgpu("create --backend sim --profile research --json", "VGPU_INTERCEPT_LIBRARY=/nonexistent/libvgpu-cuda.so");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("libvgpu-cuda.so, which was not found"), std::string::npos) << "warns that enforcement is missing";
}

TEST(Cli, RunWithInterceptIsolationEnforcesTheMemoryLimit) {
  // The test programs sit in the build tree beside the CLI: <build>/src/cli/vgpu, <build>/tests/...
  const auto build = std::filesystem::path(VGPU_CLI_PATH).parent_path().parent_path().parent_path();
  const auto r = vgpu("run --backend sim --isolation intercept --memory 1MB -- env LD_LIBRARY_PATH=" +
                      (build / "tests" / "fakes" / "cuda").string() + " " +
                      (build / "tests" / "cuda_app_dlopen").string() + " getproc alloc:600000 alloc:600000 info");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "init ok\nalloc ok\nalloc oom\ninfo ok free=400000 total=1000000\n");
  EXPECT_NE(r.err.find("refused: 600000 of 1000000 in use"), std::string::npos) << r.err;
}

TEST(Cli, BadSliceRequestsAreUsageOrCapacityErrors) {
  auto r = vgpu("create --backend sim --memory 20XB");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'20XB'"), std::string::npos) << r.err;
  r = vgpu("create --backend sim --memory ''");  // once meant "unlimited" and exited 0
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--memory: '' is not a valid size"), std::string::npos) << r.err;
  r = vgpu("create --backend sim --gpu 8");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no GPU 8"), std::string::npos) << r.err;
  r = vgpu("create --backend sim --memory 90GB");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("more than GPU 0 has"), std::string::npos) << r.err;
  r = vgpu("create --backend sim --compute 2");
  EXPECT_EQ(r.exit_code, 2);
  r = vgpu("create --backend cuda");
  EXPECT_EQ(r.exit_code, 2);
  r = vgpu("nosuchcommand");
  EXPECT_EQ(r.exit_code, 2);
}

TEST(Cli, RunBindsTheCommandAndPropagatesItsExitCode) {
  auto r = vgpu("run --backend sim --gpu 3 --memory 16GB --compute 0.25 -- sh -c 'echo limit=$VGPU_MEMORY_LIMIT "
                "share=$VGPU_COMPUTE_SHARE gpu=$VGPU_PHYSICAL_GPU; exit 5'");
  EXPECT_EQ(r.exit_code, 5) << r.err;
  EXPECT_NE(r.out.find("limit=16000000000 share=0.25 gpu=3"), std::string::npos) << r.out;
  r = vgpu("run --backend sim -- /nonexistent/program");
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_NE(r.err.find("cannot start '/nonexistent/program'"), std::string::npos) << r.err;
  r = vgpu("run --backend sim --isolation intercept -- true", "VGPU_INTERCEPT_LIBRARY=/nonexistent/lib.so");
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_NE(r.err.find("isolation 'intercept' needs libvgpu-cuda.so"), std::string::npos) << r.err;
  r = vgpu("run --backend sim");
  EXPECT_EQ(r.exit_code, 2) << "a command is required";
  r = vgpu("run --backend sim --isolation mps --compute 0.5 -- true", "VGPU_MPS_CONTROL=/nonexistent/mps");
  EXPECT_EQ(r.exit_code, 127);
  EXPECT_NE(r.err.find("isolation 'mps' needs nvidia-cuda-mps-control"), std::string::npos) << r.err;
}

TEST(Cli, RunOnALostGpuFailsOrRecovers) {
  auto r = vgpu("run --backend sim --gpu 1 -- true", "VGPU_SIM_LOST=1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("GPU 1 is lost"), std::string::npos) << r.err;
  r = vgpu("run --backend sim --gpu 1 --auto-recover --fallback-gpu 4 -- sh -c 'echo gpu=$VGPU_PHYSICAL_GPU'",
           "VGPU_SIM_LOST=1");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("gpu=4"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("moved from GPU 1 to GPU 4"), std::string::npos) << r.err;
}

TEST(Cli, DemoRunsEndToEndOnTheSimulatedNode) {
  const auto r = vgpu("demo --backend sim --profile standard");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* step : {"== 1. The node", "== 3. Carving virtual GPUs", "refused: slice does not fit",
                           "task 0 ran in training on sim:0", "child exited with status 0",
                           "moved GPU 1 -> GPU 2"}) {
    EXPECT_NE(r.out.find(step), std::string::npos) << step << "\n" << r.out;
  }
}

TEST(Cli, MemoryGenerateAndReplay) {
  const auto trace = std::filesystem::temp_directory_path() / ("vgpu-cli-trace-" + std::to_string(::getpid()) + ".txt");
  auto r = vgpu("memory generate --layers 4 --steps 3 -o " + trace.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("events to"), std::string::npos) << r.out;
  r = vgpu("memory replay " + trace.string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* field : {"peak requested", "peak reserved", "failures        0", "ns per allocate/free",
                            "fragmentation   mean"}) {
    EXPECT_NE(r.out.find(field), std::string::npos) << field << "\n" << r.out;
  }
  r = vgpu("memory replay --json --pool-size 80GB " + trace.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["pool_size"], 80000000000ULL);
  EXPECT_EQ(j["allocations"], j["frees"]);
  EXPECT_GT(j["peak_requested"].get<std::uint64_t>(), 0U);
  std::filesystem::remove(trace);
}

TEST(Cli, MemoryReplayReadsRmmCsvAndRejectsBadTraces) {
  const auto dir = std::filesystem::temp_directory_path();
  const auto csv = dir / ("vgpu-cli-rmm-" + std::to_string(::getpid()) + ".csv");
  std::ofstream(csv) << "Thread,Time,Action,Pointer,Size,Stream\n1,0.1,allocate,0x1000,4096,0x0\n"
                        "1,0.2,allocate,0x2000,8192,0x0\n1,0.3,free,0x1000,4096,0x0\n1,0.4,free,0x2000,8192,0x0\n";
  auto r = vgpu("memory replay --json " + csv.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["allocations"], 2);
  r = vgpu("memory replay --json --backing host " + csv.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["backing"], "host");
  r = vgpu("memory replay --backing gpu " + csv.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'gpu' is not a backing; use host, none or cuda"), std::string::npos) << r.err;
  // No CUDA driver here: a clear error and a non-zero exit, not a crash.
  r = vgpu("memory replay --backing cuda " + csv.string(), "LD_LIBRARY_PATH=/nonexistent");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.out, "");
  EXPECT_NE(r.err.find("vgpu: "), std::string::npos) << r.err;
  std::ofstream(csv) << "not a trace\n";
  r = vgpu("memory replay " + csv.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(":1: unknown trace format"), std::string::npos) << r.err;
  r = vgpu("memory replay /nonexistent/trace.csv");
  EXPECT_EQ(r.exit_code, 2);
  std::filesystem::remove(csv);
}

TEST(Cli, SimulateComparesPoliciesAndTheWholeGpuBaseline) {
  const auto csv = std::filesystem::temp_directory_path() / ("vgpu-cli-jobs-" + std::to_string(::getpid()) + ".csv");
  std::ofstream(csv) << "submit,duration,gpus,gpu_share,memory,priority,group\n"
                        "0,100,1,0.25,,0,a\n0,100,1,0.25,,0,b\n0,100,1,0.25,,0,a\n0,100,1,0.25,,0,b\n";
  auto r = vgpu("simulate --trace " + csv.string() + " --nodes 1 --gpus-per-node 1 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["format"], "csv");
  ASSERT_EQ(j["runs"].size(), 8U) << "4 policies, shared and whole-GPU";
  for (const auto& run : j["runs"]) {
    EXPECT_EQ(run["completed"], 4);
    if (run["whole_gpu"].get<bool>()) {
      EXPECT_DOUBLE_EQ(run["avg_queueing_delay"].get<double>(), 150.0);
    } else {
      EXPECT_DOUBLE_EQ(run["avg_queueing_delay"].get<double>(), 0.0);
    }
  }
  r = vgpu("simulate --trace " + csv.string() + " --nodes 1 --gpus-per-node 1 --policy fair");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* word : {"POLICY", "AVG JCT", "P99 WAIT", "JAIN", "whole GPU", "Sharing vs whole GPU"}) {
    EXPECT_NE(r.out.find(word), std::string::npos) << word << "\n" << r.out;
  }
  r = vgpu("simulate --trace " + csv.string() + " --policy lottery");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'lottery' is not a policy"), std::string::npos) << r.err;
  // NaN passes a plain range check (every comparison with it is false); it once hung the simulator.
  for (const char* scale : {"nan", "inf", "1e999", "-nan"}) {
    r = vgpu("simulate --trace " + csv.string() + " --arrival-scale " + scale);
    EXPECT_EQ(r.exit_code, 2) << scale;
    EXPECT_NE(r.err.find("--arrival-scale"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("is not a finite number"), std::string::npos) << r.err;
  }
  r = vgpu("run --compute nan -- true");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--compute: 'nan' is not a finite number"), std::string::npos) << r.err;
  std::filesystem::remove(csv);
}

TEST(Cli, SimulateFillOnANodeListWritesTheCurveAndThePlot) {
  const auto dir = std::filesystem::temp_directory_path() / ("vgpu-cli-fill-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "nodes.csv") << "sn,cpu_milli,memory_mib,gpu,model\n"
                                      "n-0,96000,393216,8,G2\nn-1,104000,393216,2,T4\nn-2,64000,262144,2,P100\n";
  std::ofstream(dir / "pods.csv") << "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
                                     "deletion_time,scheduled_time\n"
                                     "p-0,12000,16384,1,1000,,LS,Running,0,10,0\np-1,6000,8192,1,500,,LS,Running,0,10,0\n"
                                     "p-2,16000,8192,0,0,,BE,Running,0,10,0\np-3,8000,8192,2,1000,T4,LS,Running,0,10,0\n";
  const std::string common = "simulate --cluster " + (dir / "nodes.csv").string() + " --trace " + (dir / "pods.csv").string() +
                             " --experiment fill --seeds 3";
  auto r = vgpu(common + " --placement all --json --csv " + (dir / "fill.csv").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["gpus"], 12);
  ASSERT_EQ(j["placements"].size(), 4U);
  for (const auto& p : j["placements"]) {
    const double pct = p["unallocated_gpu_pct_at_100"]["mean"].get<double>();
    EXPECT_GE(pct, 0.0);
    EXPECT_LE(pct, 100.0);
    EXPECT_EQ(p["runs"].size(), 3U);
  }
  const std::string curve = apt::vgpu::testing::slurp((dir / "fill.csv").string());
  EXPECT_EQ(curve.rfind("placement,seed,arrived_gpu_pct,allocated_gpu_pct\n", 0), 0U) << curve.substr(0, 200);
  EXPECT_NE(curve.find("\nfgd_stranding,3,"), std::string::npos);
  // The figure, drawn by matplotlib from the CSV: by the script, and by --plot.
  const auto plot = apt::vgpu::testing::run_shell(std::string(VGPU_SOURCE_DIR) + "/scripts/plot-fill " +
                                                  (dir / "fill.csv").string() + " " + (dir / "fill.svg").string());
  EXPECT_EQ(plot.exit_code, 0) << plot.err;
  EXPECT_NE(apt::vgpu::testing::slurp((dir / "fill.svg").string()).find("<svg"), std::string::npos);
  r = vgpu(common + " --placement fgd --plot " + (dir / "direct.svg").string());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(apt::vgpu::testing::slurp((dir / "direct.svg").string()).find("<svg"), std::string::npos);
  // Mistakes are named.
  r = vgpu(common + " --placement best_fit,worst_fit");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'worst_fit' is not one of"), std::string::npos) << r.err;
  // Without --experiment, --cluster is the timed replay's node list: CPU-only pods take part.
  r = vgpu("simulate --cluster " + (dir / "nodes.csv").string() + " --trace " + (dir / "pods.csv").string() +
           " --no-baseline --policy fifo --json");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"cpu_only_jobs\": 1,"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"withdrawn\""), std::string::npos) << r.out;
  r = vgpu("simulate --cluster " + (dir / "pods.csv").string() + " --trace " + (dir / "pods.csv").string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("expected column 1 to be 'sn'"), std::string::npos) << r.err;
  std::filesystem::remove_all(dir);
}

TEST(Cli, SubmitRunsProcessTasksAndReports) {
  auto r = vgpu("submit --backend sim --count 3 --memory 8GB --compute 0.5 -- sh -c 'echo task {i}; exit 0'");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("3 tasks in"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3 succeeded, 0 failed"), std::string::npos) << r.out;
  r = vgpu("submit --backend sim --count 2 -- sh -c 'exit {i}'");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("exit 1"), std::string::npos) << r.out;
  r = vgpu("submit --backend sim --file " + std::string(VGPU_SOURCE_DIR) + "/examples/sweep.yaml --policy fair");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("sweep-lr5"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("policy fair"), std::string::npos) << r.out;
  r = vgpu("submit --backend sim --timeout 200ms -- sleep 5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("timed out"), std::string::npos) << r.out;
}

TEST(Cli, SubmitRejectsBadTaskFiles) {
  const auto bad = std::filesystem::temp_directory_path() / ("vgpu-cli-tasks-" + std::to_string(::getpid()) + ".yaml");
  std::ofstream(bad) << "tasks:\n  - command: [true]\n    memroy: 8GB\n";
  auto r = vgpu("submit --backend sim --file " + bad.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find(":3:5: tasks[0].memroy: unknown key; did you mean 'memory'?"), std::string::npos) << r.err;
  // Ranges, types and non-finite numbers, every problem reported at once with its position.
  std::ofstream(bad) << "tasks:\n  - command: [true]\n  - command: []\n    compute: nan\n    priority: 5000\n"
                        "    timeout: forever\n    count: 0\n    gpu: -1\n    isolation: vm\n";
  r = vgpu("submit --backend sim --file " + bad.string());
  EXPECT_EQ(r.exit_code, 2);
  for (const char* expected : {":3:14: tasks[1].command: expected a non-empty list", ":4:14: tasks[1].compute: expected a number",
                               ":5:15: tasks[1].priority: 5000 is out of range; use -1000..1000",
                               ":6:14: tasks[1].timeout:", ":7:12: tasks[1].count: 0 is out of range",
                               ":8:10: tasks[1].gpu: -1 is out of range", ":9:16: tasks[1].isolation: 'vm' is not valid"}) {
    EXPECT_NE(r.err.find(expected), std::string::npos) << expected << "\n" << r.err;
  }
  std::ofstream(bad) << "tasks:\n  - command: [true]\n    memory: 900GB\n";
  r = vgpu("submit --backend sim --file " + bad.string());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("can never fit"), std::string::npos) << r.err;
  r = vgpu("submit --backend sim");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("nothing to run"), std::string::npos) << r.err;
  r = vgpu("submit --backend sim --timeout soon -- true");
  EXPECT_EQ(r.exit_code, 2);
  std::filesystem::remove(bad);
}

TEST(Cli, QueueShowsTheLiveQueueAndPlacements) {
  const auto r = vgpu("queue --backend sim --max-vgpus 1 --count 2 -- sleep 0.6");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("1 running, 1 queued, 1/1 slices"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("MEMORY USED"), std::string::npos) << r.out;
}

TEST(Cli, MonitorOncePassesPromtoolAndJsonIsParseable) {
  auto r = vgpu("monitor --once --backend sim");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("# TYPE vgpu_gpu_temperature_celsius gauge"), std::string::npos);
  EXPECT_NE(r.out.find("vgpu_monitor_samples_total 1"), std::string::npos);
  if (std::system("command -v promtool >/dev/null 2>&1") == 0) {
    const auto file = std::filesystem::temp_directory_path() / ("vgpu-cli-prom-" + std::to_string(::getpid()) + ".txt");
    std::ofstream(file) << r.out;
    EXPECT_EQ(std::system(("promtool check metrics < " + file.string()).c_str()), 0);
    std::filesystem::remove(file);
  }
  r = vgpu("monitor --json --count 2 --interval 0.01 --metrics utilization,memory --backend sim --sim-gpus 2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);
    EXPECT_EQ(j["gpus"].size(), 2U);
    EXPECT_TRUE(j["gpus"][0]["metrics"]["temperature_celsius"].is_null()) << "not selected";
    EXPECT_FALSE(j["aggregate"]["memory_total_bytes"].is_null());
    ++n;
  }
  EXPECT_EQ(n, 2);
  r = vgpu("monitor --json --metrics fanspeed --backend sim");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("'fanspeed' is not a metric name"), std::string::npos) << r.err;
  r = vgpu("monitor --backend sim");
  EXPECT_EQ(r.exit_code, 2) << "no output chosen";
  r = vgpu("monitor --listen nowhere --backend sim");
  EXPECT_EQ(r.exit_code, 2);
}

TEST(Cli, TopDrawsInTmuxAndQuitsOnQ) {
  if (std::system("command -v tmux >/dev/null 2>&1") != 0) GTEST_SKIP() << "tmux not installed (scripts/bootstrap installs it)";
  const std::string session = "vgpu-top-" + std::to_string(::getpid());
  const std::string start = "tmux new-session -d -s " + session + " -x 200 -y 50 'VGPU_BACKEND=sim " +
                            std::string(VGPU_CLI_PATH) + " top --interval 0.1 --sim-gpus 4'";
  ASSERT_EQ(std::system(start.c_str()), 0);
  std::string screen;
  // Polls the screen until the frame is drawn (up to a minute: the suite must pass on a loaded machine).
  for (int i = 0; i < 600 && screen.find("GPU 3") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    FILE* pipe = ::popen(("tmux capture-pane -p -t " + session).c_str(), "r");
    screen.clear();
    char buffer[512];
    while (pipe != nullptr && std::fgets(buffer, sizeof buffer, pipe) != nullptr) screen += buffer;
    if (pipe != nullptr) ::pclose(pipe);
  }
  EXPECT_NE(screen.find("vgpu top  sim backend, 4 GPUs"), std::string::npos) << screen;
  EXPECT_NE(screen.find("GPU 3"), std::string::npos) << screen;
  EXPECT_NE(screen.find("util ["), std::string::npos) << screen;
  ASSERT_EQ(std::system(("tmux send-keys -t " + session + " q").c_str()), 0);
  bool gone = false;
  for (int i = 0; i < 600 && !gone; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    gone = std::system(("tmux has-session -t " + session + " 2>/dev/null").c_str()) != 0;
  }
  EXPECT_TRUE(gone) << "q quits vgpu top (and with it the tmux session)";
  if (!gone) (void)std::system(("tmux kill-session -t " + session).c_str());
}

}  // namespace
}  // namespace apt::vgpu
