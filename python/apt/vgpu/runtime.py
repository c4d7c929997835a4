"""Virtual GPUs: slices of one physical GPU with a memory limit and a compute share.

    from apt.vgpu.runtime import VirtualGPU, create_vgpu

    vgpu = create_vgpu(physical_gpu_id=0, memory_limit='20GB', compute_ratio=0.5)
    with vgpu:
        model = Model().to(vgpu.device)

Creating a VirtualGPU leases its slice from the node (the embedded ledger, or vgpud
when it runs): VGPUCapacityError when it does not fit. The slice is returned when
the object is garbage-collected or close() is called.

What is enforced where (docs/python.md): a child started with vgpu.run([...]) with
isolation='intercept' runs under libvgpu-cuda.so, which enforces the memory limit
and paces the compute share. Inside this process, `with vgpu:` makes the device
current and, with PyTorch on CUDA, caps PyTorch's caching allocator at the slice's
memory (torch.cuda.set_per_process_memory_fraction); that cap covers PyTorch only.
"""

import importlib.util
import os
import subprocess
import sys
import threading
import warnings

from . import _core

__all__ = ["VirtualGPU", "create_vgpu", "current_vgpu", "node_capacity"]

_scopes = threading.local()  # per thread: the stack of open `with vgpu:` blocks


_torch_missing = False  # set once find_spec has said so: looking again costs a file-system search


def _pool_allocator(torch, pooling):
    """libvgpu-torch.so when PyTorch allocates through the pool: installed by use_as_torch_allocator(), or
    here when the slice's profile pools memory (`pooling`: memory_pooling, on by default), PyTorch has
    not touched CUDA yet and VGPU_TORCH_ALLOCATOR is not 0. None otherwise (the per-process fraction
    is used instead)."""
    from . import memory
    pool = memory.torch_allocator()
    if pool is not None or os.environ.get("VGPU_TORCH_ALLOCATOR", "1") == "0" or not pooling:
        return pool
    if torch.cuda.is_initialized() or not os.path.exists(memory.torch_allocator_library()):
        return None
    try:
        memory.use_as_torch_allocator()
    except Exception as error:  # PyTorch without pluggable allocators, or one that refuses: keep its own
        warnings.warn(f"apt.vgpu: PyTorch keeps its own allocator ({error}); limits use its memory fraction")
        return None
    return memory.torch_allocator()


def _torch():
    """PyTorch when it is importable (imported on first need), else None."""
    global _torch_missing
    torch = sys.modules.get("torch")
    if torch is not None or _torch_missing:
        return torch
    if importlib.util.find_spec("torch") is None:
        _torch_missing = True
        return None
    import torch

    return torch


def _device(device_name):
    """What PyTorch is given for a slice's device: a torch.device when torch is importable, else a
    string; the simulated node's devices ('sim:N') are the CPU."""
    target = "cpu" if device_name.startswith("sim:") else device_name
    torch = _torch()
    return torch.device(target) if torch is not None else target


class VirtualGPU:
    """A slice of physical GPU `gpu_id`.

    Args:
        gpu_id: the physical GPU (index on this node).
        memory_limit: bytes or a size string ('20GB', '16GiB'); None reserves and enforces nothing.
        compute_ratio: share of the GPU's compute in (0, 1]; None reserves nothing.
        auto_recover: on a lost or unhealthy GPU, move to `fallback_gpu` (or any healthy GPU with room).
        fallback_gpu: the GPU to move to first.
        priority: higher runs first where the node arbitrates.
        isolation: 'none' (accounting only), 'intercept' (libvgpu-cuda.so in children) or 'mps'.
        burst: let the slice use idle compute beyond its share (intercept isolation).
        name: shown in listings; default 'vgpu-<lease id>'.

    `with vgpu:` makes it the current vGPU. With PyTorch on CUDA, allocations in the block go through
    the pool (libvgpu-torch.so), charged to this vGPU and held to memory_limit, when the profile pools
    memory (memory_pooling, on by default) and PyTorch had not initialised CUDA before the first
    such block; otherwise PyTorch's per-process memory fraction is set to the limit.
    """

    def __init__(self, gpu_id=0, memory_limit=None, compute_ratio=None, auto_recover=False, fallback_gpu=None, *,
                 priority=0, isolation="none", burst=False, name=""):
        self._core = _core.VirtualGPU(gpu_id=gpu_id, memory_limit=memory_limit, compute_ratio=compute_ratio,
                                      priority=priority, auto_recover=auto_recover, fallback_gpu=fallback_gpu,
                                      isolation=isolation, burst=burst, name=name)

    @classmethod
    def from_config(cls, config):
        """A slice as a profile's `vgpu` section describes it (its virtual_gpu defaults, isolation and memory_pooling)."""
        vgpu = cls._wrap(_core.VirtualGPU.from_config(config))
        vgpu._memory_pooling = bool(config.memory_pooling)
        return vgpu

    _memory_pooling = True  # the profile's memory_pooling (from_config); the default profile pools

    @classmethod
    def _wrap(cls, core):
        vgpu = cls.__new__(cls)
        vgpu._core = core
        return vgpu

    # ---- what it is ----
    @property
    def name(self):
        return self._core.name

    @property
    def gpu_id(self):
        """The physical GPU now (changes after a recovery)."""
        return self._core.gpu_id

    @property
    def memory_limit(self):
        """Bytes, or None."""
        return self._core.memory_limit

    @property
    def compute_ratio(self):
        return self._core.compute_ratio

    @property
    def priority(self):
        return self._core.priority

    @property
    def isolation(self):
        return self._core.isolation

    @property
    def device_name(self):
        """'cuda:N' on a GPU node, 'sim:N' on the simulated one."""
        return self._core.device_name

    @property
    def device(self):
        """What to give PyTorch: a torch.device when torch is importable, else a string.

        On the simulated node it is the CPU ('cpu'), so code written for the GPU runs anywhere.
        """
        return _device(self._core.device_name)

    @property
    def lease(self):
        """The slice as the node granted it: id, gpu, memory_bytes, compute_share, owner."""
        return self._core.lease

    @property
    def recoveries(self):
        """Moves to another GPU made by auto_recover, oldest first."""
        return self._core.recoveries

    def environment(self):
        """The variables that bind a child process to this slice (VGPU_*, CUDA_VISIBLE_DEVICES, LD_PRELOAD...)."""
        return dict(self._core.environment())

    def ensure_healthy(self):
        """Checks the GPU's health; recovers (auto_recover) or raises VGPUDeviceError."""
        self._core.ensure_healthy()

    def run(self, args, capture_output=False, timeout=None):
        """Runs `args` (a list, or a string split like a shell word list) bound to this slice and waits.

        Returns a subprocess.CompletedProcess (stdout holds stdout and stderr merged when
        capture_output). With isolation='intercept' the child runs under libvgpu-cuda.so.
        """
        argv = args.split() if isinstance(args, str) else [str(a) for a in args]
        result = self._core.run(argv, capture_output=capture_output, timeout=timeout)
        if result["timed_out"]:
            raise subprocess.TimeoutExpired(argv, timeout, output=result["output"] if capture_output else None)
        return subprocess.CompletedProcess(argv, result["exit_code"], stdout=result["output"] if capture_output else None)

    # ---- `with vgpu:` ----
    def __enter__(self):
        scope = _core.Scope(self._core)
        frame = {"scope": scope, "torch": None, "fraction": None, "pool": None}
        torch = _torch()
        name = self._core.device_name
        if torch is not None and name.startswith("cuda:") and torch.cuda.is_available():
            index = int(name.split(":", 1)[1])
            device_scope = torch.cuda.device(index)
            device_scope.__enter__()
            frame["torch"] = device_scope
            limit = self._core.memory_limit
            pool = _pool_allocator(torch, self._memory_pooling)
            if pool is not None:
                # The pool knows the current vGPU: allocations are charged to it and held to its limit.
                if pool.vgpu_torch_set_scope(self.name.encode(), limit or 0, 1) != 0:
                    raise RuntimeError(pool.vgpu_torch_last_error().decode())
                frame["pool"] = pool
            elif limit:
                total = torch.cuda.get_device_properties(index).total_memory
                previous = getattr(torch.cuda, "get_per_process_memory_fraction", None)
                frame["fraction"] = (index, previous(index) if previous else 1.0)
                torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), index)
        stack = getattr(_scopes, "stack", None)
        if stack is None:
            stack = _scopes.stack = []
        stack.append((self, frame))
        return self

    def __exit__(self, exc_type, exc, tb):
        stack = getattr(_scopes, "stack", [])
        if not stack or stack[-1][0] is not self:
            raise RuntimeError("`with vgpu:` blocks must close in the order they opened, on the thread that opened them")
        _, frame = stack.pop()
        if frame["pool"] is not None:
            # Back to the enclosing vGPU's scope, or none.
            outer = next((v for v, f in reversed(stack) if f["pool"] is not None), None)
            if outer is not None:
                frame["pool"].vgpu_torch_set_scope(outer.name.encode(), outer.memory_limit or 0, 1)
            else:
                frame["pool"].vgpu_torch_clear_scope(1)
        if frame["fraction"] is not None:
            index, fraction = frame["fraction"]
            _torch().cuda.set_per_process_memory_fraction(fraction, index)
        if frame["torch"] is not None:
            frame["torch"].__exit__(exc_type, exc, tb)
        frame["scope"].close()
        return False

    def close(self):
        """Returns the slice now (otherwise when the object is garbage-collected)."""
        self._core = None

    def __repr__(self):
        if self._core is None:
            return "<VirtualGPU (closed)>"
        limit = self._core.memory_limit
        return (f"<VirtualGPU {self.name} on GPU {self.gpu_id}: memory_limit={limit if limit is not None else 'none'}, "
                f"compute_ratio={self.compute_ratio}, device={self.device_name}>")


def create_vgpu(physical_gpu_id=0, memory_limit=None, compute_ratio=None, *, priority=0, isolation="none",
                burst=False, name=""):
    """The seed's create_vgpu: a VirtualGPU on `physical_gpu_id` with `memory_limit` and `compute_ratio`."""
    return VirtualGPU._wrap(_core.create_vgpu(physical_gpu_id=physical_gpu_id, memory_limit=memory_limit,
                                               compute_ratio=compute_ratio, priority=priority, isolation=isolation,
                                               burst=burst, name=name))


def current_vgpu():
    """The calling thread's innermost `with vgpu:` VirtualGPU, or None."""
    stack = getattr(_scopes, "stack", None)
    return stack[-1][0] if stack else None


def node_capacity():
    """Per GPU of this node (vgpud's view when it runs): memory and compute leased and free, slices."""
    return list(_core.node_capacity())
