// Launch hooks: a pass-through unless the slice has a compute share (then paced,
// see pacing.hpp); no allocation or lock on the path without one. A graph
// launch may also allocate: its memory nodes take memory from the device's
// graph memory pool, which is charged to the slice right after (pools.hpp).
#include "hook_bodies.hpp"
#include "hook_support.hpp"
#include "pacing.hpp"
#include "pools.hpp"

namespace vgpu_cuda {

CUresult do_cuLaunchKernel(CUresult (*real)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                            unsigned, CUstream, void**, void**),
                           CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                           unsigned shared, CUstream s, void** params, void** extra) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.pacing) return real(f, gx, gy, gz, bx, by, bz, shared, s, params, extra);
  return paced(s, [&] { return real(f, gx, gy, gz, bx, by, bz, shared, s, params, extra); });
}

CUresult do_cuLaunchKernelEx(CUresult (*real)(const CUlaunchConfig*, CUfunction, void**, void**),
                             const CUlaunchConfig* config, CUfunction f, void** params, void** extra) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.pacing) return real(config, f, params, extra);
  return paced(config != nullptr ? config->hStream : nullptr, [&] { return real(config, f, params, extra); });
}

CUresult do_cuLaunchCooperativeKernel(CUresult (*real)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                                       unsigned, unsigned, CUstream, void**),
                                      CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                      unsigned bz, unsigned shared, CUstream s, void** params) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  if (!g_config.pacing) return real(f, gx, gy, gz, bx, by, bz, shared, s, params);
  return paced(s, [&] { return real(f, gx, gy, gz, bx, by, bz, shared, s, params); });
}

CUresult do_cuGraphLaunch(CUresult (*real)(CUgraphExec, CUstream), CUgraphExec graph, CUstream s) {
  CUresult rc = CUDA_SUCCESS;
  if (refuse(real, rc)) return rc;
  rc = g_config.pacing ? paced(s, [&] { return real(graph, s); }) : real(graph, s);
  if (rc == CUDA_SUCCESS && g_config.memory_limited) {
    note_graph_launch();
    (void)reconcile_graph_memory(/*trim=*/false);
  }
  return rc;
}

}  // namespace vgpu_cuda
