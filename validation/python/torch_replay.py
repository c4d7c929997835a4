"""Replays a vgpu memory trace with PyTorch's caching allocator.

    python3 torch_replay.py TRACE

Prints {"events": E, "ns_per_op": X, "failures": F, "peak_reserved": B}, to set
beside `vgpu memory replay --backing cuda` and replay_cudamalloc on one trace.
"""
import json
import sys

from cuda_torch import replay_trace, torch_with_cuda


def main() -> int:
    torch = torch_with_cuda()
    result = replay_trace(torch, sys.argv[1])
    result["peak_reserved"] = torch.cuda.max_memory_reserved()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
