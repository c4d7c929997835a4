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
"""

from . import _core

MemoryBlock = _core.MemoryBlock

__all__ = ["GPUMemoryManager", "MemoryBlock"]


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
