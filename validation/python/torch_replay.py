"""Replays a vgpu memory trace with PyTorch's caching allocator.

    python3 torch_replay.py TRACE

Prints {"events": E, "ns_per_op": X, "failures": F, "peak_reserved": B}, to set
beside `vgpu memory replay --backing cuda` and replay_cudamalloc on one trace.
"""
import json
import sys
import time

from cuda_torch import torch_with_cuda


def main() -> int:
    torch = torch_with_cuda()
    events = []
    with open(sys.argv[1]) as trace:
        for line in trace:
            if not line.strip() or line.startswith("#"):
                continue
            fields = line.split()
            events.append((fields[0] == "a", int(fields[1]), int(fields[2]) if fields[0] == "a" else 0))
    live = {}
    failures = 0
    torch.cuda.synchronize()
    start = time.perf_counter_ns()
    for allocate, ident, size in events:
        if allocate:
            try:
                live[ident] = torch.empty(size, dtype=torch.uint8, device="cuda")
            except torch.OutOfMemoryError:
                failures += 1
        else:
            live.pop(ident, None)
    torch.cuda.synchronize()
    ns = (time.perf_counter_ns() - start) / max(1, len(events))
    print(json.dumps({"events": len(events), "ns_per_op": ns, "failures": failures,
                      "peak_reserved": torch.cuda.max_memory_reserved()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
