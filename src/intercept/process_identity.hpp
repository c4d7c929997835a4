// Who a process is, for the slice's books: its pid (cached; getpid() is a
// system call), its start time (so a recycled pid is not taken for it) and its
// PID namespace (so a pid from another container is not judged here).
// g_pid is refreshed in forked children by a pthread_atfork handler that
// init() installs; the other functions are thread-safe.
#ifndef APT_VGPU_INTERCEPT_PROCESS_IDENTITY_HPP
#define APT_VGPU_INTERCEPT_PROCESS_IDENTITY_HPP

#include <cstdint>
#include <sys/types.h>

namespace vgpu_cuda {

extern pid_t g_pid;
void refresh_pid();

// A process's start time (clock ticks since boot, /proc/PID/stat field 22), low
// 32 bits; 0 when it cannot be read.
std::uint32_t start_time_of(const char* stat_path);

// The inode of this process's /proc/self/ns/pid; 0 when it cannot be read.
std::uint64_t own_pid_namespace();

// Whether the process a slot names still runs: its pid exists and, when the slot
// knows its start time, it started then (a recycled pid belongs to another process).
// Only meaningful for a pid of this process's own PID namespace.
bool slot_process_alive(std::int32_t pid, std::uint32_t start_time);

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_PROCESS_IDENTITY_HPP
