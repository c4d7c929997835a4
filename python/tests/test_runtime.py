"""apt.vgpu.runtime: the seed's runtime examples verbatim, and what VirtualGPU promises."""

import os
import subprocess
import sys
import threading

import pytest

from apt.vgpu import VGPUCapacityError, VGPUConfigError
from apt.vgpu.runtime import VirtualGPU, create_vgpu, current_vgpu, node_capacity

from conftest import run_seed

REPO_PROFILES = os.path.join(os.path.dirname(__file__), "..", "..", "profiles")


def test_seed_runtime_example():
    ns = run_seed("""
        from apt.vgpu.runtime import VirtualGPU, create_vgpu

        vgpu = create_vgpu(
            physical_gpu_id=0,
            memory_limit='20GB',
            compute_ratio=0.5  # use 50% of the compute
        )

        with vgpu:
            model = APTLargeModel().to(vgpu.device)
            output = model(input_data)
    """)
    vgpu = ns["vgpu"]
    assert ns["output"] == [1, 2, 3]
    assert vgpu.memory_limit == 20_000_000_000
    assert vgpu.compute_ratio == 0.5
    assert vgpu.lease["memory_bytes"] == 20_000_000_000
    # On the simulated node the device is the CPU, as a string or a torch.device.
    assert str(ns["model"].device) == ("cpu" if vgpu.device_name.startswith("sim:") else vgpu.device_name)


def test_seed_three_vgpus_share_one_gpu():
    ns = run_seed("""
        from apt.vgpu.runtime import VirtualGPU

        vgpu1 = VirtualGPU(gpu_id=0, memory_limit='20GB')
        vgpu2 = VirtualGPU(gpu_id=0, memory_limit='20GB')
        vgpu3 = VirtualGPU(gpu_id=0, memory_limit='20GB')

        with vgpu1:
            model1 = APTLargeModel().to(vgpu1.device)   # training task 1
        with vgpu2:
            model2 = APTLargeModel().to(vgpu2.device)   # training task 2
        with vgpu3:
            model3 = APTLargeModel().to(vgpu3.device)   # inference task
    """)
    leases = [ns[f"vgpu{i}"].lease for i in (1, 2, 3)]
    assert {lease["gpu"] for lease in leases} == {0}
    assert len({lease["id"] for lease in leases}) == 3
    gpu0 = next(c for c in node_capacity() if c["gpu"] == 0)
    assert gpu0["memory_leased"] >= 60_000_000_000


def test_seed_trainer_example():
    ns = run_seed("""
        vgpu = VirtualGPU(gpu_id=0, memory_limit='40GB')
        trainer = Trainer(model=model, device=vgpu.device,
                          vgpu_config={'enabled': True, 'memory_limit': '40GB'})
        trainer.train()
    """, VirtualGPU=VirtualGPU)
    assert ns["trainer"].steps == 3


def test_seed_fault_handling_example():
    ns = run_seed("""
        vgpu = VirtualGPU(
            gpu_id=0,
            auto_recover=True,  # recover automatically
            fallback_gpu=1      # switch to GPU 1 on failure
        )
    """, VirtualGPU=VirtualGPU)
    vgpu = ns["vgpu"]
    vgpu.ensure_healthy()  # a healthy GPU: nothing moves
    assert vgpu.gpu_id == 0 and vgpu.recoveries == []


def test_seed_profile_example(monkeypatch):
    monkeypatch.setenv("VGPU_PROFILE_PATH", REPO_PROFILES)
    ns = run_seed("""
        from apt.core.config import load_profile
        from apt.vgpu.runtime import VirtualGPU

        config = load_profile('standard')
        vgpu = VirtualGPU.from_config(config.vgpu)
    """)
    config = ns["config"]
    assert config.name == "standard"
    assert config.vgpu.monitoring.interval == 1.0
    assert isinstance(ns["vgpu"], VirtualGPU)


def test_apt_is_a_namespace_package():
    import apt

    assert not hasattr(apt, "__file__") or apt.__file__ is None, "apt must be a namespace package"
    from apt.vgpu.config import load_profile as a
    from apt.core.config import load_profile as b

    assert a is b


def test_sizes_are_strings_or_ints_and_bad_ones_name_the_field():
    assert VirtualGPU(gpu_id=0, memory_limit=1_000_000_000).memory_limit == 1_000_000_000
    assert VirtualGPU(gpu_id=0, memory_limit="1GiB").memory_limit == 2**30
    with pytest.raises(ValueError, match="memory_limit"):
        VirtualGPU(gpu_id=0, memory_limit="20 gigs")
    with pytest.raises(ValueError, match="memory_limit"):
        VirtualGPU(gpu_id=0, memory_limit=-5)
    with pytest.raises(TypeError, match="memory_limit"):
        VirtualGPU(gpu_id=0, memory_limit=[20])
    with pytest.raises(ValueError, match="compute"):
        create_vgpu(physical_gpu_id=0, memory_limit="1GB", compute_ratio=1.5)
    with pytest.raises(ValueError, match="isolation"):
        VirtualGPU(gpu_id=0, isolation="sandbox")


def test_a_slice_that_does_not_fit_is_a_capacity_error():
    with pytest.raises(VGPUCapacityError) as error:
        VirtualGPU(gpu_id=0, memory_limit="100TB")
    assert isinstance(error.value, RuntimeError)


def test_a_missing_profile_is_a_config_error_naming_it():
    from apt.vgpu.config import load_profile

    with pytest.raises(VGPUConfigError, match="no-such-profile") as error:
        load_profile("no-such-profile")
    assert isinstance(error.value, ValueError)


def test_scopes_nest_per_thread_and_must_close_in_order():
    a = VirtualGPU(gpu_id=0, memory_limit="1GB")
    b = VirtualGPU(gpu_id=1, memory_limit="1GB")
    assert current_vgpu() is None
    with a:
        assert current_vgpu() is a
        with b:
            assert current_vgpu() is b
            seen = []
            thread = threading.Thread(target=lambda: seen.append(current_vgpu()))
            thread.start()
            thread.join()
            assert seen == [None], "another thread has its own (empty) stack"
        assert current_vgpu() is a
    assert current_vgpu() is None
    a.__enter__()
    b.__enter__()
    with pytest.raises(RuntimeError, match="order"):
        a.__exit__(None, None, None)
    b.__exit__(None, None, None)
    a.__exit__(None, None, None)


def test_run_binds_a_child_to_the_slice():
    vgpu = VirtualGPU(gpu_id=0, memory_limit="2GB", compute_ratio=0.25, isolation="intercept")
    done = vgpu.run([sys.executable, "-c",
                     "import os; print(os.environ['VGPU_MEMORY_LIMIT'], os.environ['VGPU_COMPUTE_SHARE'], "
                     "'libvgpu-cuda.so' in os.environ.get('LD_PRELOAD', ''))"], capture_output=True)
    assert done.returncode == 0, done.stdout
    assert done.stdout.split()[-3:] == ["2000000000", "0.25", "True"]
    assert vgpu.environment()["VGPU_MEMORY_LIMIT"] == "2000000000"
    assert vgpu.run([sys.executable, "-c", "raise SystemExit(3)"]).returncode == 3
    with pytest.raises(subprocess.TimeoutExpired):
        vgpu.run([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)


def test_closing_returns_the_slice():
    before = next(c for c in node_capacity() if c["gpu"] == 2)["memory_leased"]
    vgpu = VirtualGPU(gpu_id=2, memory_limit="10GB")
    assert next(c for c in node_capacity() if c["gpu"] == 2)["memory_leased"] == before + 10_000_000_000
    vgpu.close()
    assert next(c for c in node_capacity() if c["gpu"] == 2)["memory_leased"] == before


def test_device_is_a_torch_device_when_torch_is_there():
    torch = pytest.importorskip("torch")
    vgpu = create_vgpu(physical_gpu_id=0, memory_limit="1GB")
    assert isinstance(vgpu.device, torch.device)
    with vgpu:
        tensor = torch.zeros(4).to(vgpu.device)
    assert tensor.device.type in ("cpu", "cuda")
