// MpsDaemon: a CUDA MPS control daemon for one GPU, started with
// `nvidia-cuda-mps-control -d` (pipe and log directories under a runtime
// directory) and stopped with its `quit` command when the object goes away.
// VirtualGPU uses one per GPU, shared by the slices running processes there in
// `mps` isolation; clients reach it through CUDA_MPS_PIPE_DIRECTORY and get
// their limits from CUDA_MPS_ACTIVE_THREAD_PERCENTAGE and
// CUDA_MPS_PINNED_DEVICE_MEM_LIMIT.
//
// The control binary is $VGPU_MPS_CONTROL, else nvidia-cuda-mps-control on PATH;
// the runtime directory is $VGPU_RUNTIME_DIR, else $XDG_RUNTIME_DIR/vgpu, else
// /tmp/vgpu-<uid>. Without the binary, starting is a ProcessError saying so.
//
// Thread safety: construct and destroy from one thread; accessors are const.
#pragma once

#include <filesystem>
#include <string>

namespace apt::vgpu::runtime {

class MpsDaemon {
 public:
  // Starts the daemon for the GPU with this UUID; throws ProcessError on failure.
  explicit MpsDaemon(const std::string& gpu_uuid);
  ~MpsDaemon();
  MpsDaemon(const MpsDaemon&) = delete;
  MpsDaemon& operator=(const MpsDaemon&) = delete;

  [[nodiscard]] const std::filesystem::path& pipe_directory() const noexcept { return pipe_dir_; }
  [[nodiscard]] const std::filesystem::path& log_directory() const noexcept { return log_dir_; }

  // The control binary, or empty when there is none.
  [[nodiscard]] static std::string find_control();
  // Where a GPU's pipe and log directories live.
  [[nodiscard]] static std::filesystem::path directory_for(const std::string& gpu_uuid);

 private:
  std::string control_;
  std::string gpu_uuid_;
  std::filesystem::path pipe_dir_;
  std::filesystem::path log_dir_;
};

}  // namespace apt::vgpu::runtime
