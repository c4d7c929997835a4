// A loaded profile: where it came from and its validated `vgpu:` section
// (the seed writes `config = load_profile('standard'); config.vgpu`).
//
// Thread safety: a plain value type.
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>

#include <filesystem>
#include <string>

namespace apt::vgpu::config {

struct Config {
  std::string name;              // file stem, e.g. "standard"
  std::filesystem::path source;  // the file it was read from
  VgpuConfig vgpu;
};

// Renders a config as YAML with every default written out (`vgpu profile show`).
[[nodiscard]] std::string to_yaml(const Config& config);

}  // namespace apt::vgpu::config
