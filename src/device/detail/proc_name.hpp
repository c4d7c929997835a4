// Reads a process's command name from /proc/<pid>/comm; empty when unreadable.
#pragma once

#include <cstdint>
#include <string>

namespace apt::vgpu::device::detail {

[[nodiscard]] std::string process_command(std::int64_t pid);

}  // namespace apt::vgpu::device::detail
