"""apt.vgpu.memory: the seed's memory example verbatim and the pool's contract."""

import pytest

from apt.vgpu import VGPUCapacityError, VGPUOutOfMemoryError
from apt.vgpu.memory import GPUMemoryManager

from conftest import run_seed


def test_seed_memory_example(capsys):
    ns = run_seed("""
        from apt.vgpu.memory import GPUMemoryManager

        memory_mgr = GPUMemoryManager(
            pool_size='80GB',
            fragmentation_threshold=0.1
        )

        memory_block = memory_mgr.allocate('16GB')
        memory_mgr.free(memory_block)

        stats = memory_mgr.get_stats()
        print(f"Used: {stats['used']}, Free: {stats['free']}")
    """)
    assert capsys.readouterr().out == "Used: 0, Free: 80000000000\n"
    stats = ns["stats"]
    assert stats["pool_size"] == 80_000_000_000
    assert stats["peak_address"] >= 16_000_000_000 and stats["commit_calls"] >= 1


def test_exhaustion_is_a_memory_error():
    pool = GPUMemoryManager("1MB", backing="none")
    block = pool.allocate(600_000)
    with pytest.raises(MemoryError):
        pool.allocate("600KB")
    with pytest.raises(VGPUOutOfMemoryError) as error:
        pool.allocate(600_000)
    assert isinstance(error.value, VGPUCapacityError)
    assert pool.get_stats()["used"] >= 600_000
    pool.free(block)
    assert pool.get_stats()["used"] == 0


def test_a_double_free_is_a_value_error_and_changes_nothing():
    pool = GPUMemoryManager("1MB", backing="none")
    block = pool.allocate(4096)
    pool.free(block)
    with pytest.raises(ValueError):
        pool.free(block)
    pool.check_invariants()


def test_quotas_compaction_and_addresses():
    pool = GPUMemoryManager("1MiB", alignment=256)
    pool.set_quota("inference", "256KiB")
    with pytest.raises(MemoryError, match="inference"):
        pool.allocate("300KiB", tenant="inference")
    blocks = [pool.allocate(64 * 1024, tenant="training") for _ in range(8)]
    for b in blocks[::2]:
        pool.free(b)
    moved = pool.compact()
    assert moved > 0
    assert pool.get_stats()["largest_free_block"] >= 4 * 64 * 1024
    assert pool.tenant_usage("training") == 4 * 64 * 1024
    assert all(pool.address(b) != 0 for b in blocks[1::2])
    pool.check_invariants()


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="pool_size"):
        GPUMemoryManager("eighty gigs")
    with pytest.raises(ValueError, match="backing"):
        GPUMemoryManager("1GB", backing="floppy")
    pool = GPUMemoryManager("1MB", backing="none")
    with pytest.raises(ValueError):
        pool.allocate(0)
    with pytest.raises(TypeError, match="size"):
        pool.allocate(1.5)


def test_the_torch_allocator_library_is_bundled_and_fails_cleanly_without_a_driver(monkeypatch):
    # The pool as PyTorch's allocator: its C entry points, loaded as PyTorch loads them. Without a
    # CUDA driver (CI) an allocation is NULL with the reason, never a crash.
    import ctypes
    import os

    from apt.vgpu import memory

    path = memory.torch_allocator_library()
    if not os.path.exists(path):
        pytest.skip("this build has no CUDA headers, so no libvgpu-torch.so")
    library = memory._load(path)
    assert library.vgpu_torch_set_scope(b"vgpu-test", 1 << 30, 0) == 0
    assert library.vgpu_torch_set_scope(b"", 0, 0) == -1
    assert b"tenant is empty" in library.vgpu_torch_last_error()
    library.vgpu_torch_malloc.restype = ctypes.c_void_p
    library.vgpu_torch_malloc.argtypes = [ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]
    monkeypatch.setenv("VGPU_TORCH_POOL_SIZE", "64MiB")
    if library.vgpu_torch_malloc(1 << 20, 0, None) is None:
        assert library.vgpu_torch_last_error().startswith(b"vgpu_torch_malloc")
    library.vgpu_torch_clear_scope(0)
    assert memory.torch_allocator() is None, "nothing installed it into PyTorch"
