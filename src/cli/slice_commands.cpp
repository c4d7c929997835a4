#include "command.hpp"
#include "output.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/common/duration.hpp>
#include <apt/vgpu/runtime/daemon_client.hpp>
#include <apt/vgpu/runtime/run_process.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>

#include <atomic>
#include <csignal>
#include <fmt/format.h>
#include <iostream>

namespace apt::vgpu::cli {
namespace {

// The slice flags shared by `create` and `run`; flags left out come from the
// profile's vgpu.virtual_gpu section.
struct SliceFlags {
  std::optional<std::uint32_t> gpu;
  std::optional<std::string> memory;  // set, even to "", only when --memory is given
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
        ->check(in_range(0.0, 1.0));
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
    // `--memory ""` is a mistake, not "unlimited": parse_size names it.
    if (memory) o.memory_limit = parse_size(*memory, "--memory");
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

  // The same request for vgpud. Without --gpu the daemon picks the best-fitting
  // GPU; without --isolation the daemon's configured mode applies.
  [[nodiscard]] runtime::SliceSpec to_spec(const config::Config& config) const {
    runtime::SliceSpec spec = runtime::SliceSpec::from_options(resolve(config));
    spec.gpu = gpu;
    if (isolation.empty()) spec.isolation.reset();
    if (auto_recover || fallback_gpu) {
      log::warn("--auto-recover/--fallback-gpu are not used with vgpud yet: the daemon keeps a slice on its GPU");
    }
    return spec;
  }
};

// Stops the child the way a shell would when vgpu itself is asked to stop:
// SIGINT, SIGTERM or SIGHUP to vgpu become SIGTERM (then SIGKILL) to the child.
std::atomic<bool> g_stop{false};
extern "C" void request_stop(int) { g_stop.store(true); }

runtime::RunOptions forwarding_signals() {
  struct sigaction action {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &action, nullptr);
  runtime::RunOptions options;
  options.stop = &g_stop;
  return options;
}

std::string describe(const runtime::SliceInfo& s) {
  return fmt::format("{} ({}) on GPU {} ({}): memory {}, compute {}, priority {}, isolation {}{}", s.id, s.name, s.gpu,
                     s.device, s.memory_limit ? format_size(*s.memory_limit) : "unlimited",
                     s.compute_share ? fmt::format("{:.2f}", *s.compute_share) : "unlimited", s.priority, s.isolation,
                     s.ephemeral ? ", ephemeral" : "");
}

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
        "create", "Create a slice. With vgpud: a named slice that lasts until 'vgpu delete' or its --ttl; prints its "
                  "id (with --json, the slice). Without a daemon: shows the slice and the environment that binds a "
                  "process to it, and the lease ends when this command exits");
    flags_.attach(*app_);
    app_->add_option("--ttl", ttl_, "With vgpud: delete the slice after this long, e.g. 8h, 90m, 1d");
    app_->add_flag("--json", json_, "Print JSON");
  }

  int run() override {
    const auto config = globals_.load_config();
    if (const auto socket = globals_.daemon_socket()) {
      runtime::SliceSpec spec = flags_.to_spec(config);
      if (!ttl_.empty()) spec.ttl = parse_duration(ttl_, "--ttl");
      const runtime::SliceInfo slice = runtime::DaemonClient(*socket).create(spec);
      if (json_) {
        std::cout << nlohmann::json::parse(slice.json).dump(2) << "\n";
      } else {
        std::cout << slice.id << "\n";
        log::info(describe(slice));
      }
      return 0;
    }
    if (!ttl_.empty()) throw InvalidArgument("--ttl needs vgpud (a slice without a daemon ends with this command)");
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
  std::string ttl_;
  bool json_ = false;
};

class RunCommand final : public Command {
 public:
  explicit RunCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand("run",
                                 "Run a command bound to a slice: a new one (ended when the command ends) or, with "
                                 "--slice, one made by 'vgpu create'. Exits with the command's exit code (128+N when "
                                 "killed by signal N, 127 when it cannot start); SIGINT/SIGTERM/SIGHUP stop it");
    flags_.attach(*app_);
    app_->add_option("--slice", slice_, "Join this existing slice (vgpud) instead of creating one");
    app_->add_option("command", command_, "The command and its arguments, after --")->required();
  }

  int run() override {
    const auto config = globals_.load_config();
    if (const auto socket = globals_.daemon_socket()) return run_with_daemon(config, *socket);
    if (!slice_.empty()) throw InvalidArgument("--slice needs vgpud: without a daemon there are no shared slices to join");
    auto node = globals_.open_node(config);
    runtime::VirtualGPU vgpu(flags_.resolve(config), node);
    log::info(describe(vgpu));
    try {
      return vgpu.run(command_, forwarding_signals()).exit_code;
    } catch (const ProcessError& e) {
      log::error(e.what());
      return 127;
    }
  }

 private:
  int run_with_daemon(const config::Config& config, const std::string& socket) {
    const runtime::DaemonClient client(socket);
    runtime::SliceInfo slice;
    const bool ephemeral = slice_.empty();
    if (ephemeral) {
      // Held by this process: if vgpu dies, even by SIGKILL, the daemon ends the slice.
      runtime::SliceSpec spec = flags_.to_spec(config);
      spec.ephemeral = true;
      slice = client.create(spec);
    } else {
      if (app_->count("--memory") + app_->count("--compute") + app_->count("--gpu") + app_->count("--isolation") > 0) {
        throw InvalidArgument("--slice joins an existing slice as it is; drop --gpu/--memory/--compute/--isolation");
      }
      slice = client.get(slice_);
    }
    log::info(describe(slice));
    const auto env = slice.environment_here();
    if (slice.isolation == "intercept" && env.count("LD_PRELOAD") == 0) {
      if (ephemeral) client.remove(slice.id);
      log::error("isolation 'intercept' needs libvgpu-cuda.so and it was not found (set VGPU_INTERCEPT_LIBRARY)");
      return 127;
    }
    runtime::RunOptions options = forwarding_signals();
    options.on_start = [&](pid_t pid) { (void)client.attach(slice.id, pid); };
    int code = 127;
    try {
      code = runtime::run_process(command_, env, options).exit_code;
    } catch (const ProcessError& e) {
      log::error(e.what());
    }
    if (ephemeral) {
      try {
        client.remove(slice.id);
      } catch (const runtime::DaemonError& e) {
        if (e.status() != 404) log::warn(e.what());  // 404: the daemon released it already
      }
    }
    return code;
  }

  const GlobalOptions& globals_;
  SliceFlags flags_;
  std::string slice_;
  std::vector<std::string> command_;
};

class ListCommand final : public Command {
 public:
  explicit ListCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand("list", "List your slices on vgpud (--all: every user's; root and the admin group)");
    app_->add_flag("--all", all_, "Every user's slices (root and the daemon's admin group only)");
    app_->add_flag("--json", json_, "Print JSON (an array of slices)");
  }

  int run() override {
    const auto socket = globals_.daemon_socket();
    if (!socket) throw InvalidArgument("list needs vgpud: without a daemon, slices live only as long as their command");
    const auto slices = runtime::DaemonClient(*socket).list(all_);
    if (json_) {
      nlohmann::json out = nlohmann::json::array();
      for (const auto& s : slices) out.push_back(nlohmann::json::parse(s.json));
      std::cout << out.dump(2) << "\n";
      return 0;
    }
    Table table({"ID", "NAME", "USER", "GPU", "MEMORY", "COMPUTE", "ISOLATION", "PROCS", "KIND"});
    for (const auto& s : slices) {
      table.add({s.id, s.name, s.owner, std::to_string(s.gpu), s.memory_limit ? format_size(*s.memory_limit) : "-",
                 s.compute_share ? fmt::format("{:.2f}", *s.compute_share) : "-", s.isolation,
                 std::to_string(s.processes.size()),
                 s.ephemeral ? "ephemeral" : s.expires_at_ms ? "named, ttl" : "named"});
    }
    std::cout << table.render();
    return 0;
  }

 private:
  const GlobalOptions& globals_;
  bool all_ = false;
  bool json_ = false;
};

class DeleteCommand final : public Command {
 public:
  explicit DeleteCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand("delete", "Delete slices on vgpud by id (yours; root and the admin group: any)");
    app_->add_option("id", ids_, "Slice ids (from 'vgpu create' or 'vgpu list')")->required();
  }

  int run() override {
    const auto socket = globals_.daemon_socket();
    if (!socket) throw InvalidArgument("delete needs vgpud: without a daemon there are no lasting slices");
    const runtime::DaemonClient client(*socket);
    int failed = 0;
    for (const auto& id : ids_) {
      try {
        client.remove(id);
        std::cout << id << "\n";
      } catch (const Error& e) {
        std::cerr << "vgpu: error: " << e.what() << "\n";
        ++failed;
      }
    }
    return failed == 0 ? 0 : 1;
  }

 private:
  const GlobalOptions& globals_;
  std::vector<std::string> ids_;
};

}  // namespace

std::unique_ptr<Command> make_create_command(const GlobalOptions& globals) {
  return std::make_unique<CreateCommand>(globals);
}
std::unique_ptr<Command> make_run_command(const GlobalOptions& globals) {
  return std::make_unique<RunCommand>(globals);
}
std::unique_ptr<Command> make_list_command(const GlobalOptions& globals) {
  return std::make_unique<ListCommand>(globals);
}
std::unique_ptr<Command> make_delete_command(const GlobalOptions& globals) {
  return std::make_unique<DeleteCommand>(globals);
}

}  // namespace apt::vgpu::cli
