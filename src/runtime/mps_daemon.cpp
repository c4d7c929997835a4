#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/log.hpp>
#include <apt/vgpu/runtime/mps_daemon.hpp>

#include "detail/spawn.hpp"

#include <cstdlib>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace apt::vgpu::runtime {
namespace {

namespace fs = std::filesystem;

std::string tail_of(const fs::path& file) {
  std::ifstream in(file);
  std::stringstream text;
  text << in.rdbuf();
  std::string s = text.str();
  return s.size() > 300 ? s.substr(s.size() - 300) : s;
}

}  // namespace

std::string MpsDaemon::find_control() {
  if (const char* env = std::getenv("VGPU_MPS_CONTROL"); env != nullptr && *env != '\0') {
    return ::access(env, X_OK) == 0 ? std::string(env) : std::string{};
  }
  const char* path = std::getenv("PATH");
  std::string_view dirs = path != nullptr ? path : "/usr/bin:/bin";
  while (!dirs.empty()) {
    const auto colon = dirs.find(':');
    const fs::path candidate = fs::path(dirs.substr(0, colon)) / "nvidia-cuda-mps-control";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
    dirs = colon == std::string_view::npos ? std::string_view{} : dirs.substr(colon + 1);
  }
  return {};
}

fs::path MpsDaemon::directory_for(const std::string& gpu_uuid) {
  fs::path base;
  if (const char* env = std::getenv("VGPU_RUNTIME_DIR"); env != nullptr && *env != '\0') {
    base = env;
  } else if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    base = fs::path(xdg) / "vgpu";
  } else {
    base = fs::path("/tmp") / fmt::format("vgpu-{}", ::getuid());
  }
  return base / "mps" / gpu_uuid;
}

MpsDaemon::MpsDaemon(const std::string& gpu_uuid) : control_(find_control()), gpu_uuid_(gpu_uuid) {
  if (control_.empty()) {
    throw ProcessError(
        "isolation 'mps' needs nvidia-cuda-mps-control (part of the NVIDIA driver) and it was not found on PATH "
        "(or at VGPU_MPS_CONTROL); install the driver's MPS tools, or use isolation intercept or none");
  }
  const fs::path dir = directory_for(gpu_uuid);
  pipe_dir_ = dir / "pipe";
  log_dir_ = dir / "log";
  std::error_code ec;
  fs::create_directories(pipe_dir_, ec);
  fs::create_directories(log_dir_, ec);
  if (ec) throw ProcessError(fmt::format("cannot create MPS directories under {}: {}", dir.string(), ec.message()));
  const std::map<std::string, std::string> env{{"CUDA_VISIBLE_DEVICES", gpu_uuid},
                                               {"CUDA_MPS_PIPE_DIRECTORY", pipe_dir_.string()},
                                               {"CUDA_MPS_LOG_DIRECTORY", log_dir_.string()}};
  const int status = detail::wait_for(detail::spawn({control_, "-d"}, env).pid);
  if (status != 0) {
    throw ProcessError(fmt::format("'{} -d' failed with exit code {} for GPU {}; its log ends: {}", control_, status,
                                   gpu_uuid, tail_of(log_dir_ / "control.log")));
  }
  log::info(fmt::format("MPS control daemon started for {} (pipes in {})", gpu_uuid, pipe_dir_.string()));
}

MpsDaemon::~MpsDaemon() {
  try {
    const std::map<std::string, std::string> env{{"CUDA_MPS_PIPE_DIRECTORY", pipe_dir_.string()},
                                                 {"CUDA_MPS_LOG_DIRECTORY", log_dir_.string()}};
    const int status =
        detail::wait_for(detail::spawn({"/bin/sh", "-c", "echo quit | exec \"$0\"", control_}, env).pid);
    if (status != 0) log::warn(fmt::format("stopping the MPS daemon for {} exited with {}", gpu_uuid_, status));
  } catch (const std::exception& e) {
    log::warn(fmt::format("stopping the MPS daemon for {}: {}", gpu_uuid_, e.what()));
  }
}

}  // namespace apt::vgpu::runtime
