// vgpu: the Virtual Blackwell command line.
#include "command.hpp"

#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/config/load_profile.hpp>
#include <apt/vgpu/device/backend_factory.hpp>
#include <apt/vgpu/runtime/daemon_client.hpp>

#include <fmt/format.h>

#include <cstdlib>
#include <iostream>

namespace apt::vgpu::cli {

config::Config GlobalOptions::load_config() const {
  if (!profile.empty()) return config::load_profile(profile);
  if (const auto named = config::profile_from_environment()) return config::load_profile(*named);
  config::Config defaults;
  defaults.name = "defaults";
  return defaults;
}

std::shared_ptr<runtime::Node> GlobalOptions::open_node(const config::Config& config) const {
  config::VgpuConfig vgpu = config.vgpu;
  std::optional<device::BackendKind> kind;
  if (!backend.empty()) {
    kind = device::parse_backend_kind(backend);
  } else {
    kind = device::backend_from_environment();
  }
  if (!sim_gpus.empty()) runtime::Node::apply_sim_shape(vgpu, sim_gpus);  // wins over profile and VGPU_SIM_GPUS
  return runtime::Node::open(vgpu, kind);
}

std::optional<std::string> GlobalOptions::daemon_socket() const {
  auto path = runtime::DaemonClient::find_daemon_socket(socket);
  if (!path) {
    log::notice(fmt::format("no vgpud at {}; running embedded (this process keeps its own ledger)",
                            runtime::kDefaultDaemonSocket));
  }
  return path;
}

}  // namespace apt::vgpu::cli

int main(int argc, char** argv) {
  using namespace apt::vgpu;
  cli::GlobalOptions globals;
  CLI::App app{"vgpu: Virtual Blackwell, GPU virtualization and sharing.\n"
               "Exit codes: 0 ok, 1 run-time failure, 2 usage or configuration error; "
               "'vgpu run' exits with its command's code."};
  app.name("vgpu");
  app.require_subcommand(1);
  app.fallthrough();
  app.set_version_flag("--version", "vgpu 0.1.0");
  app.add_option("--backend", globals.backend, "Device backend: auto (nvml, then rocm, then sim) | nvml | rocm | sim")
      ->check(CLI::IsMember({"auto", "nvml", "rocm", "sim"}))
      ->envname("VGPU_BACKEND");
  app.add_option("--profile", globals.profile, "Profile name or YAML path (default: $VGPU_PROFILE or built-in defaults)");
  app.add_option("--sim-gpus", globals.sim_gpus,
                 "Simulated node shape COUNT[xMEMORY][:NAME], e.g. 4x40GB (default 8x80GB; env VGPU_SIM_GPUS)");
  app.add_option("--socket", globals.socket,
                 "vgpud's API socket (default: $VGPU_SOCKET, else /run/vgpu/vgpud.sock when it exists; without a "
                 "daemon, commands run embedded)");
  app.add_flag("-v,--verbose", globals.verbose, "Log more (same as VGPU_LOG_LEVEL=debug)");
  app.add_flag("-q,--quiet", globals.quiet, "Log errors only");

  std::vector<std::unique_ptr<cli::Command>> commands;
  commands.push_back(cli::make_devices_command(globals));
  commands.push_back(cli::make_profile_command(globals));
  commands.push_back(cli::make_create_command(globals));
  commands.push_back(cli::make_run_command(globals));
  commands.push_back(cli::make_list_command(globals));
  commands.push_back(cli::make_delete_command(globals));
  commands.push_back(cli::make_demo_command(globals));
  commands.push_back(cli::make_memory_command(globals));
  commands.push_back(cli::make_simulate_command(globals));
  commands.push_back(cli::make_submit_command(globals));
  commands.push_back(cli::make_queue_command(globals));
  commands.push_back(cli::make_monitor_command(globals));
  commands.push_back(cli::make_top_command(globals));
  for (auto& command : commands) command->attach(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    return 2;
  }
  if (globals.verbose) log::set_level(log::Level::debug);
  if (globals.quiet) log::set_level(log::Level::error);

  try {
    for (auto& command : commands) {
      if (command->chosen()) return command->run();
    }
  } catch (const Error& e) {
    std::cerr << "vgpu: error: " << e.what() << "\n";
    return e.is_usage_error() ? 2 : 1;
  } catch (const std::exception& e) {
    std::cerr << "vgpu: error: " << e.what() << "\n";
    return 1;
  }
  return 2;
}
