#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/device/nvml_backend.hpp>
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/monitoring/gpu_monitor.hpp>
#include <apt/vgpu/monitoring/metrics_server.hpp>
#include <apt/vgpu/monitoring/prometheus_exporter.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>
#include <apt/vgpu/runtime/vgpu_scope.hpp>

#include "support/fakes.hpp"

#include <arpa/inet.h>
#include <condition_variable>
#include <mutex>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace apt::vgpu::monitoring {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<runtime::Node> sim_node(std::uint32_t gpus = 2) {
  device::SimConfig c;
  c.gpu_count = gpus;
  return std::make_shared<runtime::Node>(std::make_unique<device::SimBackend>(c), runtime::LedgerOptions{32, 1.0});
}

TEST(Metrics, SeedNamesExpandAndUnknownNamesListTheValidOnes) {
  bool processes = false;
  const auto m = expand_metric_names({"utilization", "memory", "temperature", "processes"}, &processes);
  EXPECT_EQ(m, (std::vector<Metric>{Metric::utilization, Metric::memory_used, Metric::memory_total, Metric::temperature}));
  EXPECT_TRUE(processes);
  try {
    (void)expand_metric_names({"utilisation"});
    FAIL();
  } catch (const InvalidArgument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("utilization, memory, temperature, power"), std::string::npos) << message;
    EXPECT_NE(message.find("did you mean 'utilization'"), std::string::npos) << message;
  }
  EXPECT_EQ(parse_metric("bandwidth"), Metric::memory_bandwidth);
  EXPECT_THROW((void)parse_metric("fan_speed"), InvalidArgument);
}

TEST(History, WindowsAndPercentiles) {
  History h(5);
  const auto t0 = History::Clock::now();
  for (int i = 1; i <= 7; ++i) h.push(t0 + std::chrono::seconds(i), i == 4 ? std::nullopt : std::optional<double>(i * 10));
  EXPECT_EQ(h.size(), 5U) << "bounded";
  const auto now = t0 + 7s;
  // Kept: 3, (4 absent), 5, 6, 7 seconds -> values 30, 50, 60, 70.
  EXPECT_EQ(h.values(0s, now), (std::vector<double>{30, 50, 60, 70}));
  const auto all = *h.stats(0s, now);
  EXPECT_EQ(all.count, 4U);
  EXPECT_EQ(all.min, 30);
  EXPECT_EQ(all.max, 70);
  EXPECT_DOUBLE_EQ(all.avg, 52.5);
  EXPECT_EQ(all.p50, 50);
  EXPECT_EQ(all.last, 70);
  const auto recent = *h.stats(1500ms, now);  // samples at 6 s and 7 s
  EXPECT_EQ(recent.count, 2U);
  EXPECT_EQ(recent.min, 60);
  EXPECT_FALSE(History(3).stats(0s, now).has_value());
}

TEST(GPUMonitor, SamplesOnItsThreadAndNotAfterStop) {
  device::SimBackend sim;
  GPUMonitor monitor(sim, 0.01, {"utilization", "memory"});
  std::mutex m;
  std::condition_variable cv;
  int calls = 0;
  monitor.subscribe([&](const NodeStats& s) {
    EXPECT_EQ(s.gpus.size(), 8U);
    std::lock_guard lock(m);
    ++calls;
    cv.notify_all();
  });
  monitor.start();
  monitor.start();  // no-op
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return calls >= 3; });  // the sampler thread delivers, however slow the machine
  }
  monitor.stop();
  const auto taken = monitor.samples_taken();
  {
    std::lock_guard lock(m);
    EXPECT_EQ(static_cast<std::uint64_t>(calls), taken) << "every sample reached the subscriber";
  }
  monitor.stop();  // safe twice
  EXPECT_EQ(monitor.samples_taken(), taken) << "stop() returned with the thread joined: no samples after it";
  EXPECT_THROW(GPUMonitor(sim, 0.0), InvalidArgument);
  EXPECT_THROW(GPUMonitor(sim, 1.0, {"fan"}), InvalidArgument);
}

TEST(GPUMonitor, OnlySelectedMetricsAreKeptAndAggregatesAreRight) {
  device::SimBackend sim;
  sim.set_load(0, "a", {0.5, 10'000'000'000ULL});
  GPUMonitor monitor(sim, 1.0, {"utilization", "memory"});
  const NodeStats s = monitor.get_current_stats();
  EXPECT_FALSE(s.gpus[0].metrics.temperature_celsius.has_value()) << "not selected";
  EXPECT_NEAR(*s.gpus[0].metrics.utilization_percent, 50.0, 1.0);
  EXPECT_EQ(*s.aggregate.memory_used_bytes, 10'000'000'000ULL);
  EXPECT_EQ(*s.aggregate.memory_total_bytes, 8 * 80'000'000'000ULL);
  EXPECT_NEAR(*s.aggregate.utilization_percent, 50.0 / 8, 0.2) << "mean over GPUs";
  EXPECT_THROW((void)monitor.history("temperature", 0s), InvalidArgument) << "not sampled";
  EXPECT_THROW((void)monitor.history("utilization", 0s, 9), InvalidArgument);
}

TEST(GPUMonitor, HistoryFollowsTheLoad) {
  device::SimBackend sim;
  GPUMonitor monitor(sim, 1.0, {"utilization", "temperature"});
  for (int i = 0; i < 5; ++i) (void)monitor.sample();
  sim.set_load(1, "job", {1.0, 0});
  for (int i = 0; i < 5; ++i) (void)monitor.sample();
  const auto util = *monitor.history("utilization", 0s, 1);
  EXPECT_EQ(util.count, 10U);
  EXPECT_EQ(util.min, 0);
  EXPECT_GE(util.max, 99);
  const auto temperature = monitor.history_values("temperature", 0s, 1);
  ASSERT_EQ(temperature.size(), 10U);
  EXPECT_GT(temperature.back(), temperature.front() + 10) << "the simulated GPU warms under load";
}

TEST(GPUMonitor, AttributesProcessesAndUseToVirtualGpus) {
  auto node = sim_node(2);
  runtime::VirtualGpuOptions o;
  o.gpu_id = 1;
  o.memory_limit = 20'000'000'000ULL;
  o.compute_ratio = 0.5;
  o.name = "trainer";
  runtime::VirtualGPU vgpu(o, node);
  MonitorOptions mo;
  mo.vgpus = [&node] { return node->vgpu_views(); };
  GPUMonitor monitor(node->backend(), 1.0, {"utilization", "memory", "processes"}, mo);
  // The child runs until the test has seen it (no race with a fixed sleep).
  const auto release = std::filesystem::temp_directory_path() / ("vgpu-monitor-release-" + std::to_string(::getpid()));
  std::thread child([&] {
    (void)vgpu.run({"/bin/sh", "-c", "while [ ! -e " + release.string() + " ]; do sleep 0.01; done"});
  });
  NodeStats s;
  while (true) {  // the child shows up once spawned; ctest's timeout bounds a bug here
    s = monitor.sample();
    if (!s.processes.empty()) break;
    std::this_thread::yield();
  }
  // A sample reads a GPU's metrics before its process list, so the one that first lists the child may
  // have read the GPU's use just before run() marked the slice active (it does that before the process
  // appears). The next sample, taken while the child still runs, sees the share for certain.
  const NodeStats running = monitor.sample();
  std::ofstream(release).put('x');
  child.join();
  std::filesystem::remove(release);
  ASSERT_EQ(s.vgpus.size(), 1U);
  const VgpuUsage& v = s.vgpus[0];
  EXPECT_EQ(v.vgpu.name, "trainer");
  EXPECT_EQ(v.vgpu.gpu, 1U);
  EXPECT_EQ(v.vgpu.memory_limit, 20'000'000'000ULL);
  EXPECT_TRUE(v.vgpu.active) << "running a process";
  ASSERT_EQ(v.processes.size(), 1U);
  EXPECT_EQ(v.processes[0].command, "sh");
  ASSERT_EQ(s.processes.size(), 1U);
  EXPECT_EQ(s.processes[0].vgpu, "trainer");
  EXPECT_EQ(s.processes[0].gpu, 1U);
  ASSERT_EQ(running.processes.size(), 1U);
  EXPECT_NEAR(*running.gpus[1].metrics.utilization_percent, 50.0, 1.0) << "the slice's share shows on its GPU";
  // After the child ends the vGPU is idle and the process is gone.
  s = monitor.sample();
  EXPECT_TRUE(s.processes.empty());
  EXPECT_FALSE(s.vgpus[0].vgpu.active);
}

NodeStats one_gpu(double temperature, double memory_percent, device::HealthState health = device::HealthState::healthy) {
  NodeStats s;
  GpuSample g;
  g.gpu_id = 0;
  g.metrics.temperature_celsius = temperature;
  g.metrics.memory_total_bytes = 1000;
  g.metrics.memory_used_bytes = static_cast<std::uint64_t>(memory_percent * 10);
  g.health = health;
  s.gpus.push_back(g);
  return s;
}

TEST(Alerts, HysteresisKeepsAHoveringValueFromFlapping) {
  AlertThresholds t;  // temperature 85 (hysteresis 3), memory 95% (hysteresis 5)
  AlertTracker tracker(t);
  std::vector<AlertEvent> all;
  for (double temperature : {80.0, 86.0, 84.9, 85.5, 84.0, 83.0, 86.0, 81.9, 84.0, 86.0}) {
    for (auto& e : tracker.update(one_gpu(temperature, 50))) all.push_back(e);
  }
  // Raised at 86, cleared only below 82 (81.9), raised again at 86.
  ASSERT_EQ(all.size(), 3U);
  EXPECT_EQ(all[0].state, AlertEvent::State::raised);
  EXPECT_EQ(all[0].kind, "temperature");
  EXPECT_EQ(all[0].value, 86.0);
  EXPECT_EQ(all[1].state, AlertEvent::State::cleared);
  EXPECT_EQ(all[1].value, 81.9);
  EXPECT_EQ(all[2].state, AlertEvent::State::raised);
  EXPECT_EQ(tracker.active().size(), 1U);
}

TEST(Alerts, MemoryLostGpuAndVgpuLimits) {
  AlertTracker tracker(AlertThresholds{});
  auto events = tracker.update(one_gpu(40, 96));
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].kind, "memory");
  EXPECT_TRUE(tracker.update(one_gpu(40, 92)).empty()) << "92% is within the 5-point hysteresis";
  EXPECT_EQ(tracker.update(one_gpu(40, 89)).size(), 1U);
  events = tracker.update(one_gpu(40, 50, device::HealthState::lost));
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].kind, "gpu_lost");
  EXPECT_TRUE(tracker.update(one_gpu(40, 50, device::HealthState::lost)).empty()) << "raised once";
  EXPECT_EQ(tracker.update(one_gpu(40, 50)).at(0).state, AlertEvent::State::cleared);
  NodeStats s = one_gpu(40, 50);
  VgpuUsage v;
  v.vgpu.name = "dev-1";
  v.vgpu.memory_limit = 1000;
  v.memory_used = 990;
  s.vgpus.push_back(v);
  events = tracker.update(s);
  ASSERT_EQ(events.size(), 1U);
  EXPECT_EQ(events[0].kind, "vgpu_memory");
  EXPECT_EQ(events[0].vgpu, "dev-1");
}

TEST(GPUMonitor, AlertCallbacksFireFromSamples) {
  device::SimBackend sim;
  MonitorOptions mo;
  mo.alerts.temperature_celsius = 50;
  GPUMonitor monitor(sim, 1.0, {"temperature"}, mo);
  std::vector<AlertEvent> seen;
  monitor.on_alert([&](const AlertEvent& e) { seen.push_back(e); });
  sim.set_load(3, "hot", {1.0, 0});
  for (int i = 0; i < 20; ++i) (void)monitor.sample();
  ASSERT_EQ(seen.size(), 1U);
  EXPECT_EQ(seen[0].gpu, 3U);
  EXPECT_EQ(seen[0].kind, "temperature");
  sim.set_health(5, device::HealthState::lost, "test");
  (void)monitor.sample();
  ASSERT_EQ(seen.size(), 2U);
  EXPECT_EQ(seen[1].kind, "gpu_lost");
}

std::string run_promtool(const std::string& text) {
  const auto path = std::filesystem::temp_directory_path() / ("vgpu-promtool-" + std::to_string(::getpid()) + ".txt");
  std::ofstream(path) << text;
  const std::string command = "promtool check metrics < " + path.string() + " 2>&1";
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  char buffer[256];
  while (pipe != nullptr && std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  const int status = pipe != nullptr ? ::pclose(pipe) : -1;
  std::filesystem::remove(path);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "ok" : output;
}

bool have_promtool() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

TEST(Exporter, RendersEverythingAndPassesPromtool) {
  auto node = sim_node(8);
  std::vector<runtime::VirtualGPU> vgpus;
  for (int i = 0; i < 32; ++i) {
    runtime::VirtualGpuOptions o;
    o.gpu_id = static_cast<std::uint32_t>(i % 8);
    o.memory_limit = 2'000'000'000ULL;
    o.compute_ratio = 0.25;
    o.name = "vgpu \"q\"-" + std::to_string(i);  // quotes must be escaped in labels
    vgpus.emplace_back(o, node);
  }
  MonitorOptions mo;
  mo.vgpus = [&node] { return node->vgpu_views(); };
  GPUMonitor monitor(node->backend(), 1.0, config::known_metrics(), mo);
  const NodeStats sample = monitor.sample();
  const std::string text = render_prometheus(sample, {monitor.active_alerts(), monitor.samples_taken()});
  for (const char* needle : {"# TYPE vgpu_gpu_utilization_ratio gauge", "vgpu_gpu_memory_total_bytes{gpu=\"7\"",
                             "vgpu_gpu_temperature_celsius", "vgpu_gpu_sm_clock_hertz", "vgpu_gpu_healthy",
                             "vgpu_vgpu_memory_limit_bytes{vgpu=\"vgpu \\\"q\\\"-31\",gpu=\"7\"",
                             "vgpu_vgpu_compute_share_ratio", "vgpu_monitor_samples_total 1", "vgpu_alert_active"}) {
    EXPECT_NE(text.find(needle), std::string::npos) << needle;
  }
  if (!have_promtool()) GTEST_SKIP() << "promtool not installed (scripts/bootstrap installs it)";
  EXPECT_EQ(run_promtool(text), "ok");
}

TEST(Exporter, AbsentReadingsAreLeftOutNotZero) {
  testing::configure_nvml(R"({"devices": [{"name": "NVIDIA A10", "uuid": "GPU-a10", "memory_total": 24000000000,
      "memory_used": 1000, "errors": {"nvmlDeviceGetTemperature": "NOT_SUPPORTED", "nvmlDeviceGetPowerUsage": "NOT_SUPPORTED"},
      "processes": [{"pid": 4242, "used": 1000}]}]})");
  device::NvmlBackend nvml(FAKE_NVML_PATH);
  GPUMonitor monitor(nvml, 1.0, config::known_metrics());
  const std::string text = render_prometheus(monitor.sample());
  EXPECT_EQ(text.find("vgpu_gpu_temperature_celsius"), std::string::npos);
  EXPECT_EQ(text.find("vgpu_gpu_power_watts"), std::string::npos);
  EXPECT_NE(text.find("vgpu_gpu_power_limit_watts"), std::string::npos);
  EXPECT_NE(text.find("vgpu_process_memory_used_bytes{gpu=\"0\",uuid=\"GPU-a10\",name=\"NVIDIA A10\",pid=\"4242\""),
            std::string::npos)
      << text;
  if (have_promtool()) {
    EXPECT_EQ(run_promtool(text), "ok");
  }
}

std::string http_get(std::uint16_t port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return "connect failed";
  }
  (void)::send(fd, request.data(), request.size(), 0);
  std::string response;
  char buffer[4096];
  ssize_t n = 0;
  while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) response.append(buffer, static_cast<std::size_t>(n));
  ::close(fd);
  return response;
}

TEST(MetricsServer, ServesMetricsOverHttp) {
  device::SimBackend sim;
  GPUMonitor monitor(sim, 0.05, config::known_metrics());
  monitor.start();
  MetricsServer server("127.0.0.1:0", [&](const HttpRequest& req) {
    if (req.path == "/metrics") {
      return HttpResponse{200, "text/plain; version=0.0.4", render_prometheus(monitor.get_current_stats())};
    }
    return HttpResponse{404, "application/json", R"({"error": {"code": 404}})"};
  });
  ASSERT_NE(server.port(), 0);
  const std::string ok = http_get(server.port(), "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(ok.rfind("HTTP/1.1 200 OK\r\n", 0), 0U) << ok.substr(0, 200);
  EXPECT_NE(ok.find("Content-Type: text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(ok.find("vgpu_gpu_memory_total_bytes"), std::string::npos);
  EXPECT_EQ(http_get(server.port(), "GET /nope HTTP/1.1\r\n\r\n").rfind("HTTP/1.1 404", 0), 0U);
  EXPECT_EQ(http_get(server.port(), "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n").rfind("HTTP/1.1 405", 0), 0U);
  EXPECT_EQ(http_get(server.port(), "garbage\r\n\r\n").rfind("HTTP/1.1 400", 0), 0U);
  server.stop();
  monitor.stop();
  EXPECT_EQ(http_get(server.port(), "GET /metrics HTTP/1.1\r\n\r\n"), "connect failed");
  EXPECT_THROW(MetricsServer("localhost", [](const HttpRequest&) { return HttpResponse{}; }), InvalidArgument);
  EXPECT_THROW(MetricsServer("999.1.1.1:80", [](const HttpRequest&) { return HttpResponse{}; }), InvalidArgument);
}

}  // namespace
}  // namespace apt::vgpu::monitoring
