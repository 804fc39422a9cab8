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

import pytest  # noqa: E402  (after the environment above: JAX must not see it unset)


@pytest.fixture(scope="session")
def record_real_rollouts():
    """`record(config, workdir, iteration)`: writes `iter_NN/real` as `collect` would, through
    the same recorder, with the scripted expert acting in place of iteration NN-1's trained
    policy (a trained policy costs minutes of compilation; these tests are about what the
    later phases do with real rollouts, not about who made them)."""

    def record(config, workdir: str, iteration: int) -> str:
        from vlaw import workdir as workdir_lib
        from vlaw.rollout.episodes import record_dataset

        directory = workdir_lib.real_dir(workdir, iteration)
        per_task = int(config.loop.real_rollouts_per_task)
        specs = workdir_lib.task_specs(config, "real", iteration, per_task)
        record_dataset(config, directory, specs, "real", iteration, "vlaw_real")
        return directory

    return record
