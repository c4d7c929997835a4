// Choosing and opening a device backend.
//
// BackendKind::automatic tries NVML, then ROCm SMI, then falls back to the
// simulated node with a one-line notice on stderr saying no GPU was found.
// An explicitly named backend that cannot open is an error (DeviceError),
// never a silent fallback.
//
// Thread safety: pure functions; each call opens a new backend.
#pragma once

#include <apt/vgpu/device/backend.hpp>
#include <apt/vgpu/device/sim_config.hpp>

#include <memory>
#include <optional>
#include <string_view>

namespace apt::vgpu::device {

enum class BackendKind { automatic, nvml, rocm, sim };

// "auto" | "nvml" | "rocm" | "sim"; anything else throws InvalidArgument listing them.
[[nodiscard]] BackendKind parse_backend_kind(std::string_view text);
[[nodiscard]] std::string_view to_string(BackendKind kind) noexcept;
// The one reader of VGPU_BACKEND: its kind when set and not empty, else nullopt.
// Throws InvalidArgument naming the variable for an unknown value.
[[nodiscard]] std::optional<BackendKind> backend_from_environment();

[[nodiscard]] std::unique_ptr<Backend> open_backend(BackendKind kind, const SimConfig& sim = {});

}  // namespace apt::vgpu::device
