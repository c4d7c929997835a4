#include "command.hpp"

#include <apt/vgpu/common/suggest.hpp>
#include <apt/vgpu/config/config_error.hpp>
#include <apt/vgpu/config/load_profile.hpp>

#include <iostream>

namespace apt::vgpu::cli {
namespace {

class ProfileCommand final : public Command {
 public:
  explicit ProfileCommand(const GlobalOptions& globals) : globals_(globals) {}

  void attach(CLI::App& parent) override {
    app_ = parent.add_subcommand("profile", "Show, validate or list YAML profiles");
    app_->require_subcommand(1);
    show_ = app_->add_subcommand("show", "Print a profile with every default filled in");
    show_->add_option("profile", show_target_, "Profile name (searched) or path to a YAML file")->required();
    validate_ = app_->add_subcommand("validate", "Check profiles; print every problem with file:line:column and key");
    validate_->add_option("profiles", validate_targets_, "Profile names or paths")->required();
    list_ = app_->add_subcommand("list", "List profile names found on the search path, and the search path");
  }

  int run() override {
    if (show_->parsed()) {
      std::cout << config::to_yaml(config::load_profile(show_target_));
      return 0;
    }
    if (validate_->parsed()) {
      int failures = 0;
      for (const std::string& target : validate_targets_) {
        try {
          const auto config = config::load_profile(target);
          std::cout << config.source.string() << ": ok\n";
        } catch (const config::ConfigError& e) {
          std::cerr << e.what() << "\n";
          ++failures;
        }
      }
      return failures == 0 ? 0 : 2;
    }
    std::cout << "profiles: " << join(config::available_profiles()) << "\nsearch path:\n";
    for (const auto& dir : config::profile_search_path()) std::cout << "  " << dir.string() << "\n";
    return 0;
  }

 private:
  const GlobalOptions& globals_;
  CLI::App* show_ = nullptr;
  CLI::App* validate_ = nullptr;
  CLI::App* list_ = nullptr;
  std::string show_target_;
  std::vector<std::string> validate_targets_;
};

}  // namespace

std::unique_ptr<Command> make_profile_command(const GlobalOptions& globals) {
  return std::make_unique<ProfileCommand>(globals);
}

}  // namespace apt::vgpu::cli
