"""Profiles: load_profile('standard') reads and validates a YAML profile.

    from apt.vgpu.config import load_profile      # or: from apt.core.config import load_profile
    config = load_profile('standard')
    vgpu = VirtualGPU.from_config(config.vgpu)

A name is searched in $VGPU_PROFILE_PATH, ./profiles and the installed profiles; a
path is read as is. Errors are VGPUConfigError (a ValueError) naming file, line and key.
"""

from . import _core

Config = _core.Config
VgpuConfig = _core.VgpuConfig

__all__ = ["Config", "VgpuConfig", "available_profiles", "load_profile"]


def load_profile(name_or_path):
    """The validated profile `name_or_path` (a profile name or a file path)."""
    return _core.load_profile(str(name_or_path))


def available_profiles():
    """Names of the profiles on the search path."""
    return list(_core.available_profiles())
