"""The seed's import path for profiles: `from apt.core.config import load_profile`.

`apt` and `apt.core` are namespace packages, so a wider APT installation can add its
own modules beside these; this one only forwards to apt.vgpu.config.
"""

from apt.vgpu.config import available_profiles, load_profile

__all__ = ["available_profiles", "load_profile"]
