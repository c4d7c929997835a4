"""apt.vgpu: virtual GPUs on one physical GPU, with the API of the APT vGPU seed.

    from apt.vgpu.runtime import VirtualGPU, create_vgpu
    from apt.vgpu.scheduler import GPUScheduler
    from apt.vgpu.memory import GPUMemoryManager
    from apt.vgpu.monitoring import GPUMonitor
    from apt.vgpu.config import load_profile      # also: from apt.core.config import load_profile

The work is done by the C++ library (apt.vgpu._core). On a machine without a GPU
everything runs on the built-in simulated node (8 x 80 GB unless VGPU_SIM_GPUS or a
profile says otherwise); when vgpud runs, slices are granted by it. See docs/python.md.
"""

import os as _os

try:
    from . import _core
except ImportError as _error:  # pragma: no cover - a broken install
    raise ImportError(
        "apt.vgpu's compiled core (apt.vgpu._core) is missing or does not load: install the package with "
        "`pip install .` from the repository, or put build/<preset>/python on PYTHONPATH after "
        f"`cmake --build --preset dev` ({_error})"
    ) from _error

# The wheel carries libvgpu-cuda.so; children bound to a slice preload it.
_bundled_library = _os.path.join(_os.path.dirname(__file__), "lib", "libvgpu-cuda.so")
if "VGPU_INTERCEPT_LIBRARY" not in _os.environ and _os.path.exists(_bundled_library):
    _os.environ["VGPU_INTERCEPT_LIBRARY"] = _bundled_library

# The package carries the profiles (standard, training, ...): searched after the user's own.
_bundled_profiles = _os.path.join(_os.path.dirname(__file__), "profiles")
if _os.path.isdir(_bundled_profiles):
    _search = [p for p in _os.environ.get("VGPU_PROFILE_PATH", "").split(":") if p]
    if _bundled_profiles not in _search:
        _os.environ["VGPU_PROFILE_PATH"] = ":".join(_search + [_bundled_profiles])

from . import errors as _errors  # noqa: E402
from .errors import *  # noqa: E402,F401,F403 - the exception types, listed once in errors.__all__

__version__ = "0.1.0"

__all__ = [*_errors.__all__, "parse_size"]


def parse_size(value, what="size"):
    """Bytes from an int or a size string: '20GB' is 20*10**9, '16GiB' is 16*2**30."""
    return _core.parse_size(value, what)
