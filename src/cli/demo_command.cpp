#include "command.hpp"
#include "output.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>
#include <apt/vgpu/runtime/vgpu_scope.hpp>

#include <chrono>
#include <cmath>
#include <fmt/format.h>
#include <iostream>
#include <thread>

namespace apt::vgpu::cli {
namespace {

using runtime::VirtualGPU;
using runtime::VirtualGpuOptions;

// A CPU stand-in for a training step, so the demo's tasks do real work.
double busy_work(std::chrono::milliseconds duration) {
  const auto end = std::chrono::steady_clock::now() + duration;
  double acc = 0.0;
  for (long i = 1; std::chrono::steady_clock::now() < end; ++i) acc += std::sin(static_cast<double>(i)) / static_cast<double>(i);
  return acc;
}

class DemoCommand final : public Command {
 public:
  explicit DemoCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand("demo",
                                 "Tour: show the GPUs, carve virtual GPUs from a profile, run tasks on them, "
                                 "and show a refused over-commit and fault recovery (simulated node)");
  }

  int run() override {
    auto config = globals_.load_config();
    auto node = globals_.open_node(config);
    auto& backend = node->backend();
    std::cout << fmt::format("== 1. The node ({} backend)\n", backend.name()) << devices_table(backend) << "\n";

    std::cout << fmt::format("== 2. Profile '{}' ({}): max_virtual_gpus {}, scheduling {}, oversubscription {}\n\n",
                             config.name, config.source.empty() ? "built-in defaults" : config.source.string(),
                             config.vgpu.max_virtual_gpus, config.vgpu.scheduling, config.vgpu.oversubscription);
    if (backend.gpu_count() < 2) {
      std::cout << "The demo needs at least 2 GPUs; this node has " << backend.gpu_count()
                << ". Try: vgpu demo --backend sim\n";
      return 1;
    }
    const std::uint64_t gpu0 = backend.gpu(0).memory_total;
    // Scenario 2 of the seed: training and inference share GPU 0 (75% / 25% of its memory).
    auto slice = [&](std::uint32_t gpu, std::uint64_t memory, std::optional<double> compute, const char* name) {
      VirtualGpuOptions o = VirtualGpuOptions::from_config(config.vgpu);
      o.gpu_id = gpu;
      o.memory_limit = memory;
      o.compute_ratio = compute;
      o.name = name;
      // The demo's child is a shell, not a CUDA program, so it runs with accounting-only
      // isolation; enforcement inside CUDA programs is shown in docs/intercept.md.
      o.isolation = config::Isolation::none;
      return VirtualGPU(o, node);
    };
    std::cout << "== 3. Carving virtual GPUs\n";
    VirtualGPU training = slice(0, gpu0 / 4 * 3, 0.8, "training");
    VirtualGPU inference = slice(0, gpu0 / 4, 0.2, "inference");
    const std::uint64_t gpu1 = backend.gpu(1).memory_total;
    VirtualGPU dev_a = slice(1, gpu1 / 4, std::nullopt, "dev-a");
    VirtualGPU dev_b = slice(1, gpu1 / 4, std::nullopt, "dev-b");
    for (const VirtualGPU* v : {&training, &inference, &dev_a, &dev_b}) {
      std::cout << fmt::format("  {:<10} {:<7} memory {:>8}  compute {}\n", v->name(), v->device(),
                               format_size(*v->options().memory_limit),
                               v->options().compute_ratio ? fmt::format("{:.2f}", *v->options().compute_ratio)
                                                          : "shared");
    }
    std::cout << "\n" << capacity_table(node->ledger()) << "\n";

    std::cout << "== 4. Refusing an over-commit\n";
    try {
      (void)slice(0, gpu0 / 10, 0.1, "one-too-many");
      std::cout << "  unexpected: the slice was granted\n";
      return 1;
    } catch (const CapacityError& e) {
      std::cout << "  refused: " << e.what() << "\n\n";
    }

    std::cout << "== 5. Running tasks on the slices\n";
    std::vector<std::thread> workers;
    std::vector<std::string> lines(3);
    const VirtualGPU* task_vgpus[] = {&training, &inference, &dev_a};
    for (int i = 0; i < 3; ++i) {
      workers.emplace_back([&, i] {
        runtime::VgpuScope scope(*task_vgpus[i]);
        const auto current = runtime::current_vgpu();
        const auto start = std::chrono::steady_clock::now();
        const double result = busy_work(std::chrono::milliseconds(400));
        const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
        lines[static_cast<std::size_t>(i)] = fmt::format("  task {} ran in {} on {} for {} ms (result {:.4f})", i,
                                                         current->name(), current->device(), ms.count(), result);
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::cout << "  while the tasks run:\n";
    for (std::uint32_t g = 0; g < 2; ++g) {
      const auto m = backend.metrics(g);
      std::cout << fmt::format("    GPU {}: utilization {}, memory {} / {}\n", g, or_na(m.utilization_percent, "%"),
                               m.memory_used_bytes ? format_size(*m.memory_used_bytes) : "n/a",
                               format_size(backend.gpu(g).memory_total));
    }
    for (auto& w : workers) w.join();
    for (const auto& line : lines) std::cout << line << "\n";
    std::cout << "  a child process bound to 'inference':\n" << std::flush;
    const int status = inference.run(
        {"/bin/sh", "-c",
         "echo \"    child $$: CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES VGPU_ID=$VGPU_ID "
         "VGPU_MEMORY_LIMIT=$VGPU_MEMORY_LIMIT VGPU_COMPUTE_SHARE=$VGPU_COMPUTE_SHARE\""});
    std::cout << "  child exited with status " << status << "\n\n";

    std::cout << "== 6. Fault handling\n";
    auto* sim = backend.simulator();
    if (sim == nullptr) {
      std::cout << "  skipped: GPU failures are only injected on the simulated node (--backend sim)\n";
    } else {
      VirtualGpuOptions o = VirtualGpuOptions::from_config(config.vgpu);
      o.gpu_id = 1;
      o.memory_limit = gpu1 / 8;
      o.auto_recover = true;
      o.fallback_gpu = 2;
      o.isolation = config::Isolation::none;
      o.name = "resilient";
      VirtualGPU resilient(o, node);
      sim->set_health(1, device::HealthState::lost, "injected by vgpu demo");
      std::cout << "  GPU 1 marked lost\n";
      try {
        runtime::VgpuScope scope(dev_b);
      } catch (const DeviceError& e) {
        std::cout << "  dev-b (no auto_recover): " << e.what() << "\n";
      }
      runtime::VgpuScope scope(resilient);
      for (const auto& r : resilient.recoveries()) {
        std::cout << fmt::format("  resilient (auto_recover, fallback 2): moved GPU {} -> GPU {}; now {}\n", r.from_gpu,
                                 r.to_gpu, resilient.device());
      }
      sim->set_health(1, device::HealthState::healthy);
    }
    std::cout << "\nDone: " << node->ledger().active_slices()
              << " slices still leased; they are returned when the demo exits.\n";
    return 0;
  }

 private:
  const GlobalOptions& globals_;
};

}  // namespace

std::unique_ptr<Command> make_demo_command(const GlobalOptions& globals) {
  return std::make_unique<DemoCommand>(globals);
}

}  // namespace apt::vgpu::cli
