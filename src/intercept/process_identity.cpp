// See process_identity.hpp.
#include "process_identity.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vgpu_cuda {

pid_t g_pid = ::getpid();
void refresh_pid() { g_pid = ::getpid(); }

std::uint32_t start_time_of(const char* stat_path) {
  const int fd = ::open(stat_path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[1024];
  const ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (n <= 0) return 0;
  text[n] = '\0';
  const char* p = std::strrchr(text, ')');  // the command may hold spaces and parentheses
  if (p == nullptr) return 0;
  // Fields after ")": state is field 3, starttime field 22.
  for (int field = 3; field <= 22 && p != nullptr; ++field) p = std::strchr(p + 1, ' ');  // p: the space before it
  if (p == nullptr) return 0;
  return static_cast<std::uint32_t>(std::strtoull(p + 1, nullptr, 10));
}

std::uint64_t own_pid_namespace() {
  struct stat st {};
  if (::stat("/proc/self/ns/pid", &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.st_ino);
}

bool slot_process_alive(std::int32_t pid, std::uint32_t start_time) {
  if (::kill(pid, 0) != 0 && errno == ESRCH) return false;
  if (start_time == 0) return true;  // being claimed, or written by a process that could not tell
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/stat", static_cast<int>(pid));
  const std::uint32_t now = start_time_of(path);
  return now == 0 || now == start_time;  // unreadable: assume alive
}

}  // namespace vgpu_cuda
