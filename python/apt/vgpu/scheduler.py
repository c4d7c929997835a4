"""Running tasks on virtual GPUs.

    from apt.vgpu.scheduler import GPUScheduler

    scheduler = GPUScheduler(num_physical_gpus=8, max_virtual_gpus=32, scheduling_policy='fair')
    task_id = scheduler.submit_task(task=train_function, gpu_requirements={'memory': '16GB', 'compute': 0.25})
    result = scheduler.wait_for_task(task_id)

A task is any Python callable taking no argument (or one: a TaskContext). It runs on
one of the scheduler's worker threads, which holds the GIL only while Python code
runs; every wait releases it. Each running task holds a slice sized to its
requirements. wait_for_task returns the task's return value, or raises the task's
own exception (same type, original traceback). With isolation='process' the callable
runs in a child process bound to its slice (libvgpu-cuda.so enforces the memory limit
there) and its result comes back by pickle (cloudpickle when installed, so lambdas work).

Policies: 'fifo' (default), 'priority', 'fair', 'adaptive'. Placement: 'best_fit'
(default), 'spread', 'round_robin'.
"""

import atexit
import difflib
import inspect
import os
import pickle
import subprocess
import sys
import types
import weakref

from . import _core

__all__ = ["GPUScheduler", "TaskContext"]

_REQUIREMENT_KEYS = ("memory", "compute", "cpu", "priority", "user", "group", "max_retries", "auto_recover",
                     "fallback_gpu", "gpu", "timeout", "expected_duration", "name")

_live = weakref.WeakSet()  # schedulers to shut down before the interpreter finalizes


@atexit.register
def _shutdown_all():
    # Before finalization: workers still need the GIL to finish the tasks they run.
    for scheduler in list(_live):
        scheduler.shutdown()


class TaskContext:
    """What a task that takes one argument receives: its id, attempt and slice."""

    __slots__ = ("id", "attempt", "gpu_id", "device_name", "environment")

    def __init__(self, info):
        self.id = info["id"]
        self.attempt = info["attempt"]
        self.gpu_id = info["gpu_id"]
        self.device_name = info["device"]
        self.environment = dict(info["environment"])

    @property
    def device(self):
        """The slice's device as VirtualGPU.device gives it (a torch.device when torch is importable)."""
        from .runtime import _device

        return _device(self.device_name)

    def __repr__(self):
        return f"<TaskContext task {self.id} attempt {self.attempt} on {self.device_name}>"


def _takes_context(task):
    """True when `task` needs one positional argument (a TaskContext)."""
    code = getattr(task, "__code__", None)
    if code is not None and type(task) is types.FunctionType and not code.co_flags & 0x0C:  # no *args / **kwargs
        # The fast path for plain functions and lambdas (inspect.signature costs microseconds).
        required = code.co_argcount - len(task.__defaults__ or ())
        if required > 1:
            raise TypeError(f"task {task!r} needs {required} arguments; a task takes none, or one (its TaskContext)")
        return required == 1
    try:
        signature = inspect.signature(task)
    except (TypeError, ValueError):  # a builtin without a signature: call it without arguments
        return False
    required = [p for p in signature.parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(required) > 1:
        raise TypeError(f"task {task!r} needs {len(required)} arguments; a task takes none, or one (its TaskContext)")
    return len(required) == 1


def _requirements(gpu_requirements):
    if gpu_requirements is None:
        return {}
    if not isinstance(gpu_requirements, dict):
        raise TypeError("gpu_requirements must be a dict such as {'memory': '16GB', 'compute': 0.25}, "
                        f"not {type(gpu_requirements).__name__}")
    for key in gpu_requirements:
        if key not in _REQUIREMENT_KEYS:
            near = difflib.get_close_matches(str(key), _REQUIREMENT_KEYS, n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise ValueError(f"gpu_requirements: unknown key '{key}'{hint}; valid keys: {', '.join(_REQUIREMENT_KEYS)}")
    return dict(gpu_requirements)


def _dumps(obj):
    try:
        import cloudpickle
    except ImportError:
        return pickle.dumps(obj)
    return cloudpickle.dumps(obj)


def _in_child_process(payload, info):
    """Runs the pickled callable in a child Python (apt/vgpu/_child.py) bound to the task's slice."""
    env = dict(os.environ)
    env.update(info["environment"])
    if "libvgpu-cuda.so" not in env.get("LD_PRELOAD", ""):
        # Never run a process task unenforced, as `vgpu run --isolation intercept` refuses to.
        raise _core.VGPUProcessError(
            "isolation='process' needs libvgpu-cuda.so to hold the child to its slice, and it was not found: "
            "set VGPU_INTERCEPT_LIBRARY to its path (pip-installed apt.vgpu carries it in apt/vgpu/lib)")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    # The child runs _child.py by path (runpy), not `-m apt.vgpu._child`: it must not need the `apt`
    # name to resolve (python3-apt may own it in a system Python), nor put this package's folder first
    # on sys.path (its config.py or memory.py would hide a user's modules of those names).
    child = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_child.py")
    done = subprocess.run([sys.executable, "-c", "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')",
                           child], input=payload, env=env, capture_output=True, check=False)
    if done.returncode != 0 or not done.stdout:
        raise _core.VGPUProcessError(
            f"the task's child process (pid bound to GPU {info['gpu_id']}) exited with {done.returncode} without "
            f"a result: {done.stderr.decode(errors='replace').strip()[-2000:]}")
    status, value, child_traceback = pickle.loads(done.stdout)
    if status == "ok":
        return value
    if child_traceback:
        value.add_note(f"in the task's child process:\n{child_traceback}")
    raise value


class GPUScheduler:
    """Runs Python callables (and commands) on slices of this node's GPUs.

    Args:
        num_physical_gpus: GPUs the scheduler uses (on the simulated node: GPUs it has).
        max_virtual_gpus: slices leased at once, at most.
        scheduling_policy: 'fifo', 'priority', 'fair' or 'adaptive'.
        placement: 'best_fit', 'spread' or 'round_robin'.
        preemption: with 'priority', a higher-priority task may stop a running lower one (requeued).
        weights: fair-share weights by user or group.
        retry_backoff: seconds before the first retry (doubling after).
        max_retries: retries after a failure for tasks that do not set their own.
        workers: worker threads (0: one per slice, at most 256).
    """

    def __init__(self, num_physical_gpus=8, max_virtual_gpus=32, scheduling_policy="fifo", *, placement="best_fit",
                 preemption=False, weights=None, retry_backoff=1.0, max_retries=0, workers=0):
        self._core = _core.GPUScheduler(num_physical_gpus=num_physical_gpus, max_virtual_gpus=max_virtual_gpus,
                                        scheduling_policy=scheduling_policy, placement=placement,
                                        preemption=preemption, weights=dict(weights or {}),
                                        retry_backoff=retry_backoff, max_retries=max_retries, workers=workers)
        _live.add(self)

    @classmethod
    def from_config(cls, config):
        """A scheduler as a profile's `vgpu` section describes it (policy, placement, retries, limits)."""
        scheduler = cls.__new__(cls)
        scheduler._core = _core.GPUScheduler.from_config(config)
        _live.add(scheduler)
        return scheduler

    def submit_task(self, task, gpu_requirements=None, *, name="", isolation="thread"):
        """Queues `task` and returns its id at once.

        gpu_requirements: {'memory': '16GB' or bytes, 'compute': 0.25, 'cpu': cores, 'priority': 0, 'user': '', 'group': '',
        'max_retries': n, 'auto_recover': True, 'fallback_gpu': n, 'gpu': n, 'timeout': seconds,
        'expected_duration': seconds, 'name': ''}. isolation: 'thread' (in this process) or 'process'
        (a child process bound to the slice, under libvgpu-cuda.so).
        """
        if not callable(task):
            raise TypeError(f"task must be callable (a function or a lambda), not {type(task).__name__}")
        requirements = _requirements(gpu_requirements)
        if name:
            requirements.setdefault("name", name)
        if isolation == "thread":
            if _takes_context(task):
                def with_context(info):
                    return task(TaskContext(info))

                return self._core.submit(with_context, with_context=True, **requirements)
            return self._core.submit(task, with_context=False, **requirements)
        if isolation == "process":
            payload = _dumps(task)  # here, so that a callable that cannot be pickled fails at submission

            def run_in_child(info):
                return _in_child_process(payload, info)

            return self._core.submit(run_in_child, with_context=True, isolation="intercept", **requirements)
        raise ValueError(f"isolation='{isolation}' is not one of 'thread', 'process'")

    def submit_command(self, args, gpu_requirements=None, *, isolation="intercept", name=""):
        """Queues a command run as a child process bound to its slice; its result is {'exit_code', 'output'}."""
        requirements = _requirements(gpu_requirements)
        argv = args.split() if isinstance(args, str) else [str(a) for a in args]
        return self._core.submit_command(argv, memory=requirements.get("memory"), compute=requirements.get("compute"),
                                         priority=requirements.get("priority", 0), isolation=isolation,
                                         name=requirements.get("name", name))

    def wait_for_task(self, task_id):
        """Waits for the task (the GIL released) and returns its result, or raises its exception."""
        return self._core.wait_for_task(task_id)

    def wait_all(self, task_ids):
        """Waits for every task; returns their results in order, or raises the first failure once all ended."""
        return list(self._core.wait_all(list(task_ids)))

    def cancel(self, task_id):
        """Cancels a queued or running task; False when it had already ended."""
        return self._core.cancel(task_id)

    def status(self, task_id):
        """{'id', 'name', 'state', 'gpu', 'memory', 'compute', 'priority', 'attempts', 'error'}."""
        return self._core.status(task_id)

    def snapshot(self):
        """Queued and running tasks, per-GPU use, slices in use, the policy."""
        return self._core.snapshot()

    @property
    def num_physical_gpus(self):
        return self._core.num_physical_gpus

    def shutdown(self):
        """Cancels queued tasks, asks running ones to stop and waits for them. Idempotent."""
        core = getattr(self, "_core", None)
        if core is not None:
            core.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.shutdown()
        return False
