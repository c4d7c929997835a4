// Uses the installed headers and library: the seed's create_vgpu on the
// simulated node, and a typed error for bad input.
#include <apt/vgpu/common/error.hpp>
#include <apt/vgpu/common/size.hpp>
#include <apt/vgpu/device/sim_backend.hpp>
#include <apt/vgpu/runtime/virtual_gpu.hpp>

#include <iostream>
#include <memory>

int main() {
  using namespace apt::vgpu;
  auto node = std::make_shared<runtime::Node>(std::make_unique<device::SimBackend>(), runtime::LedgerOptions{});
  runtime::VirtualGPU vgpu = runtime::create_vgpu(0, "20GB", 0.5, {}, node);
  std::cout << vgpu.device() << " " << format_size(*vgpu.options().memory_limit) << "\n";
  try {
    (void)parse_size("twenty", "memory");
    return 1;
  } catch (const InvalidArgument&) {
  }
  return vgpu.device() == "sim:0" ? 0 : 1;
}
