"""The seed's scenarios 2 and 3 (1 and 4 are in test_scheduler.py)."""

import pytest

from apt.vgpu import VGPUCapacityError
from apt.vgpu.runtime import VirtualGPU, create_vgpu, node_capacity


def test_scenario_2_training_and_inference_on_one_gpu():
    training = create_vgpu(physical_gpu_id=5, memory_limit="60GB", compute_ratio=0.8)
    inference = create_vgpu(physical_gpu_id=5, memory_limit="20GB", compute_ratio=0.2)
    with training, inference:
        gpu = next(c for c in node_capacity() if c["gpu"] == 5)
        assert gpu["memory_leased"] == 80_000_000_000
        assert gpu["compute_leased"] == pytest.approx(1.0)
        # Nothing beyond what is left (the node may be oversubscribed by its profile) is granted.
        with pytest.raises(VGPUCapacityError):
            create_vgpu(physical_gpu_id=5, memory_limit=gpu["memory_free"] + 1)


def test_scenario_3_sixteen_developers_on_four_gpus():
    developers = [VirtualGPU(gpu_id=i % 4, memory_limit="16GB") for i in range(16)]
    per_gpu = {}
    for vgpu in developers:
        per_gpu[vgpu.gpu_id] = per_gpu.get(vgpu.gpu_id, 0) + 1
    assert per_gpu == {0: 4, 1: 4, 2: 4, 3: 4}
    for gpu in range(4):
        assert next(c for c in node_capacity() if c["gpu"] == gpu)["memory_leased"] >= 64_000_000_000
