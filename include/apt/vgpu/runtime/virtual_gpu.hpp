// VirtualGPU: one slice of one physical GPU (memory limit, compute share) as
// a user holds it. Constructing one leases the slice from its Node's ledger
// (throwing CapacityError when it does not fit); the last copy of a
// VirtualGPU to be destroyed returns the slice. Copies share the same slice.
//
//   auto vgpu = create_vgpu(0, "20GB", 0.5);
//   {
//     VgpuScope scope(vgpu);            // the seed's `with vgpu:`
//     model.to(vgpu.device());          // "cuda:0" (or "sim:0" on the simulated node)
//   }
//   int status = vgpu.run({"python3", "train.py"});  // child bound to the slice
//
// Fault handling: entering or running checks the GPU's health. With
// auto_recover, a lease on a lost or unhealthy GPU moves to fallback_gpu (or
// any healthy GPU with room), the move is logged and kept in recoveries().
// Without it, the use fails with DeviceError.
//
// Thread safety: all methods are safe to call concurrently on copies of the
// same VirtualGPU; entering it from several threads at once is allowed.
#pragma once

#include <apt/vgpu/runtime/lease.hpp>
#include <apt/vgpu/runtime/node.hpp>
#include <apt/vgpu/runtime/run_options.hpp>
#include <apt/vgpu/runtime/virtual_gpu_options.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace apt::vgpu::runtime {

struct Recovery {
  std::uint32_t from_gpu = 0;
  std::uint32_t to_gpu = 0;
  std::string reason;
  std::chrono::system_clock::time_point when;
};

class VirtualGPU {
 public:
  explicit VirtualGPU(VirtualGpuOptions options, std::shared_ptr<Node> node = Node::default_node());

  // The seed's VirtualGPU.from_config(config.vgpu): the profile's virtual_gpu
  // defaults and isolation, on `node` (the default node when null).
  [[nodiscard]] static VirtualGPU from_config(const config::VgpuConfig& config, std::shared_ptr<Node> node = nullptr);

  [[nodiscard]] const std::string& name() const noexcept;
  [[nodiscard]] std::uint32_t gpu_id() const;  // the physical GPU now (changes after a recovery)
  [[nodiscard]] std::string device() const;    // "cuda:N" / "sim:N"
  [[nodiscard]] const VirtualGpuOptions& options() const noexcept;
  [[nodiscard]] LeaseInfo lease() const;
  [[nodiscard]] std::vector<Recovery> recoveries() const;
  [[nodiscard]] Node& node() const noexcept;

  // Checks the GPU's health and recovers (or throws DeviceError) as above.
  void ensure_healthy();

  // Variables that bind a child process to this slice (see intercept/abi.h).
  [[nodiscard]] std::map<std::string, std::string> environment() const;

  // Runs argv[0] (searched on PATH) with environment() added to this
  // process's environment, waits, and returns its exit code (128 + signal
  // number when it was killed by a signal, as shells report it). Throws
  // ProcessError when it cannot be started, DeviceError on an unusable GPU.
  int run(const std::vector<std::string>& argv);
  // The same with output capture, a timeout and a stop flag (see RunOptions).
  RunResult run(const std::vector<std::string>& argv, const RunOptions& options);

  // Where libvgpu-cuda.so is: $VGPU_INTERCEPT_LIBRARY, else next to the
  // executable (../lib, ., ../src/intercept), else the install libdir. Empty when not found.
  [[nodiscard]] static std::string find_intercept_library();

  struct Impl;

 private:
  friend class VgpuScope;
  explicit VirtualGPU(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  friend std::optional<VirtualGPU> current_vgpu();
  std::shared_ptr<Impl> impl_;
};

// The seed's create_vgpu(physical_gpu_id, memory_limit, compute_ratio).
// memory_limit is a size string ("20GB", "16GiB"); compute_ratio in (0, 1].
[[nodiscard]] VirtualGPU create_vgpu(std::uint32_t physical_gpu_id, std::string_view memory_limit,
                                     std::optional<double> compute_ratio = std::nullopt,
                                     VirtualGpuOptions extra = {}, std::shared_ptr<Node> node = nullptr);

// The calling thread's current virtual GPU (innermost VgpuScope), if any.
[[nodiscard]] std::optional<VirtualGPU> current_vgpu();

}  // namespace apt::vgpu::runtime
