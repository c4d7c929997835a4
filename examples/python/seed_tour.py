#!/usr/bin/env python3
"""The seed's Python API, end to end, on whatever node this is (the simulated one without a GPU).

    PYTHONPATH=build/release/python .venv/bin/python3 examples/python/seed_tour.py
"""

import os

os.environ.setdefault("VGPU_LOG_LEVEL", "error")

from apt.core.config import load_profile  # noqa: E402
from apt.vgpu import VGPUCapacityError  # noqa: E402
from apt.vgpu.memory import GPUMemoryManager  # noqa: E402
from apt.vgpu.monitoring import GPUMonitor  # noqa: E402
from apt.vgpu.runtime import VirtualGPU, create_vgpu  # noqa: E402
from apt.vgpu.scheduler import GPUScheduler  # noqa: E402


def train_model(name):
    return f"{name}: loss 0.{len(name)}"


print(">>> vgpu = create_vgpu(physical_gpu_id=0, memory_limit='20GB', compute_ratio=0.5)")
vgpu = create_vgpu(physical_gpu_id=0, memory_limit="20GB", compute_ratio=0.5)
with vgpu:
    print(f"    inside `with vgpu:` the device is {vgpu.device!r} (lease {vgpu.lease})")

print(">>> training (60GB, 0.8) and inference (20GB, 0.2) on one GPU, then one more slice")
training = create_vgpu(physical_gpu_id=1, memory_limit="60GB", compute_ratio=0.8)
inference = create_vgpu(physical_gpu_id=1, memory_limit="20GB", compute_ratio=0.2)
try:
    create_vgpu(physical_gpu_id=1, memory_limit="10GB")
except VGPUCapacityError as error:
    print(f"    refused: {error}")

print(">>> GPUScheduler(num_physical_gpus=4, max_virtual_gpus=16): 10 tasks of 10GB")
with GPUScheduler(num_physical_gpus=4, max_virtual_gpus=16) as scheduler:
    ids = [scheduler.submit_task(task=lambda i=i: train_model(f"model_{i}"), gpu_requirements={"memory": "10GB"})
           for i in range(10)]
    print("    " + ", ".join(scheduler.wait_all(ids)[:3]) + ", ...")

print(">>> GPUMemoryManager(pool_size='80GB', fragmentation_threshold=0.1)")
memory_mgr = GPUMemoryManager(pool_size="80GB", fragmentation_threshold=0.1)
block = memory_mgr.allocate("16GB")
stats = memory_mgr.get_stats()
print(f"    Used: {stats['used']}, Free: {stats['free']}")
memory_mgr.free(block)

print(">>> GPUMonitor(update_interval=1.0)")
monitor = GPUMonitor(update_interval=1.0, metrics=["utilization", "memory", "temperature"])
monitor.start()
with training:
    stats = monitor.sample()
monitor.stop()
print(f"    GPU {stats['gpu_id']}: utilization {stats['utilization']}%, memory {stats['memory_used']}/"
      f"{stats['memory_total']}, temperature {stats['temperature']} C")

print(">>> load_profile('standard'); VirtualGPU.from_config(config.vgpu)")
config = load_profile("standard")
print(f"    {VirtualGPU.from_config(config.vgpu)!r}")
