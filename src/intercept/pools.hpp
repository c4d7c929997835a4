// Memory the driver keeps in pools on the process's behalf, beyond the blocks it
// has handed out: stream-ordered pools (cuMemAllocAsync and friends) keep freed
// blocks up to their release threshold, and the graph memory pool keeps what
// CUDA graphs' memory nodes allocated at cuGraphLaunch. Both stay charged to the
// slice until the driver is seen to hold less; both functions below bring the
// charge in line with what the driver reserves (trimming first when `trim`) and
// return the bytes given back. Thread-safe.
#ifndef APT_VGPU_INTERCEPT_POOLS_HPP
#define APT_VGPU_INTERCEPT_POOLS_HPP

#include <cstdint>

namespace vgpu_cuda {

std::uint64_t reconcile_pools(bool trim);
std::uint64_t reconcile_graph_memory(bool trim);

// A graph was launched on the current device: its graph memory pool is read from now on.
void note_graph_launch();

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_POOLS_HPP
