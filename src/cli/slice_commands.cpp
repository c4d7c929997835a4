#include "command.hpp"
#include "output.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>

#include <fmt/format.h>
#include <iostream>

namespace apt::vgpu::cli {
namespace {

// The slice flags shared by `create` and `run`; flags left out come from the
// profile's vgpu.virtual_gpu section.
struct SliceFlags {
  std::optional<std::uint32_t> gpu;
  std::string memory;
  std::optional<double> compute;
  std::optional<int> priority;
  std::string isolation;
  bool auto_recover = false;
  std::optional<std::uint32_t> fallback_gpu;
  bool burst = false;
  std::string name;

  void attach(CLI::App& app) {
    app.add_option("--gpu", gpu, "Physical GPU index (default: the profile's virtual_gpu.gpu, 0)");
    app.add_option("--memory", memory, "Memory limit, e.g. 20GB (SI) or 16GiB (binary); default: none");
    app.add_option("--compute", compute, "Compute share in (0, 1], e.g. 0.5; default: none")
        ->check(CLI::Range(0.0, 1.0));
    app.add_option("--priority", priority, "Priority (higher first); default 0");
    app.add_option("--isolation", isolation, "none | intercept | mps (default: the profile's)")
        ->check(CLI::IsMember({"none", "intercept", "mps"}));
    app.add_flag("--auto-recover", auto_recover, "Move to a healthy GPU when this one is lost or unhealthy");
    app.add_option("--fallback-gpu", fallback_gpu, "GPU to move to first on failure (with --auto-recover)");
    app.add_flag("--burst", burst, "Allow use of idle compute beyond the share (enforced by libvgpu-cuda.so)");
    app.add_option("--name", name, "Label for the slice (default vgpu-<lease id>)");
  }

  [[nodiscard]] runtime::VirtualGpuOptions resolve(const config::Config& config) const {
    auto o = runtime::VirtualGpuOptions::from_config(config.vgpu);
    if (gpu) o.gpu_id = *gpu;
    if (!memory.empty()) o.memory_limit = parse_size(memory, "--memory");
    if (compute) {
      if (*compute <= 0.0) throw InvalidArgument("--compute: 0 gives the slice no compute; use a share in (0, 1], e.g. 0.25");
      o.compute_ratio = *compute;
    }
    if (priority) o.priority = *priority;
    if (!isolation.empty()) o.isolation = config::parse_isolation(isolation);
    if (auto_recover) o.auto_recover = true;
    if (fallback_gpu) o.fallback_gpu = *fallback_gpu;
    o.burst = burst;
    o.name = name;
    return o;
  }
};

std::string describe(const runtime::VirtualGPU& vgpu) {
  const auto& o = vgpu.options();
  return fmt::format("{} on GPU {} ({}): memory {}, compute {}, priority {}, isolation {}{}", vgpu.name(),
                     vgpu.gpu_id(), vgpu.device(), o.memory_limit ? format_size(*o.memory_limit) : "unlimited",
                     o.compute_ratio ? fmt::format("{:.2f}", *o.compute_ratio) : "unlimited", o.priority,
                     config::to_string(o.isolation),
                     o.auto_recover ? fmt::format(", auto_recover (fallback {})",
                                                  o.fallback_gpu ? std::to_string(*o.fallback_gpu) : "any")
                                    : "");
}

class CreateCommand final : public Command {
 public:
  explicit CreateCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand(
        "create", "Carve a slice and show it with the environment that binds a process to it (the lease ends when "
                  "this command exits; use 'vgpu run' to run work on a slice)");
    flags_.attach(*app_);
    app_->add_flag("--json", json_, "Print JSON");
  }

  int run() override {
    const auto config = globals_.load_config();
    auto node = globals_.open_node(config);
    runtime::VirtualGPU vgpu(flags_.resolve(config), node);
    const auto env = vgpu.environment();
    const bool missing_intercept =
        vgpu.options().isolation == config::Isolation::intercept && env.count("LD_PRELOAD") == 0;
    if (json_) {
      const auto lease = vgpu.lease();
      nlohmann::json out;
      out["name"] = vgpu.name();
      out["gpu"] = lease.gpu;
      out["device"] = vgpu.device();
      out["memory_limit_bytes"] = vgpu.options().memory_limit ? nlohmann::json(*vgpu.options().memory_limit) : nullptr;
      out["compute_ratio"] = vgpu.options().compute_ratio ? nlohmann::json(*vgpu.options().compute_ratio) : nullptr;
      out["priority"] = vgpu.options().priority;
      out["isolation"] = std::string(config::to_string(vgpu.options().isolation));
      out["environment"] = env;
      std::cout << out.dump(2) << "\n";
    } else {
      std::cout << describe(vgpu) << "\n\n" << capacity_table(node->ledger()) << "\nenvironment:\n";
      for (const auto& [key, value] : env) std::cout << "  " << key << "=" << value << "\n";
    }
    if (missing_intercept) {
      log::warn("isolation 'intercept' needs libvgpu-cuda.so, which was not found (set VGPU_INTERCEPT_LIBRARY); "
                "'vgpu run' will refuse to start work on this slice until it is");
    }
    return 0;
  }

 private:
  const GlobalOptions& globals_;
  SliceFlags flags_;
  bool json_ = false;
};

class RunCommand final : public Command {
 public:
  explicit RunCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand("run",
                                 "Run a command bound to a new slice; exits with the command's exit code "
                                 "(128+N when killed by signal N, 127 when it cannot start)");
    flags_.attach(*app_);
    app_->add_option("command", command_, "The command and its arguments, after --")->required();
  }

  int run() override {
    const auto config = globals_.load_config();
    auto node = globals_.open_node(config);
    runtime::VirtualGPU vgpu(flags_.resolve(config), node);
    log::info(describe(vgpu));
    try {
      return vgpu.run(command_);
    } catch (const ProcessError& e) {
      log::error(e.what());
      return 127;
    }
  }

 private:
  const GlobalOptions& globals_;
  SliceFlags flags_;
  std::vector<std::string> command_;
};

}  // namespace

std::unique_ptr<Command> make_create_command(const GlobalOptions& globals) {
  return std::make_unique<CreateCommand>(globals);
}
std::unique_ptr<Command> make_run_command(const GlobalOptions& globals) {
  return std::make_unique<RunCommand>(globals);
}

}  // namespace apt::vgpu::cli
