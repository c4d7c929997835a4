// Who is on the other end, and which process is which, from the kernel only:
// SO_PEERCRED/SO_PEERGROUPS of a connection, and (pid, start time, boot id)
// of a process so that a recycled pid is never mistaken for the one we knew
// (start time is field 22 of /proc/<pid>/stat, in clock ticks since boot).
//
// Thread safety: free functions and plain values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace apt::vgpu::daemon {

struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (SO_PEERGROUPS)
};

// Reads the credentials of a connected unix socket; nullopt when the kernel will not say.
[[nodiscard]] std::optional<PeerCredentials> peer_credentials(int fd);

// This boot's id (/proc/sys/kernel/random/boot_id).
[[nodiscard]] const std::string& boot_id();
// A process's start time (clock ticks since boot), or nullopt when it is gone.
[[nodiscard]] std::optional<std::uint64_t> process_start_time(pid_t pid);
// A process's real uid, or nullopt when it is gone.
[[nodiscard]] std::optional<uid_t> process_uid(pid_t pid);

// The user's name, or the decimal uid when it has none (cached for the process's life).
[[nodiscard]] std::string user_name(uid_t uid);
// The same, asking NSS every time.
[[nodiscard]] std::string lookup_user_name(uid_t uid);
// A group's id by name; nullopt when there is no such group.
[[nodiscard]] std::optional<gid_t> group_id(const std::string& name);

// pidfd_open(2): a descriptor that turns readable when the process exits; -1 when it is gone.
[[nodiscard]] int open_pidfd(pid_t pid) noexcept;

}  // namespace apt::vgpu::daemon
