"""PyTorch under a vgpu slice: what it sees and where it stops.

    python3 torch_limits.py LIMIT_BYTES

Run under `vgpu run --isolation intercept --memory ...`, once per allocator
setting (PYTORCH_CUDA_ALLOC_CONF unset, "expandable_segments:True",
"backend:cudaMallocAsync"). Prints one JSON object:
  mem_get_info (free, total), allocated_before_oom, oom (the exception's type),
  graph_replay_ok (a CUDA graph captured and replayed), allocator.
Exit 3 with {"no_device": ...} when torch has no CUDA device.
"""
import json
import os
import sys

from cuda_torch import torch_with_cuda


def main() -> int:
    limit = int(sys.argv[1])
    torch = torch_with_cuda()
    out = {"allocator": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", "default"), "torch": torch.__version__}
    free, total = torch.cuda.mem_get_info()
    out["mem_get_info"] = {"free": free, "total": total}
    chunk = 256 * 1024 * 1024
    blocks = []
    allocated = 0
    try:
        while allocated < limit + (2 << 30):  # stop 2 GiB past the limit if it is not enforced
            blocks.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
            allocated += chunk
        out["oom"] = None
    except torch.OutOfMemoryError as e:  # what a framework user expects at the limit
        out["oom"] = type(e).__name__
        out["oom_message"] = str(e).splitlines()[0][:300]
    except RuntimeError as e:
        out["oom"] = "RuntimeError"
        out["oom_message"] = str(e).splitlines()[0][:300]
    out["allocated_before_oom"] = allocated
    del blocks
    torch.cuda.empty_cache()

    # A CUDA graph: capture a few kernels on a side stream and replay them.
    try:
        x = torch.ones(1 << 20, device="cuda")
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                y = x * 2 + 1  # warm-up outside capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = x * 2 + 1
        for _ in range(10):
            graph.replay()
        torch.cuda.synchronize()
        out["graph_replay_ok"] = bool(torch.allclose(y, torch.full_like(y, 3.0)))
    except Exception as e:  # report, do not hide: the harness marks the check failed
        out["graph_replay_ok"] = False
        out["graph_error"] = f"{type(e).__name__}: {e}"[:300]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
