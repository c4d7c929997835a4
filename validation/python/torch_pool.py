"""The pool as PyTorch's CUDA allocator (libvgpu-torch.so) under real PyTorch.

    python3 torch_pool.py LIBVGPU_TORCH TRACE LIMIT_BYTES

Installs the library with torch.cuda.memory.CUDAPluggableAllocator, then:
  1. scope "a" (LIMIT_BYTES): tensors of 64 MiB until torch.OutOfMemoryError; how much it got;
  2. scope "b" on another thread, same limit, while "a" still holds its memory: it gets its own;
  3. stream order: a block freed on a busy stream is pending, not handed to another stream;
  4. the training trace replayed through the pool (ns per event, failures), to set beside
     torch_replay.py (PyTorch's caching allocator) on the same trace.
Prints one JSON object. Exit 3 when there is no CUDA device.
"""
import ctypes
import json
import sys
import threading

from cuda_torch import replay_trace, torch_with_cuda

MIB = 1 << 20


def main() -> int:
    path, trace_path, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch = torch_with_cuda()
    allocator = torch.cuda.memory.CUDAPluggableAllocator(path, "vgpu_torch_malloc", "vgpu_torch_free")
    torch.cuda.memory.change_current_allocator(allocator)
    lib = ctypes.CDLL(path)
    lib.vgpu_torch_set_scope.argtypes = [ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int]
    lib.vgpu_torch_usage.argtypes = [ctypes.c_char_p, ctypes.c_int]
    lib.vgpu_torch_usage.restype = ctypes.c_uint64
    lib.vgpu_torch_pending_frees.restype = ctypes.c_uint64
    lib.vgpu_torch_last_error.restype = ctypes.c_char_p
    result = {}

    def fill(scope):
        lib.vgpu_torch_set_scope(scope.encode(), limit, 0)
        held, oom = [], False
        try:
            while len(held) * 64 * MIB < 4 * limit:
                held.append(torch.empty(64 * MIB, dtype=torch.uint8, device="cuda"))
        except torch.OutOfMemoryError:
            oom = True
        return held, oom

    held_a, oom_a = fill("a")
    result["a"] = {"oom": oom_a, "allocated": len(held_a) * 64 * MIB, "usage": lib.vgpu_torch_usage(b"a", 0)}
    other = {}

    def in_b():
        held_b, oom_b = fill("b")
        other.update(oom=oom_b, allocated=len(held_b) * 64 * MIB, usage=lib.vgpu_torch_usage(b"b", 0))
        del held_b
        torch.cuda.synchronize()

    thread = threading.Thread(target=in_b)
    thread.start()
    thread.join()
    result["b"] = other
    del held_a
    torch.cuda.synchronize()

    lib.vgpu_torch_set_scope(b"streams", 0, 1)
    busy, second = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(busy):
        a = torch.randn(4096, 4096, device="cuda")
        for _ in range(50):
            a = a @ a / 4096  # keeps `busy` working for a while
        x = torch.empty(256 * MIB, dtype=torch.uint8, device="cuda")
        x_ptr = x.data_ptr()
        del x
    pending = lib.vgpu_torch_pending_frees(0)
    with torch.cuda.stream(second):
        y = torch.empty(256 * MIB, dtype=torch.uint8, device="cuda")
    result["streams"] = {"pending_after_free": pending, "other_stream_got_freed_block": y.data_ptr() == x_ptr,
                         "busy_still_running": not busy.query()}
    del y, a
    torch.cuda.synchronize()

    result["trace"] = replay_trace(torch, trace_path)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
