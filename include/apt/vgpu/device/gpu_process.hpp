// A process the backend reports as using a GPU.
//
// Thread safety: a plain value type.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace apt::vgpu::device {

struct GpuProcess {
  std::int64_t pid = 0;
  std::string command;                        // from /proc/<pid>/comm when readable, else empty
  std::optional<std::uint64_t> memory_bytes;  // absent when the driver does not say (e.g. MIG without permission)
};

}  // namespace apt::vgpu::device
