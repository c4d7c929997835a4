#include <apt/vgpu/common/duration.hpp>
#include <apt/vgpu/config/daemon_config.hpp>

#include "detail/yaml_reader.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace apt::vgpu::config {
namespace {

using detail::Reader;

const std::vector<std::string> kTopKeys{"vgpu", "daemon"};
const std::vector<std::string> kDaemonKeys{"socket",         "state_dir",     "socket_mode",     "socket_group",
                                           "admin_group",    "metrics_listen", "max_connections", "max_event_subscribers",
                                           "request_timeout", "max_body",     "limits",          "synchronous"};
const std::vector<std::string> kLimitsKeys{"default", "users"};
const std::vector<std::string> kLimitKeys{"slices", "memory", "compute"};

void read_limits(Reader& r, const YAML::Node& node, const std::string& path, UserLimits& out) {
  if (!r.check_map(node, path, kLimitKeys)) return;
  r.read_optional_int(node, path, "slices", 0, 1'000'000, out.slices);
  r.read_size(node, path, "memory", true, out.memory_bytes);
  r.read_optional_double(node, path, "compute", 0.0, 65536.0, false, out.compute);
}

void read_daemon(Reader& r, const YAML::Node& node, DaemonSection& out) {
  const std::string path = "daemon";
  if (!r.check_map(node, path, kDaemonKeys)) return;
  r.read_string(node, path, "socket", out.socket);
  if (const YAML::Node n = node["socket"]; n && out.socket.size() >= 108) {
    r.issue(n.Mark(), "daemon.socket", fmt::format("'{}' is {} bytes; a unix socket path must be under 108", out.socket,
                                                   out.socket.size()));
  }
  std::string state_dir;
  r.read_string(node, path, "state_dir", state_dir);
  if (!state_dir.empty()) out.state_dir = state_dir;
  if (const YAML::Node n = node["socket_mode"]) {
    // An octal mode such as "0660"; YAML would read a bare 0660 as decimal 660.
    const std::string text = n.IsScalar() ? n.Scalar() : std::string{};
    char* end = nullptr;
    const unsigned long mode = text.empty() ? 0 : std::strtoul(text.c_str(), &end, 8);
    if (text.empty() || end == nullptr || *end != '\0' || mode > 0777 || text.size() < 3) {
      r.issue(n.Mark(), "daemon.socket_mode",
              fmt::format("expected an octal mode such as \"0666\" or \"0660\" (quoted), got {}", Reader::describe(n)));
    } else {
      out.socket_mode = static_cast<std::uint32_t>(mode);
    }
  }
  r.read_string(node, path, "socket_group", out.socket_group);
  r.read_string(node, path, "admin_group", out.admin_group);
  r.read_string(node, path, "metrics_listen", out.metrics_listen);
  r.read_int(node, path, "max_connections", 1, 100'000, out.max_connections);
  r.read_int(node, path, "max_event_subscribers", 0, 10'000, out.max_event_subscribers);
  std::optional<std::chrono::milliseconds> request_timeout;
  r.read_duration(node, path, "request_timeout", std::chrono::milliseconds(10), std::chrono::hours(1), request_timeout);
  if (request_timeout) out.request_timeout = *request_timeout;
  std::optional<std::uint64_t> max_body;
  r.read_size(node, path, "max_body", false, max_body);
  if (max_body) {
    if (*max_body < 1024 || *max_body > 64ULL * 1024 * 1024) {
      r.issue(node["max_body"].Mark(), "daemon.max_body", fmt::format("{} bytes is out of range; use 1KiB..64MiB", *max_body));
    } else {
      out.max_body = *max_body;
    }
  }
  r.read_enum(node, path, "synchronous", {"full", "normal"}, out.synchronous);
  if (const YAML::Node limits = node["limits"]) {
    if (r.check_map(limits, "daemon.limits", kLimitsKeys)) {
      if (const YAML::Node d = limits["default"]) read_limits(r, d, "daemon.limits.default", out.default_limits);
      if (const YAML::Node users = limits["users"]; users && !users.IsNull()) {
        if (!users.IsMap()) {
          r.issue(users.Mark(), "daemon.limits.users",
                  fmt::format("expected a mapping of user name or uid to limits, got {}", Reader::describe(users)));
        } else {
          for (const auto& entry : users) {
            const std::string who = entry.first.Scalar();
            UserLimits limits_for_user;
            read_limits(r, entry.second, "daemon.limits.users." + who, limits_for_user);
            out.user_limits[who] = limits_for_user;
          }
        }
      }
    }
  }
}

}  // namespace

DaemonConfig parse_daemon_config(std::string_view yaml_text, const std::string& file) {
  Reader reader(file);
  const YAML::Node root = reader.load(yaml_text);
  DaemonConfig config;
  config.source = file;
  if (root && !root.IsNull() && reader.check_map(root, "", kTopKeys)) {
    if (const YAML::Node vgpu = root["vgpu"]) detail::read_vgpu(reader, vgpu, config.vgpu);
    if (const YAML::Node daemon = root["daemon"]) read_daemon(reader, daemon, config.daemon);
  }
  if (!reader.issues().empty()) throw ConfigError(std::move(reader.issues()));
  return config;
}

DaemonConfig load_daemon_config(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) {
    throw ConfigError(fmt::format("{}: cannot read the daemon config: {}; give an existing file to --config",
                                  file.string(), std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse_daemon_config(text.str(), file.string());
}

}  // namespace apt::vgpu::config
