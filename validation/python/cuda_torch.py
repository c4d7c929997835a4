"""Shared by the PyTorch check scripts: PyTorch with a CUDA device, or the
harness's "no device" answer (one JSON line, exit status 3, reported as a skip)."""
import json
import sys

NO_DEVICE = 3


def torch_with_cuda():
    """Returns the torch module; prints {"no_device": why} and exits 3 without one."""
    try:
        import torch
    except ImportError as e:
        print(json.dumps({"no_device": f"torch is not importable: {e}"}))
        sys.exit(NO_DEVICE)
    if not torch.cuda.is_available():
        print(json.dumps({"no_device": "torch.cuda.is_available() is False"}))
        sys.exit(NO_DEVICE)
    return torch


def replay_trace(torch, path):
    """Replays a vgpu memory trace (`a ID BYTES` / `f ID` lines) with torch.empty on CUDA through the
    current allocator; returns {"events", "ns_per_op", "failures"}."""
    import time

    events = []
    with open(path) as trace:
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
    return {"events": len(events), "ns_per_op": (time.perf_counter_ns() - start) / max(1, len(events)),
            "failures": failures}
