"""Watching the node's GPUs.

    from apt.vgpu.monitoring import GPUMonitor

    monitor = GPUMonitor(update_interval=1.0, metrics=['utilization', 'memory', 'temperature'])
    monitor.start()
    stats = monitor.get_current_stats()
    print(f"GPU {stats['gpu_id']}: {stats['utilization']}%, {stats['memory_used']}/{stats['memory_total']}, "
          f"{stats['temperature']} C")
    monitor.stop()

get_current_stats() describes one GPU at the top level, as the seed reads it: the
GPU of the calling thread's `with vgpu:` block, else GPU 0. Beyond the seed it
carries every GPU ('gpus'), the node aggregate ('node'), the virtual GPUs ('vgpus')
and processes. Units: utilization in percent, memory in bytes, temperature in degrees
Celsius, power in watts; a metric not selected (or not reported) is None.
"""

import atexit
import json
import weakref

from . import _core

__all__ = ["GPUMonitor"]

_live = weakref.WeakSet()


@atexit.register
def _stop_all():
    for monitor in list(_live):
        monitor.stop()


def _readings(metrics):
    return {
        "utilization": metrics.get("utilization_percent"),
        "memory_used": metrics.get("memory_used_bytes"),
        "memory_total": metrics.get("memory_total_bytes"),
        "temperature": metrics.get("temperature_celsius"),
        "power": metrics.get("power_watts"),
        "power_limit": metrics.get("power_limit_watts"),
        "memory_bandwidth": metrics.get("memory_bandwidth_utilization_percent"),
        "sm_clock_mhz": metrics.get("sm_clock_mhz"),
        "memory_clock_mhz": metrics.get("memory_clock_mhz"),
        "pcie_rx_bytes_per_second": metrics.get("pcie_rx_bytes_per_second"),
        "pcie_tx_bytes_per_second": metrics.get("pcie_tx_bytes_per_second"),
    }


def _stats(document, focus_gpu=None):
    doc = json.loads(document)
    gpus = []
    for gpu in doc.get("gpus", []):
        entry = {"gpu_id": gpu["index"], "name": gpu.get("name"), "uuid": gpu.get("uuid"),
                 "health": gpu.get("health", {}).get("state")}
        entry.update(_readings(gpu.get("metrics", {})))
        gpus.append(entry)
    if focus_gpu is None:
        from .runtime import current_vgpu

        vgpu = current_vgpu()
        focus_gpu = vgpu.gpu_id if vgpu is not None else 0
    focus = next((g for g in gpus if g["gpu_id"] == focus_gpu), gpus[0] if gpus else {"gpu_id": None})
    stats = dict(focus)
    stats.update({
        "time": doc.get("time"),
        "backend": doc.get("backend"),
        "gpus": gpus,
        "node": _readings(doc.get("aggregate", {})),
        "vgpus": doc.get("vgpus", []),
        "processes": doc.get("processes", []),
    })
    return stats


class GPUMonitor:
    """Samples the node's GPUs every `update_interval` seconds on a thread of its own.

    Args:
        update_interval: seconds between samples.
        metrics: of 'utilization', 'memory', 'temperature', 'power', 'bandwidth', 'clocks', 'pcie',
            'processes' (per-process attribution); default the first three.
        history: samples kept per GPU and metric.
        temperature_alert, memory_alert, power_alert: alert thresholds in degrees Celsius, percent of
            memory and percent of the power limit (None: no such alert); defaults 85, 95, None.
    """

    def __init__(self, update_interval=1.0, metrics=None, *, history=3600, temperature_alert=85.0,
                 memory_alert=95.0, power_alert=None):
        selected = list(metrics) if metrics is not None else ["utilization", "memory", "temperature"]
        self._core = _core.GPUMonitor(update_interval=update_interval, metrics=selected, history=history,
                                      temperature_alert=temperature_alert, memory_alert=memory_alert,
                                      power_alert=power_alert)
        self._callbacks = {}
        _live.add(self)

    def start(self):
        """Starts sampling (a no-op when it runs)."""
        self._core.start()

    def stop(self):
        """Stops sampling promptly; safe to call twice."""
        self._core.stop()

    @property
    def running(self):
        return self._core.running

    def get_current_stats(self, gpu=None):
        """The latest sample as a dict (one is taken when there is none yet); `gpu` picks the top-level GPU."""
        return _stats(self._core.current_json(), gpu)

    def sample(self, gpu=None):
        """Takes a sample now and returns it, as get_current_stats does."""
        return _stats(self._core.sample_json(), gpu)

    def history(self, metric, window=0.0, gpu=None):
        """{'count', 'min', 'avg', 'max', 'p50', 'p90', 'p99', 'last'} of `metric` over the last `window`
        seconds (0: everything kept), for `gpu` or the node; None when nothing was seen."""
        return self._core.history(metric, window, gpu)

    def history_values(self, metric, window=0.0, gpu=None):
        """The raw values of `metric`, oldest first."""
        return list(self._core.history_values(metric, window, gpu))

    def subscribe(self, callback):
        """Calls callback(stats) after every sample, on the sampling thread; returns an id for unsubscribe."""
        def deliver(document):
            callback(_stats(document))

        subscription = self._core.subscribe(deliver)
        self._callbacks[subscription] = deliver
        return subscription

    def on_alert(self, callback):
        """Calls callback(alert) when an alert is raised or cleared, on the sampling thread: alert is
        {'state': 'raised'|'cleared', 'kind', 'gpu', 'vgpu', 'value', 'threshold', 'time', 'message'}.
        Returns an id for unsubscribe."""
        subscription = self._core.on_alert(callback)
        self._callbacks[subscription] = callback
        return subscription

    def unsubscribe(self, subscription):
        self._core.unsubscribe(subscription)
        self._callbacks.pop(subscription, None)

    def active_alerts(self):
        """(rule, gpu, detail) for every threshold alert raised now."""
        return list(self._core.active_alerts())

    @property
    def samples_taken(self):
        return self._core.samples_taken

    @property
    def update_interval(self):
        return self._core.interval

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False
