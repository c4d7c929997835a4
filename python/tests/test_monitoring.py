"""apt.vgpu.monitoring: the seed's monitoring examples verbatim and the stats' shape."""

import threading

import pytest

from apt.vgpu.monitoring import GPUMonitor
from apt.vgpu.runtime import VirtualGPU

from conftest import APTLargeModel, Trainer, run_seed


def test_seed_monitoring_example(capsys):
    run_seed("""
        from apt.vgpu.monitoring import GPUMonitor

        monitor = GPUMonitor(
            update_interval=1.0,  # seconds
            metrics=['utilization', 'memory', 'temperature']
        )
        monitor.start()

        stats = monitor.get_current_stats()
        print(f"GPU utilization: {stats['utilization']}%")
        print(f"GPU memory: {stats['memory_used']}/{stats['memory_total']}")
        print(f"GPU temperature: {stats['temperature']}°C")

        monitor.stop()
    """)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("GPU utilization: ") and lines[0].endswith("%")
    assert lines[1].startswith("GPU memory: ") and "/" in lines[1]
    assert lines[2].startswith("GPU temperature: ") and lines[2].endswith("°C")
    assert "None" not in "".join(lines), "every selected metric has a reading on the simulated node"


def test_seed_monitoring_during_training(capsys):
    run_seed("""
        monitor = GPUMonitor(update_interval=0.5)
        monitor.start()
        trainer.train()
        while trainer.is_training:
            stats = monitor.get_current_stats()
            print(f"GPU {stats['gpu_id']}: utilization={stats['utilization']}%, "
                  f"memory={stats['memory_used']}/{stats['memory_total']}")
            time.sleep(5)
        monitor.stop()
    """, GPUMonitor=GPUMonitor, trainer=Trainer(model=APTLargeModel(), device="cpu"))


def test_stats_describe_the_current_vgpus_gpu_and_the_whole_node():
    monitor = GPUMonitor(update_interval=0.5, metrics=["utilization", "memory", "temperature", "power"])
    with VirtualGPU(gpu_id=3, memory_limit="4GB", compute_ratio=0.5):
        stats = monitor.sample()
    assert stats["gpu_id"] == 3
    assert stats["memory_total"] > 0 and stats["power"] is not None
    assert len(stats["gpus"]) >= 4 and stats["gpus"][3]["gpu_id"] == 3
    assert set(stats["node"]) >= {"utilization", "memory_used", "memory_total", "temperature"}
    assert any(v["gpu"] == 3 and v["memory_limit_bytes"] == 4_000_000_000 for v in stats["vgpus"])
    assert monitor.sample(gpu=1)["gpu_id"] == 1
    only_memory = GPUMonitor(update_interval=0.5, metrics=["memory"]).sample()
    assert only_memory["temperature"] is None and only_memory["memory_total"] > 0


def test_subscribers_get_every_sample_on_the_sampling_thread():
    monitor = GPUMonitor(update_interval=0.05)
    got = []
    three = threading.Event()

    def on_sample(stats):
        got.append((threading.current_thread() is threading.main_thread(), stats["gpu_id"]))
        if len(got) >= 3:
            three.set()

    monitor.subscribe(on_sample)
    with monitor:
        assert three.wait(60)
    assert all(not on_main for on_main, _ in got)
    assert monitor.samples_taken >= 3
    assert monitor.history("utilization")["count"] >= 3


def test_alerts_reach_python_callbacks():
    monitor = GPUMonitor(update_interval=0.05, temperature_alert=1.0)  # any GPU is warmer than 1 C
    raised = []
    seen = threading.Event()

    def on_alert(alert):
        raised.append(alert)
        seen.set()

    monitor.on_alert(on_alert)
    with monitor:
        assert seen.wait(60)
    alert = raised[0]
    assert alert["state"] == "raised" and alert["kind"] == "temperature" and alert["threshold"] == 1.0
    assert alert["value"] > 1.0 and "temperature" in alert["message"]
    assert any(rule == "temperature" for rule, _, _ in monitor.active_alerts())


def test_bad_arguments():
    with pytest.raises(ValueError, match="update_interval"):
        GPUMonitor(update_interval=0)
    with pytest.raises(ValueError, match="metric"):
        GPUMonitor(metrics=["utilisation"])
