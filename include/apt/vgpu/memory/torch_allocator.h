/* The pool as PyTorch's CUDA allocator: C entry points of libvgpu-torch.so.
 *
 * PyTorch loads them with
 *   torch.cuda.memory.CUDAPluggableAllocator("libvgpu-torch.so", "vgpu_torch_malloc", "vgpu_torch_free")
 * (apt.vgpu.memory.use_as_torch_allocator() does this). Memory comes from one
 * GPUMemoryManager per device over the CUDA virtual memory backing (an address
 * range reserved once, 2 MiB chunks committed on use). Every allocation is
 * charged to the calling thread's vGPU scope (vgpu_torch_set_scope), or else to
 * the process's, with the scope's memory limit as its quota: a scope over its
 * limit gets NULL, which PyTorch raises as torch.OutOfMemoryError, while other
 * scopes in the same process keep theirs.
 *
 * Stream order: a block freed on a stream goes back to the pool only once the
 * work queued on that stream before the free has finished (an event recorded at
 * the free and polled at later allocations), so no other stream is handed memory
 * a kernel may still use. When an allocation does not fit, the allocator waits
 * for those events and tries again before giving up.
 *
 * Errors never cross this boundary as exceptions: a failing call returns NULL or
 * a non-zero code, and vgpu_torch_last_error() says why (per thread).
 *
 * Thread safety: every function may be called from any thread.
 */
#ifndef APT_VGPU_MEMORY_TORCH_ALLOCATOR_H
#define APT_VGPU_MEMORY_TORCH_ALLOCATOR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#if defined(__GNUC__)
#define VGPU_TORCH_API __attribute__((visibility("default")))
#else
#define VGPU_TORCH_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* PyTorch's CUDAPluggableAllocator signatures; `stream` is a cudaStream_t (a CUstream). */
VGPU_TORCH_API void* vgpu_torch_malloc(ssize_t size, int device, void* stream);
VGPU_TORCH_API void vgpu_torch_free(void* ptr, ssize_t size, int device, void* stream);

/* The calling thread's vGPU: allocations are charged to `tenant` (a non-empty name) and capped at
 * `memory_limit` bytes (0: no cap). `process_wide` != 0 also makes it the scope of threads that
 * have none of their own (PyTorch's autograd threads). Returns 0, or -1 (see last_error). */
VGPU_TORCH_API int vgpu_torch_set_scope(const char* tenant, uint64_t memory_limit, int process_wide);
/* Back to no scope of its own for this thread; `process_wide` != 0 clears the process's too. */
VGPU_TORCH_API void vgpu_torch_clear_scope(int process_wide);

/* Bytes `tenant` holds on `device` (blocks freed but still in flight on their stream count). */
VGPU_TORCH_API uint64_t vgpu_torch_usage(const char* tenant, int device);
/* Blocks freed but waiting for their stream, on `device`. */
VGPU_TORCH_API uint64_t vgpu_torch_pending_frees(int device);
/* Why the calling thread's last failing call failed ("" if none). */
VGPU_TORCH_API const char* vgpu_torch_last_error(void);

#ifdef __cplusplus
}
#endif

#endif
