// Monitoring benchmarks (docs/benchmarks.md):
//   build/release/bench/monitor_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <apt/vgpu/device/nvml_backend.hpp>
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/monitoring/gpu_monitor.hpp>
#include <apt/vgpu/monitoring/prometheus_exporter.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>

#include <benchmark/benchmark.h>

#include <dlfcn.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <thread>

namespace {

using namespace apt::vgpu;

// One tick of the monitor (all metrics, processes, 8 GPUs); per_device_us = tick / 8.
void BM_SampleTickSim(benchmark::State& state) {
  device::SimBackend sim;
  monitoring::GPUMonitor monitor(sim, 1.0, config::known_metrics());
  for (auto _ : state) benchmark::DoNotOptimize(monitor.sample());
  state.counters["per_device_us"] = benchmark::Counter(static_cast<double>(state.iterations()) * 8,
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_SampleTickSim)->Unit(benchmark::kMicrosecond);

#ifdef FAKE_NVML_PATH
void BM_SampleTickFakeNvml(benchmark::State& state) {
  std::string devices;
  for (int i = 0; i < 8; ++i) {
    devices += fmt::format(R"({}{{"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-{:08d}", "memory_total": 85520809984,
        "memory_used": 1000000000, "utilization_gpu": 50, "temperature": 60, "processes": [{{"pid": {}, "used": 1000}}]}})",
                           i == 0 ? "" : ",", i, 1000 + i);
  }
  void* handle = ::dlopen(FAKE_NVML_PATH, RTLD_NOW);
  auto configure = reinterpret_cast<int (*)(const char*)>(::dlsym(handle, "fake_nvml_configure"));
  configure(fmt::format(R"({{"devices": [{}]}})", devices).c_str());
  device::NvmlBackend nvml(FAKE_NVML_PATH);
  monitoring::GPUMonitor monitor(nvml, 1.0, config::known_metrics());
  for (auto _ : state) benchmark::DoNotOptimize(monitor.sample());
  state.counters["per_device_us"] = benchmark::Counter(static_cast<double>(state.iterations()) * 8,
                                                       benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_SampleTickFakeNvml)->Unit(benchmark::kMicrosecond);
#endif

// Rendering one scrape: 8 GPUs, 32 vGPUs, every metric.
void BM_Scrape8Gpus32Vgpus(benchmark::State& state) {
  device::SimConfig c;
  auto node = std::make_shared<runtime::Node>(std::make_unique<device::SimBackend>(c), runtime::LedgerOptions{64, 1.0});
  std::vector<runtime::VirtualGPU> vgpus;
  for (int i = 0; i < 32; ++i) {
    runtime::VirtualGpuOptions o;
    o.gpu_id = static_cast<std::uint32_t>(i % 8);
    o.memory_limit = 2'000'000'000ULL;
    o.compute_ratio = 0.25;
    vgpus.emplace_back(o, node);
  }
  monitoring::MonitorOptions mo;
  mo.vgpus = [&node] { return node->vgpu_views(); };
  monitoring::GPUMonitor monitor(node->backend(), 1.0, config::known_metrics(), mo);
  const monitoring::NodeStats stats = monitor.sample();
  std::size_t bytes = 0;
  for (auto _ : state) {
    const std::string text = monitoring::render_prometheus(stats, {monitor.active_alerts(), 1});
    bytes = text.size();
    benchmark::DoNotOptimize(text.data());
  }
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(BM_Scrape8Gpus32Vgpus)->Unit(benchmark::kMicrosecond);

double cpu_seconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// CPU the monitor thread uses on 8 simulated GPUs, as a percentage of one core,
// over a fixed wall time (the benchmark thread only sleeps).
void BM_MonitorCpu(benchmark::State& state) {
  const double interval = static_cast<double>(state.range(0)) / 1000.0;
  const auto wall = std::chrono::milliseconds(state.range(1));
  device::SimBackend sim;
  double percent = 0;
  for (auto _ : state) {
    monitoring::GPUMonitor monitor(sim, interval, config::known_metrics());
    const double before = cpu_seconds();
    monitor.start();
    std::this_thread::sleep_for(wall);
    monitor.stop();
    percent = (cpu_seconds() - before) / std::chrono::duration<double>(wall).count() * 100.0;
    state.counters["samples"] = static_cast<double>(monitor.samples_taken());
  }
  state.counters["cpu_percent_of_one_core"] = percent;
}
BENCHMARK(BM_MonitorCpu)->Args({1000, 10000})->Args({10, 3000})->Iterations(1)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
