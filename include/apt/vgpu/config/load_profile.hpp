// Finding, reading and validating YAML profiles.
//
// load_profile(name_or_path) accepts a path to a file, or a profile name that
// is searched, in order, in: $VGPU_PROFILE_PATH (colon-separated folders),
// ./profiles, <executable>/../share/apt-vgpu/profiles, and the installed
// share folder. Unknown keys, wrong types and out-of-range values are
// ConfigErrors naming file, line and key, with the nearest valid key for a
// likely typo.
//
// Thread safety: reentrant; reads the environment and the file system.
#pragma once

#include <apt/vgpu/config/config.hpp>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::config {

[[nodiscard]] Config load_profile(std::string_view name_or_path);
// Validates YAML text; `file` only names it in messages.
[[nodiscard]] Config parse_profile(std::string_view yaml_text, const std::string& file, const std::string& name);
// The one reader of VGPU_PROFILE: the profile the environment names, if set and not empty.
[[nodiscard]] std::optional<std::string> profile_from_environment();
// The folders searched for profile names, in order.
[[nodiscard]] std::vector<std::filesystem::path> profile_search_path();
// Profile names found on the search path (first occurrence wins), sorted.
[[nodiscard]] std::vector<std::string> available_profiles();

}  // namespace apt::vgpu::config
