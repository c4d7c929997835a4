"""The exceptions apt.vgpu raises.

A caller's mistake is a ValueError (VGPUInvalidArgument, VGPUConfigError) or a
TypeError, with the C++ message naming the field, the value and the fix. Failures
at run time are RuntimeErrors: VGPUCapacityError (a request does not fit what is
free), VGPUDeviceError (the GPU backend failed, or a GPU is lost), VGPUProcessError
(a child could not be started), VGPUTaskError (a task was cancelled, timed out, or its
command failed). The memory pool's exhaustion is VGPUOutOfMemoryError, both a
MemoryError and a VGPUCapacityError. All but the ValueErrors derive from VGPUError.
"""

from ._core import (
    VGPUCapacityError,
    VGPUConfigError,
    VGPUDeviceError,
    VGPUError,
    VGPUInvalidArgument,
    VGPUOutOfMemoryError,
    VGPUProcessError,
    VGPUTaskError,
)

__all__ = [
    "VGPUCapacityError",
    "VGPUConfigError",
    "VGPUDeviceError",
    "VGPUError",
    "VGPUInvalidArgument",
    "VGPUOutOfMemoryError",
    "VGPUProcessError",
    "VGPUTaskError",
]
