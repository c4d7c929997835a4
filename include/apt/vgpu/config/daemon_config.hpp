// The configuration of vgpud, the node daemon: a YAML file in the profile
// style, with the profile's `vgpu:` section (GPU backend, simulated node,
// max_virtual_gpus, oversubscription, isolation, monitoring ...) and a
// `daemon:` section of its own:
//
//   daemon:
//     socket: /run/vgpu/vgpud.sock      # the API's unix socket
//     state_dir: /var/lib/vgpu          # ledger.db lives here
//     socket_mode: "0666"               # every request is authorized by peer uid
//     socket_group: vgpu                # optional chgrp of the socket
//     admin_group: vgpu-admin           # members act on every user's slices
//     metrics_listen: 127.0.0.1:9400    # /metrics (Prometheus); port 0 picks one
//     max_connections: 64               # requests queued or served at once; more get 429
//     max_event_subscribers: 8          # long polls on /v1/events at once
//     request_timeout: 5s               # a client slower than this is cut off
//     max_body: 64KiB                   # larger request bodies get 413
//     synchronous: full                 # ledger.db: full (power-loss safe) | normal (crash safe)
//     limits:                           # per-user caps (a request over one gets 403)
//       default: {slices: 16, memory: 80GB, compute: 2.0}
//       users:
//         alice: {slices: 4}
//         "1001": {memory: 40GB}
//
// Every key is optional; command-line flags override the file. Unknown keys,
// wrong types and out-of-range values are ConfigErrors naming file, line and
// dotted key, as for profiles.
//
// Thread safety: plain value types; the parser is reentrant.
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace apt::vgpu::config {

// A cap on what one user may hold at once; absent fields are not capped.
struct UserLimits {
  std::optional<std::uint32_t> slices;
  std::optional<std::uint64_t> memory_bytes;
  std::optional<double> compute;  // sum of compute shares, e.g. 2.0 = two whole GPUs
};

struct DaemonSection {
  std::string socket = "/run/vgpu/vgpud.sock";
  std::filesystem::path state_dir = "/var/lib/vgpu";
  std::uint32_t socket_mode = 0666;
  std::string socket_group;  // empty: leave the group as created
  std::string admin_group;   // empty: only root administers
  std::string metrics_listen = "127.0.0.1:9400";
  std::uint32_t max_connections = 64;
  std::uint32_t max_event_subscribers = 8;
  std::chrono::milliseconds request_timeout{5000};
  std::uint64_t max_body = 64 * 1024;
  // SQLite's synchronous mode for ledger.db: "full" (default) makes every
  // acknowledged grant survive power loss; "normal" survives a crash of vgpud
  // or kill -9 but not of the machine, and saves an fsync per commit.
  std::string synchronous = "full";
  UserLimits default_limits;
  std::map<std::string, UserLimits> user_limits;  // by user name or decimal uid
};

struct DaemonConfig {
  std::filesystem::path source;  // empty when built-in defaults
  VgpuConfig vgpu;
  DaemonSection daemon;
};

[[nodiscard]] DaemonConfig parse_daemon_config(std::string_view yaml_text, const std::string& file);
[[nodiscard]] DaemonConfig load_daemon_config(const std::filesystem::path& file);

}  // namespace apt::vgpu::config
