// The body of every hook, declared once from VGPU_CUDA_HOOKS: do_X(real, args...)
// does X's work given the real function to forward to (the plain or the _ptsz
// one), so both exported forms share it. Defined by concern: memory_hooks.cpp,
// pool_hooks.cpp, vmm_hooks.cpp, context_hooks.cpp, launch_hooks.cpp.
#ifndef APT_VGPU_INTERCEPT_HOOK_BODIES_HPP
#define APT_VGPU_INTERCEPT_HOOK_BODIES_HPP

#include "cuda_driver_api.h"

namespace vgpu_cuda {

#define VGPU_UNPACK(...) __VA_ARGS__
#define VGPU_DECLARE_BODY(sym, base, ret, params, args) ret do_##sym(ret(*real) params, VGPU_UNPACK params);
VGPU_CUDA_HOOKS(VGPU_DECLARE_BODY)
#undef VGPU_DECLARE_BODY

}  // namespace vgpu_cuda

#endif  // APT_VGPU_INTERCEPT_HOOK_BODIES_HPP
