"""GPU memory as one pool shared by tenants.

    from apt.vgpu.memory import GPUMemoryManager

    memory_mgr = GPUMemoryManager(pool_size='80GB', fragmentation_threshold=0.1)
    memory_block = memory_mgr.allocate('16GB')
    memory_mgr.free(memory_block)
    stats = memory_mgr.get_stats()          # {'used': ..., 'free': ..., ...} in bytes

The pool (the C++ GPUMemoryManager) is an O(1) allocator with per-tenant quotas,
compaction when fragmented, LRU eviction to host memory and lazily committed
backing. backing='host' (default) backs it with host memory, 'none' hands out
offsets only, 'cuda' with device memory through the CUDA driver. A request that
cannot be met raises VGPUOutOfMemoryError (a MemoryError).

The pool as PyTorch's CUDA allocator (libvgpu-torch.so, docs/python.md):

    from apt.vgpu.memory import use_as_torch_allocator
    use_as_torch_allocator()                 # before PyTorch allocates any CUDA memory
    with VirtualGPU(gpu_id=0, memory_limit='20GB'):
        x = torch.empty(..., device='cuda')  # charged to this vGPU, held to its 20 GB

`with vgpu:` does this by itself when the profile has memory_pooling: true (the default) and
PyTorch has not initialised CUDA yet; VGPU_TORCH_ALLOCATOR=0 turns that off.
"""

import ctypes
import os

from . import _core

MemoryBlock = _core.MemoryBlock

__all__ = ["GPUMemoryManager", "MemoryBlock", "torch_allocator_library", "use_as_torch_allocator",
           "torch_allocator"]

_torch_allocator = None  # the library (ctypes) once PyTorch allocates through it


def torch_allocator_library():
    """The path of libvgpu-torch.so: $VGPU_TORCH_LIBRARY, else the one in this package."""
    return os.environ.get("VGPU_TORCH_LIBRARY") or os.path.join(os.path.dirname(__file__), "lib", "libvgpu-torch.so")


def _load(path):
    library = ctypes.CDLL(path)  # the same handle PyTorch's dlopen gets: one set of pools and scopes
    library.vgpu_torch_set_scope.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int]
    library.vgpu_torch_set_scope.restype = ctypes.c_int
    library.vgpu_torch_clear_scope.argtypes = [ctypes.c_int]
    library.vgpu_torch_clear_scope.restype = None
    library.vgpu_torch_usage.argtypes = [ctypes.c_char_p, ctypes.c_int]
    library.vgpu_torch_usage.restype = ctypes.c_uint64
    library.vgpu_torch_pending_frees.argtypes = [ctypes.c_int]
    library.vgpu_torch_pending_frees.restype = ctypes.c_uint64
    library.vgpu_torch_last_error.argtypes = []
    library.vgpu_torch_last_error.restype = ctypes.c_char_p
    return library


def use_as_torch_allocator():
    """Makes the pool PyTorch's CUDA allocator for the rest of the process.

    Call it before PyTorch allocates CUDA memory (PyTorch refuses to change its allocator after);
    calling it again does nothing. Raises RuntimeError when the library or PyTorch is missing.
    """
    global _torch_allocator
    if _torch_allocator is not None:
        return
    path = torch_allocator_library()
    if not os.path.exists(path):
        raise RuntimeError(f"libvgpu-torch.so not found at {path}: this build of apt.vgpu has no CUDA support "
                           "(it needs the CUDA toolkit's cuda.h at build time), or set VGPU_TORCH_LIBRARY")
    try:
        import torch
    except ImportError as error:
        raise RuntimeError("use_as_torch_allocator() needs PyTorch (pip install torch)") from error
    allocator = torch.cuda.memory.CUDAPluggableAllocator(path, "vgpu_torch_malloc", "vgpu_torch_free")
    torch.cuda.memory.change_current_allocator(allocator)
    _torch_allocator = _load(path)


def torch_allocator():
    """The allocator library (ctypes) when PyTorch allocates through the pool, else None."""
    return _torch_allocator


class GPUMemoryManager:
    """A memory pool of `pool_size` (bytes or '80GB').

    Args:
        pool_size: the pool's size.
        fragmentation_threshold: compact when 1 - largest_free/free exceeds this.
        alignment: of every block (a power of two, default 256).
        backing: 'host', 'none' or 'cuda'.
        device: the CUDA device for backing='cuda'.
        compaction, eviction, lazy: the pool's strategies (all on by default).
        gc_idle: seconds an empty chunk waits before it is given back.
    """

    def __init__(self, pool_size, fragmentation_threshold=0.1, *, alignment=256, backing="host", device=0,
                 compaction=True, eviction=True, lazy=True, gc_idle=1.0):
        self._core = _core.GPUMemoryManager(pool_size=pool_size, fragmentation_threshold=fragmentation_threshold,
                                            alignment=alignment, backing=backing, device=device,
                                            compaction=compaction, eviction=eviction, lazy=lazy, gc_idle=gc_idle)

    def allocate(self, size, *, tenant="", alignment=None, evictable=False, pinned=False):
        """A block of `size` (bytes or '16GB'); raises VGPUOutOfMemoryError when it cannot be had."""
        return self._core.allocate(size, tenant=tenant, alignment=alignment, evictable=evictable, pinned=pinned)

    def free(self, block):
        """Returns `block` to the pool; a block freed twice (or foreign) is a ValueError."""
        self._core.free(block)

    def get_stats(self):
        """Bytes: 'used', 'free', 'pool_size', 'reserved', 'requested', peaks, 'largest_free_block';
        'fragmentation' (0..1); counts of allocations, frees, compactions, evictions..."""
        return self._core.get_stats()

    def address(self, block):
        """The block's current address (restoring it first if it was evicted)."""
        return self._core.address(block)

    def size(self, block):
        """The block's size as allocated (rounded to the alignment)."""
        return self._core.size(block)

    def resident(self, block):
        return self._core.resident(block)

    def set_quota(self, tenant, size):
        """Caps what `tenant` may hold (0 removes the cap)."""
        self._core.set_quota(tenant, size)

    def quota(self, tenant):
        return self._core.quota(tenant)

    def tenant_usage(self, tenant):
        return self._core.tenant_usage(tenant)

    def compact(self):
        """Closes every gap it can; returns the bytes moved."""
        return self._core.compact()

    def collect_garbage(self, idle=None):
        """Gives back chunks empty for `idle` seconds (default: gc_idle); returns the bytes released."""
        return self._core.collect_garbage(idle)

    @property
    def backing(self):
        return self._core.backing

    def check_invariants(self):
        """Verifies the pool's books (raises on a broken invariant); for tests."""
        self._core.check_invariants()
