"""The Python package on the GPU: apt.vgpu from the bundle, with PyTorch.

    package_check.py LIMIT_BYTES

Prints one JSON line:
  {"device": "cuda:0", "scope_allocated": B, "scope_oom": "OutOfMemoryError"|null,
   "process_allocated": B, "process_oom": ..., "process_limit_env": "..."}
- `with vgpu:` caps PyTorch in this process at the slice (set_per_process_memory_fraction): tensors of
  256 MiB are allocated until PyTorch refuses; the total must stay at or under LIMIT_BYTES.
- a task with isolation='process' runs in a child under libvgpu-cuda.so: the same loop there must be
  stopped by the interception library at or under LIMIT_BYTES.
Exit status 3 with {"no_device": why} when PyTorch or CUDA is missing (apt.vgpu is imported first, so a
bundle whose package does not load fails rather than skips).
"""
import importlib
import json
import os
import sys
import types


def import_apt_vgpu():
    """apt.vgpu from PYTHONPATH. Debian's and Ubuntu's python3-apt owns the top-level name `apt` as a
    regular package in the system Python, and a regular package wins over our namespace package
    wherever it sits on sys.path: then `apt` is rebuilt as a namespace of the PYTHONPATH folders."""
    try:
        return importlib.import_module("apt.vgpu")
    except ModuleNotFoundError:
        pass
    portions = [os.path.join(p, "apt") for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                if os.path.isdir(os.path.join(p, "apt", "vgpu"))]
    namespace = types.ModuleType("apt")
    namespace.__path__ = portions
    sys.modules["apt"] = namespace
    return importlib.import_module("apt.vgpu")


import_apt_vgpu()  # first: the bundle's package must load
from apt.vgpu.runtime import create_vgpu
from apt.vgpu.scheduler import GPUScheduler

from cuda_torch import torch_with_cuda

STEP = 256 * 1024 * 1024


def fill(torch, device):
    """Allocates 256 MiB tensors until PyTorch refuses; returns (bytes, the error's type name or None)."""
    held = []
    try:
        while len(held) * STEP < 4 * 1024**4:
            held.append(torch.empty(STEP, dtype=torch.uint8, device=device))
    except torch.OutOfMemoryError as error:
        return len(held) * STEP, type(error).__name__
    except RuntimeError as error:  # older torch: a RuntimeError saying "out of memory"
        return len(held) * STEP, type(error).__name__ if "out of memory" in str(error) else repr(error)
    return len(held) * STEP, None


def in_child():
    import os

    import torch

    allocated, oom = fill(torch, "cuda:0")
    return {"allocated": allocated, "oom": oom, "limit_env": os.environ.get("VGPU_MEMORY_LIMIT")}


def main():
    limit = int(sys.argv[1])
    torch = torch_with_cuda()
    result = {}
    vgpu = create_vgpu(physical_gpu_id=0, memory_limit=limit)
    result["device"] = str(vgpu.device)
    with vgpu:
        result["scope_allocated"], result["scope_oom"] = fill(torch, vgpu.device)
    torch.cuda.empty_cache()
    vgpu.close()
    with GPUScheduler(num_physical_gpus=1, max_virtual_gpus=2) as scheduler:
        child = scheduler.wait_for_task(scheduler.submit_task(in_child, {"memory": limit}, isolation="process"))
    result["process_allocated"] = child["allocated"]
    result["process_oom"] = child["oom"]
    result["process_limit_env"] = child["limit_env"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
