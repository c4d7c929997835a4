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
