// Named failpoints for crash tests (after SQLite's and moby's test practice):
// VGPU_FAILPOINT=<name>:abort makes the daemon abort() when it reaches the
// named step, so a test can check that a restart recovers from a crash there.
// Steps: after_region_create (before a grant's commit), after_grant_commit (before
// its reply), after_release_commit (before a released region is unlinked).
//
// Thread safety: the variable is read once.
#pragma once

#include <string_view>

namespace apt::vgpu::daemon {

void failpoint(std::string_view name) noexcept;

}  // namespace apt::vgpu::daemon
