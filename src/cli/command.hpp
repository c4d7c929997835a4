// The vgpu CLI: one class per subcommand. Each registers its options on a
// CLI11 subcommand and runs when chosen; run() returns the exit code
// (0 ok, 1 run-time failure, 2 usage/config error). Exceptions thrown by
// run() are mapped to those codes in main.cpp.
#pragma once

#include <apt/vgpu/config/config.hpp>
#include <apt/vgpu/runtime/node.hpp>

#include <CLI/CLI.hpp>

#include <cmath>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace apt::vgpu::cli {

// Options every subcommand accepts (before or after the subcommand name).
struct GlobalOptions {
  std::string backend;   // empty: the profile's (default auto)
  std::string profile;   // empty: $VGPU_PROFILE or built-in defaults
  std::string sim_gpus;  // COUNT[xMEMORY][:NAME] for the simulated node
  std::string socket;    // vgpud's socket (--socket); empty: $VGPU_SOCKET, then the default path
  bool verbose = false;
  bool quiet = false;

  // The selected profile (or built-in defaults when none is named).
  [[nodiscard]] config::Config load_config() const;
  // A node for `config`, honouring --backend and --sim-gpus.
  [[nodiscard]] std::shared_ptr<runtime::Node> open_node(const config::Config& config) const;
  // vgpud's socket when a daemon serves this node; nullopt means "run embedded"
  // (after a one-line notice naming what was looked for).
  [[nodiscard]] std::optional<std::string> daemon_socket() const;
};

class Command {
 public:
  virtual ~Command() = default;
  Command() = default;
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;

  // Adds this command as a subcommand of `parent`.
  virtual void attach(CLI::App& parent) = 0;
  [[nodiscard]] virtual int run() = 0;
  [[nodiscard]] bool chosen() const { return app_ != nullptr && app_->parsed(); }

 protected:
  CLI::App* app_ = nullptr;
};

std::unique_ptr<Command> make_devices_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_profile_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_create_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_run_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_list_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_delete_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_demo_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_memory_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_simulate_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_submit_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_queue_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_monitor_command(const GlobalOptions& globals);
std::unique_ptr<Command> make_top_command(const GlobalOptions& globals);

// The check for every numeric option: CLI::Range alone lets NaN through (each
// comparison with NaN is false, so `--arrival-scale nan` once hung the simulator),
// so this one also refuses nan and inf, naming the value and the range.
inline CLI::Validator in_range(double min, double max) {
  CLI::Validator finite(
      [](std::string& text) -> std::string {
        double value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return {};  // not a number: the type check reports it
        return std::isfinite(value) ? std::string{} : "'" + text + "' is not a finite number";
      },
      "FINITE");
  return finite & CLI::Range(min, max);
}

}  // namespace apt::vgpu::cli
