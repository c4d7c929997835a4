// A minimal leveled logger writing one line per message to stderr, prefixed
// "vgpu: " (or the name given to set_program). The level comes from VGPU_LOG_LEVEL (error|warn|notice|info|debug,
// default notice) read once; set_log_level() overrides it (the CLI's -v/-q).
//
// Thread safety: all functions may be called from any thread; each message is
// written with a single write(2) so lines never interleave.
#pragma once

#include <string_view>

namespace apt::vgpu::log {

enum class Level { error = 0, warn = 1, notice = 2, info = 3, debug = 4 };

void set_level(Level level) noexcept;
// The prefix of every line ("vgpu" unless changed; vgpud sets "vgpud"). Call before threads start.
void set_program(const char* name) noexcept;
[[nodiscard]] Level level() noexcept;
[[nodiscard]] bool enabled(Level level) noexcept;
void write(Level level, std::string_view message) noexcept;

inline void error(std::string_view m) noexcept { write(Level::error, m); }
inline void warn(std::string_view m) noexcept { write(Level::warn, m); }
inline void notice(std::string_view m) noexcept { write(Level::notice, m); }
inline void info(std::string_view m) noexcept { write(Level::info, m); }
inline void debug(std::string_view m) noexcept { write(Level::debug, m); }

}  // namespace apt::vgpu::log
