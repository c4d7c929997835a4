#include "command.hpp"
#include "output.hpp"

#include <apt/vgpu/monitoring/stats_json.hpp>

#include <iostream>

namespace apt::vgpu::cli {
namespace {

class DevicesCommand final : public Command {
 public:
  explicit DevicesCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand("devices", "List the node's physical GPUs with live readings (n/a = not supported)");
    app_->add_flag("--json", json_, "Print JSON (absent readings are null) instead of a table");
  }

  int run() override {
    const auto config = globals_.load_config();
    auto node = globals_.open_node(config);
    auto& backend = node->backend();
    if (json_) {
      nlohmann::json out;
      out["backend"] = std::string(backend.name());
      out["gpus"] = nlohmann::json::array();
      for (const auto& gpu : backend.gpus()) {
        out["gpus"].push_back(monitoring::gpu_json(gpu, backend.metrics(gpu.index), backend.health(gpu.index),
                                       backend.processes(gpu.index)));
      }
      std::cout << out.dump(2) << "\n";
      return 0;
    }
    std::cout << "backend: " << backend.name() << ", " << backend.gpu_count() << " GPU"
              << (backend.gpu_count() == 1 ? "" : "s") << "\n"
              << devices_table(backend);
    return 0;
  }

 private:
  const GlobalOptions& globals_;
  bool json_ = false;
};

}  // namespace

std::unique_ptr<Command> make_devices_command(const GlobalOptions& globals) {
  return std::make_unique<DevicesCommand>(globals);
}

}  // namespace apt::vgpu::cli
