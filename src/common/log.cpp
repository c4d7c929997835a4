#include <apt/vgpu/common/log.hpp>

#include <atomic>
#include <cstdlib>
#include <string>
#include <string_view>
#include <unistd.h>

namespace apt::vgpu::log {
namespace {

Level level_from_env() noexcept {
  const char* env = std::getenv("VGPU_LOG_LEVEL");
  if (env == nullptr) return Level::notice;
  const std::string_view v(env);
  if (v == "error") return Level::error;
  if (v == "warn" || v == "warning") return Level::warn;
  if (v == "info") return Level::info;
  if (v == "debug") return Level::debug;
  return Level::notice;
}

std::atomic<int>& current() noexcept {
  static std::atomic<int> value{static_cast<int>(level_from_env())};
  return value;
}

const char* g_program = "vgpu";

}  // namespace

void set_program(const char* name) noexcept { g_program = name; }

void set_level(Level l) noexcept { current().store(static_cast<int>(l), std::memory_order_relaxed); }
Level level() noexcept { return static_cast<Level>(current().load(std::memory_order_relaxed)); }
bool enabled(Level l) noexcept { return static_cast<int>(l) <= current().load(std::memory_order_relaxed); }

void write(Level l, std::string_view message) noexcept {
  if (!enabled(l)) return;
  static constexpr std::string_view kTags[] = {"error: ", "warning: ", "", "", "debug: "};
  try {
    std::string line = g_program;
    line += ": ";
    line += kTags[static_cast<int>(l)];
    line += message;
    line += '\n';
    [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
  } catch (...) {
    // Logging must never throw; a message lost to allocation failure is acceptable.
  }
}

}  // namespace apt::vgpu::log
