"""The simulated DROID station on MuJoCo: Panda + parallel gripper, five tasks, scripted experts,
tiled headless rendering and worker processes (see station.py, tasks/, expert.py, workers.py).

MuJoCo picks its OpenGL backend when it is first imported: default to headless EGL here, before
any submodule imports `mujoco`.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
