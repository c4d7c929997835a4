// The health of one GPU as a backend sees it: healthy, unhealthy (still
// answering but reporting critical errors: XID events, uncorrectable ECC),
// or lost (the driver reports it has fallen off the bus).
//
// Thread safety: a plain value type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::device {

enum class HealthState { healthy, unhealthy, lost };

[[nodiscard]] std::string_view to_string(HealthState state) noexcept;

// How many recent XIDs a GpuHealth lists (a flapping GPU must not grow memory without bound).
inline constexpr std::size_t kRecentXids = 64;

struct GpuHealth {
  HealthState state = HealthState::healthy;
  std::string detail;                                 // why it is not healthy; empty when healthy
  std::vector<std::uint64_t> xid_events;              // the last kRecentXids critical XIDs, oldest first
  std::uint64_t xid_total = 0;                        // critical XIDs seen since the backend opened
  std::optional<std::uint64_t> ecc_uncorrected_errors;  // volatile count; absent without ECC support

  [[nodiscard]] bool usable() const noexcept { return state == HealthState::healthy; }
};

}  // namespace apt::vgpu::device
