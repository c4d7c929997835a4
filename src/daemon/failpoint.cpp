#include "failpoint.hpp"

#include <cstdlib>
#include <string>

namespace apt::vgpu::daemon {

void failpoint(std::string_view name) noexcept {
  static const std::string armed = [] {
    const char* env = std::getenv("VGPU_FAILPOINT");
    return env == nullptr ? std::string{} : std::string(env);
  }();
  if (armed.empty()) return;
  if (armed.size() == name.size() + 6 && armed.compare(0, name.size(), name) == 0 &&
      armed.compare(name.size(), 6, ":abort") == 0) {
    std::abort();
  }
}

}  // namespace apt::vgpu::daemon
