// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET ("@" means
// the abstract namespace). A no-op when the variable is unset. Used for
// READY=1 once the API listens, STOPPING=1 on shutdown, RELOADING=1 on SIGHUP.
#pragma once

#include <string_view>

namespace apt::vgpu::daemon {

void notify_systemd(std::string_view state) noexcept;

}  // namespace apt::vgpu::daemon
