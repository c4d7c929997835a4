#!/usr/bin/env python3
"""Costs of the Python package apt.vgpu, with Python's own thread pool as the baseline.

    PYTHONPATH=build/release/python .venv/bin/python3 bench/python_bench.py [--tasks 20000] [--json]

Measures, on the simulated node unless a GPU is there:
  - submit -> start: from submit_task() returning to the task's first line (median, p90), one task
    at a time (the previous one waited for), for GPUScheduler and for ThreadPoolExecutor;
  - throughput: submit N no-op tasks, then wait_all (tasks/s), for both;
  - create_vgpu + `with vgpu:` enter/exit (median), and the scope alone.
"""

import argparse
import concurrent.futures
import json
import os
import statistics
import time

os.environ.setdefault("VGPU_LOG_LEVEL", "error")

from apt.vgpu.runtime import create_vgpu  # noqa: E402
from apt.vgpu.scheduler import GPUScheduler  # noqa: E402


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def latency(submit, wait, rounds):
    samples = []
    for _ in range(rounds):
        started = []
        t0 = time.perf_counter_ns()
        handle = submit(lambda: started.append(time.perf_counter_ns()))
        wait(handle)
        samples.append((started[0] - t0) / 1000.0)
    return {"median_us": statistics.median(samples), "p90_us": percentile(samples, 0.9)}


def throughput(submit, wait_all, tasks):
    t0 = time.perf_counter()
    handles = [submit(lambda: None) for _ in range(tasks)]
    wait_all(handles)
    return tasks / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workers = 8
    results = {}
    with GPUScheduler(num_physical_gpus=8, max_virtual_gpus=32, workers=workers) as scheduler:
        results["scheduler_submit_to_start"] = latency(scheduler.submit_task, scheduler.wait_for_task, args.rounds)
        results["scheduler_tasks_per_second"] = throughput(scheduler.submit_task, scheduler.wait_all, args.tasks)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results["threadpool_submit_to_start"] = latency(pool.submit, lambda f: f.result(), args.rounds)
        results["threadpool_tasks_per_second"] = throughput(
            pool.submit, lambda fs: [f.result() for f in fs], args.tasks)
    create = []
    scope = []
    vgpu = create_vgpu(physical_gpu_id=0, memory_limit="1GB", compute_ratio=0.1)
    for _ in range(args.rounds):
        t0 = time.perf_counter_ns()
        fresh = create_vgpu(physical_gpu_id=1, memory_limit="1GB", compute_ratio=0.1)
        with fresh:
            pass
        fresh.close()
        create.append((time.perf_counter_ns() - t0) / 1000.0)
        t0 = time.perf_counter_ns()
        with vgpu:
            pass
        scope.append((time.perf_counter_ns() - t0) / 1000.0)
    results["create_vgpu_enter_exit_close_us"] = statistics.median(create)
    results["scope_enter_exit_us"] = statistics.median(scope)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    s, p = results["scheduler_submit_to_start"], results["threadpool_submit_to_start"]
    print(f"submit -> start      GPUScheduler {s['median_us']:8.1f} us median ({s['p90_us']:.1f} p90)   "
          f"ThreadPoolExecutor {p['median_us']:8.1f} us median ({p['p90_us']:.1f} p90)   ratio {s['median_us'] / p['median_us']:.2f}")
    st, pt = results["scheduler_tasks_per_second"], results["threadpool_tasks_per_second"]
    print(f"throughput           GPUScheduler {st:8.0f} tasks/s                ThreadPoolExecutor {pt:8.0f} tasks/s"
          f"                ratio {st / pt:.2f}")
    print(f"create_vgpu + with + close {results['create_vgpu_enter_exit_close_us']:.1f} us median; "
          f"`with vgpu:` alone {results['scope_enter_exit_us']:.1f} us median")


if __name__ == "__main__":
    main()
