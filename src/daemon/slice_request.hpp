// The body of POST /v1/slices, validated strictly: a JSON object whose every
// field is known and of the right type and range. A problem is an ApiError
// (invalid_argument) naming the field, the value and what is accepted.
//
//   {"gpu": 0, "memory": "20GB", "compute": 0.5, "priority": 0,
//    "isolation": "intercept", "burst": false, "name": "alice-train",
//    "ttl": "8h", "ephemeral": false, "holder_pid": 1234,
//    "on_behalf_of": {"uid": 1000, "gid": 1000, "pid": 1234, "job_id": "42.0"}}
//
// Every field is optional. memory is a size string ("20GB", "16GiB") or a
// byte count; ttl a duration string ("90s", "8h") or seconds.
//
// Thread safety: plain values and a pure function.
#pragma once

#include <apt/vgpu/config/vgpu_config.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace apt::vgpu::daemon {

struct OnBehalfOf {
  std::uint32_t uid = 0;
  std::optional<std::uint32_t> gid;
  std::optional<std::int64_t> pid;
  std::string job_id;
};

struct SliceRequest {
  std::optional<std::uint32_t> gpu;  // absent: the best-fitting GPU
  std::optional<std::uint64_t> memory;
  std::optional<double> compute;
  int priority = 0;
  std::optional<config::Isolation> isolation;  // absent: the daemon's profile default
  bool burst = false;
  std::string name;
  std::optional<std::chrono::milliseconds> ttl;
  bool ephemeral = false;
  std::optional<std::int64_t> holder_pid;  // ephemeral: whose exit ends it (default: the caller)
  std::optional<OnBehalfOf> on_behalf_of;  // root/admin only
};

[[nodiscard]] SliceRequest parse_slice_request(const nlohmann::json& body);

// Parses a request body as JSON, or throws invalid_argument saying where it broke.
[[nodiscard]] nlohmann::json parse_body(const std::string& body);

// {"pid": N} for POST /v1/slices/{id}/processes; absent pid means the caller.
[[nodiscard]] std::optional<std::int64_t> parse_attach_request(const nlohmann::json& body);

}  // namespace apt::vgpu::daemon
