"""Shared pieces of the apt.vgpu tests: the --gpus option, and small stand-ins for
the names the seed's examples use (APTLargeModel, Trainer, train_function,
train_model, input_data), so that each example runs verbatim.

    pytest python/tests/                              # the whole suite
    pytest python/tests/test_scheduler.py --gpus=4    # a 4-GPU simulated node (or 4 real GPUs)
"""

import os
import textwrap
import time

import pytest


def pytest_addoption(parser):
    parser.addoption("--gpus", type=int, default=None,
                     help="GPUs to schedule on: sizes the simulated node (COUNTx80GB), or uses that many real GPUs")


def pytest_configure(config):
    gpus = config.getoption("--gpus")
    if gpus is not None:
        if gpus < 1:
            raise pytest.UsageError(f"--gpus={gpus}: give at least 1")
        # Read when the node is first opened (after this): the simulated node's shape.
        os.environ.setdefault("VGPU_SIM_GPUS", f"{gpus}x80GB")
    # The node under test is a shared development server (the seed's scenario 3: 16
    # developers on 4 GPUs needs more than the standard profile's 8 slices at once).
    os.environ.setdefault("VGPU_PROFILE", "development")
    config.addinivalue_line("markers", "gpu: needs a real GPU (skipped without one)")


@pytest.fixture
def gpus(request):
    """How many GPUs the scheduling tests use (--gpus, default 8)."""
    return request.config.getoption("--gpus") or 8


class APTLargeModel:
    """Stands in for a model: .to(device) remembers the device, calling it returns its input."""

    def __init__(self):
        self.device = None

    def to(self, device):
        self.device = device
        return self

    def __call__(self, data):
        return data


class Trainer:
    """Stands in for APT's trainer: train() runs a few steps on its device."""

    def __init__(self, model, device, vgpu_config=None):
        self.model = model
        self.device = device
        self.vgpu_config = vgpu_config or {}
        self.is_training = False
        self.steps = 0

    def train(self):
        self.is_training = True
        for _ in range(3):
            self.model(self.steps)
            self.steps += 1
        self.is_training = False


def train_function():
    return "trained"


def train_model(name):
    return f"{name} trained"


def seed_namespace(**extra):
    """The names the seed's examples expect to exist."""
    namespace = {"APTLargeModel": APTLargeModel, "Trainer": Trainer, "train_function": train_function,
                 "train_model": train_model, "input_data": [1, 2, 3], "model": APTLargeModel(), "time": time}
    namespace.update(extra)
    return namespace


def run_seed(code, **extra):
    """Runs a code block of the seed verbatim; returns its namespace."""
    namespace = seed_namespace(**extra)
    exec(compile(textwrap.dedent(code), "<seed example>", "exec"), namespace)  # noqa: S102 - the seed's own text
    return namespace
