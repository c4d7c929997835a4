"""apt.vgpu.scheduler: the seed's scheduler examples verbatim, Python callables on
the scheduler's threads (results, exceptions, the GIL), and processes bound to slices."""

import subprocess
import sys
import textwrap
import threading

import pytest

from apt.vgpu import VGPUProcessError, VGPUTaskError
from apt.vgpu.scheduler import GPUScheduler, TaskContext

from conftest import run_seed


def needs_gpus(gpus, count):
    if gpus < count:
        pytest.skip(f"the seed writes num_physical_gpus={count}; this run has --gpus={gpus}")


def test_seed_scheduler_example(gpus):
    needs_gpus(gpus, 8)
    ns = run_seed("""
        from apt.vgpu.scheduler import GPUScheduler

        scheduler = GPUScheduler(
            num_physical_gpus=8,
            max_virtual_gpus=32,
            scheduling_policy='fair'
        )

        task_id = scheduler.submit_task(
            task=train_function,
            gpu_requirements={'memory': '16GB', 'compute': 0.25}
        )

        result = scheduler.wait_for_task(task_id)
    """)
    assert ns["result"] == "trained"
    ns["scheduler"].shutdown()


def test_seed_many_tasks_example(gpus):
    needs_gpus(gpus, 4)
    ns = run_seed("""
        scheduler = GPUScheduler(num_physical_gpus=4, max_virtual_gpus=16)
        task_ids = []
        for i in range(10):
            task_id = scheduler.submit_task(
                task=lambda: train_model(f'model_{i}'),
                gpu_requirements={'memory': '10GB'}
            )
            task_ids.append(task_id)
        results = scheduler.wait_all(task_ids)
    """, GPUScheduler=GPUScheduler)
    results = ns["results"]
    assert len(results) == 10
    # The seed's lambda reads `i` when it runs (Python's late binding), so names may repeat.
    assert all(r.startswith("model_") and r.endswith(" trained") for r in results)
    ns["scheduler"].shutdown()


def test_results_and_requirements(gpus):
    with GPUScheduler(num_physical_gpus=gpus, max_virtual_gpus=2 * gpus) as scheduler:
        ids = [scheduler.submit_task(lambda n=n: n * n, {"memory": 2_000_000_000, "compute": 0.5}) for n in range(50)]
        assert scheduler.wait_all(ids) == [n * n for n in range(50)]
        seen = []
        task = scheduler.submit_task(lambda ctx: seen.append(ctx) or ctx.device_name, {"memory": "1GB"})
        device = scheduler.wait_for_task(task)
        assert isinstance(seen[0], TaskContext) and seen[0].environment["VGPU_MEMORY_LIMIT"] == "1000000000"
        assert device == seen[0].device_name
        assert scheduler.status(task)["state"] == "succeeded"


def test_a_process_task_is_never_run_unenforced(monkeypatch):
    monkeypatch.setenv("VGPU_INTERCEPT_LIBRARY", "/nonexistent/libvgpu-cuda.so")
    with GPUScheduler(num_physical_gpus=1, max_virtual_gpus=2) as scheduler:
        task = scheduler.submit_task(lambda: "ran", isolation="process")
        with pytest.raises(VGPUProcessError, match="VGPU_INTERCEPT_LIBRARY"):
            scheduler.wait_for_task(task)


def test_a_tasks_exception_comes_back_with_its_type_and_traceback():
    class TrainingDiverged(ArithmeticError):
        pass

    def diverge():
        raise TrainingDiverged("loss is nan at step 12")

    with GPUScheduler(num_physical_gpus=1, max_virtual_gpus=2) as scheduler:
        task = scheduler.submit_task(diverge)
        with pytest.raises(TrainingDiverged, match="loss is nan") as error:
            scheduler.wait_for_task(task)
        frames = [frame.name for frame in error.traceback]
        assert "diverge" in frames, frames
        ok = scheduler.submit_task(lambda: "fine")
        failing = scheduler.submit_task(diverge)
        with pytest.raises(TrainingDiverged):
            scheduler.wait_all([ok, failing])
        assert scheduler.wait_for_task(ok) == "fine"


def test_bad_requirements_are_caught_at_submission():
    with GPUScheduler(num_physical_gpus=1, max_virtual_gpus=2) as scheduler:
        with pytest.raises(ValueError, match="did you mean 'memory'"):
            scheduler.submit_task(lambda: 1, {"memroy": "1GB"})
        with pytest.raises(ValueError, match="memory"):
            scheduler.submit_task(lambda: 1, {"memory": "lots"})
        with pytest.raises(ValueError):
            scheduler.submit_task(lambda: 1, {"memory": "200GB"})  # more than any GPU of the node has
        with pytest.raises(ValueError, match="cpu"):
            scheduler.submit_task(lambda: 1, {"cpu": 100000})  # more cores than this machine has
        assert scheduler.wait_for_task(scheduler.submit_task(lambda: "ok", {"cpu": 1})) == "ok"
        with pytest.raises(TypeError, match="callable"):
            scheduler.submit_task("train.py")
        with pytest.raises(TypeError, match="arguments"):
            scheduler.submit_task(lambda a, b: a + b)
    with pytest.raises(ValueError, match="policy|scheduling"):
        GPUScheduler(num_physical_gpus=1, scheduling_policy="lottery")


def test_tasks_submit_and_wait_for_tasks_without_deadlock():
    with GPUScheduler(num_physical_gpus=2, max_virtual_gpus=8) as scheduler:
        def parent():
            children = [scheduler.submit_task(lambda k=k: k + 1) for k in range(5)]
            return sum(scheduler.wait_all(children))

        assert scheduler.wait_for_task(scheduler.submit_task(parent)) == 15


def test_many_python_threads_submit_and_wait(gpus):
    with GPUScheduler(num_physical_gpus=gpus, max_virtual_gpus=4 * gpus) as scheduler:
        results = {}
        errors = []

        def client(number):
            try:
                ids = [scheduler.submit_task(lambda k=k: (number, k), {"memory": "1GB"}) for k in range(100)]
                results[number] = scheduler.wait_all(ids)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(results[n] == [(n, k) for k in range(100)] for n in range(8))


def test_cancel_a_queued_task():
    with GPUScheduler(num_physical_gpus=1, max_virtual_gpus=1) as scheduler:
        gate = threading.Event()
        blocker = scheduler.submit_task(gate.wait)
        queued = scheduler.submit_task(lambda: "never")
        assert scheduler.cancel(queued)
        gate.set()
        assert scheduler.wait_for_task(blocker) is True
        with pytest.raises(VGPUTaskError, match="cancel"):
            scheduler.wait_for_task(queued)


def test_a_process_task_runs_bound_to_its_slice():
    pytest.importorskip("cloudpickle")
    with GPUScheduler(num_physical_gpus=1, max_virtual_gpus=2) as scheduler:
        import os

        task = scheduler.submit_task(lambda: (os.getpid(), os.environ["VGPU_MEMORY_LIMIT"],
                                              "libvgpu-cuda.so" in os.environ.get("LD_PRELOAD", "")),
                                     {"memory": "3GB"}, isolation="process")
        pid, limit, preloaded = scheduler.wait_for_task(task)
        assert pid != os.getpid() and limit == "3000000000" and preloaded
        failing = scheduler.submit_task(lambda: {}["missing"], isolation="process")
        with pytest.raises(KeyError) as error:
            scheduler.wait_for_task(failing)
        assert any("child process" in note for note in getattr(error.value, "__notes__", []))
        crashing = scheduler.submit_task(lambda: os._exit(7), isolation="process")
        with pytest.raises(VGPUProcessError, match="exited with 7"):
            scheduler.wait_for_task(crashing)


def test_the_interpreter_exits_with_tasks_queued_and_running():
    script = textwrap.dedent("""
        import time
        from apt.vgpu.scheduler import GPUScheduler
        scheduler = GPUScheduler(num_physical_gpus=1, max_virtual_gpus=2)
        for _ in range(20):
            scheduler.submit_task(lambda: time.sleep(0.2))
        print("submitted", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "submitted"


def test_scenario_1_thirty_two_small_jobs_on_eight_gpus(gpus):
    needs_gpus(gpus, 8)
    with GPUScheduler(num_physical_gpus=8, max_virtual_gpus=32) as scheduler:
        gate = threading.Barrier(32, timeout=60)  # all 32 hold their slices at once
        ids = [scheduler.submit_task(lambda: gate.wait() >= 0, {"memory": "5GB"}) for _ in range(32)]
        assert scheduler.wait_all(ids) == [True] * 32


def test_scenario_4_a_hundred_configurations(gpus):
    needs_gpus(gpus, 8)
    with GPUScheduler(num_physical_gpus=8) as scheduler:
        configs = [{"lr": 10 ** -(k % 5), "batch": 2 ** (k % 7)} for k in range(100)]
        ids = [scheduler.submit_task(lambda c=c: c["lr"] * c["batch"], {"memory": "8GB"}) for c in configs]
        assert scheduler.wait_all(ids) == [c["lr"] * c["batch"] for c in configs]
