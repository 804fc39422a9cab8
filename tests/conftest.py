"""Test-wide settings, applied before JAX is imported anywhere.

- 8 fake CPU devices, so sharding tests can build a 2x4 mesh (single-device tests use device 0).
- JAX on the CPU even where a GPU exists (tests must never need one; `gpu` marks the few that do).
- MuJoCo renders headless through EGL.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
