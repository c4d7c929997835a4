#include "process_identity.hpp"

#include <fstream>
#include <map>
#include <mutex>
#include <grp.h>
#include <pwd.h>
#include <sstream>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace apt::vgpu::daemon {

std::optional<PeerCredentials> peer_credentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::nullopt;
  PeerCredentials peer{cred.pid, cred.uid, cred.gid, {}};
  std::vector<gid_t> groups(64);
  socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) != 0 && errno == ERANGE) {
    groups.resize(glen / sizeof(gid_t) + 1);
    glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) != 0) glen = 0;
  }
  groups.resize(glen / sizeof(gid_t));
  peer.groups = std::move(groups);
  return peer;
}

const std::string& boot_id() {
  static const std::string id = [] {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string text;
    std::getline(in, text);
    return text;
  }();
  return id;
}

std::optional<std::uint64_t> process_start_time(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  if (!std::getline(in, text)) return std::nullopt;
  // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
  const auto close = text.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(text.substr(close + 2));
  std::string field;
  // Fields 3..21 come before starttime (field 22).
  for (int i = 3; i <= 21; ++i) {
    if (!(rest >> field)) return std::nullopt;
  }
  std::uint64_t start = 0;
  if (!(rest >> start)) return std::nullopt;
  return start;
}

std::optional<uid_t> process_uid(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Uid:", 0) == 0) {
      std::istringstream fields(line.substr(4));
      unsigned long real = 0;
      if (fields >> real) return static_cast<uid_t>(real);
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::string user_name(uid_t uid) {
  // Every slice in every answer names its owner: keep the answers of NSS (which may read
  // /etc/passwd, or ask LDAP) for the daemon's life. A renamed user shows the old name until a restart.
  static std::mutex mutex;
  static std::map<uid_t, std::string> names;
  {
    std::lock_guard lock(mutex);
    if (auto it = names.find(uid); it != names.end()) return it->second;
  }
  std::string name = lookup_user_name(uid);
  std::lock_guard lock(mutex);
  return names.emplace(uid, std::move(name)).first->second;
}

std::string lookup_user_name(uid_t uid) {
  passwd pw{};
  passwd* result = nullptr;
  std::vector<char> buffer(4096);
  if (::getpwuid_r(uid, &pw, buffer.data(), buffer.size(), &result) == 0 && result != nullptr) return pw.pw_name;
  return std::to_string(uid);
}

std::optional<gid_t> group_id(const std::string& name) {
  group gr{};
  group* result = nullptr;
  std::vector<char> buffer(16384);
  if (::getgrnam_r(name.c_str(), &gr, buffer.data(), buffer.size(), &result) == 0 && result != nullptr) return gr.gr_gid;
  return std::nullopt;
}

int open_pidfd(pid_t pid) noexcept {
  const long fd = ::syscall(SYS_pidfd_open, pid, 0);
  return fd < 0 ? -1 : static_cast<int>(fd);
}

}  // namespace apt::vgpu::daemon
