"""The DROID-shaped scene: a table, the Panda on it, DROID's three cameras, and a task's objects.

Frames: the world frame is the robot base frame (DROID's `cartesian_position` frame); the table
top is the plane z = 0 and the workspace lies in front of the robot (+x). Only primitive geoms
and one texture shared by every task, so that one OpenGL context can draw every task's scene
(render.py).

Physics: 16 substeps of 1/240 s per 15 Hz control step, the implicit-in-velocity integrator
(stable under the servos' damping), pyramidal friction cones.
"""

import mujoco

from vlaw.data import cameras
from vlaw.sim import panda

CONTROL_HZ = 15
PHYSICS_SUBSTEPS = 16
TIMESTEP = 1.0 / (CONTROL_HZ * PHYSICS_SUBSTEPS)
TABLE_HALF_EXTENT = (0.6, 0.7)  # x, y: the table spans x in [-0.1, 1.1], y in [-0.7, 0.7]
TABLE_CENTER_X = 0.5
# Where tasks place their objects (x range, y range), in reach of the arm and in all views.
WORKSPACE_X = (0.42, 0.68)
WORKSPACE_Y = (-0.22, 0.22)
# The exterior cameras (where they stand, their field of view) live in `vlaw.data.cameras`: the
# world model's pose maps project into the same cameras.


def scene_xml(task_defaults: str, task_bodies: str, task_extras: str = "") -> str:
    """The whole MJCF: options, defaults, table, robot, cameras and a task's objects.

    task_defaults: extra <default> classes; task_bodies: bodies inside <worldbody>;
    task_extras: top-level elements after <worldbody> (e.g. <contact>, <equality>).
    """
    camera_xml = "\n".join(
        f'<camera name="{name}" pos="{panda._vec(eye)}" '
        f'xyaxes="{panda.lookat_xyaxes(eye, target)}" fovy="{cameras.CAMERA_FOVY}"/>'
        for name, (eye, target) in cameras.EXTERIOR_CAMERAS.items()
    )
    half_x, half_y = TABLE_HALF_EXTENT
    return f"""
<mujoco model="vlaw_droid_station">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP:.8f}" integrator="implicitfast" cone="pyramidal"/>
  <size memory="20M"/>
  <visual>
    <global offwidth="640" offheight="480"/>
    <quality shadowsize="0" offsamples="0" numslices="12" numstacks="6" numquads="1"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0.05 0.05 0.05"/>
  </visual>
  <asset>
    <!-- A faint wood-like checker: textured surfaces give the cameras (the wrist camera most)
         visible motion, as a real table top does. The same for every task, so one GL context
         serves all (render.py). -->
    <texture name="table" type="2d" builtin="checker" rgb1="0.63 0.51 0.39" rgb2="0.56 0.45 0.34"
             width="64" height="64"/>
    <material name="table" texture="table" texrepeat="6 7" specular="0.05"/>
  </asset>
  <default>
    <geom contype="1" conaffinity="3" friction="1.0 0.01 0.001" solref="0.005 1"/>
    {panda.panda_defaults_xml()}
    {task_defaults}
  </default>
  <worldbody>
    <light pos="0.5 0 1.6" dir="0 0 -1" diffuse="0.55 0.55 0.55" castshadow="false"/>
    <geom name="floor" type="plane" pos="0 0 -0.76" size="3 3 0.1" rgba="0.42 0.4 0.38 1"/>
    <geom name="table" type="box" pos="{TABLE_CENTER_X} 0 -0.02" size="{half_x} {half_y} 0.02"
          material="table"/>
    <geom name="table_leg" type="box" pos="{TABLE_CENTER_X} 0 -0.4" size="0.05 0.05 0.36"
          rgba="0.3 0.3 0.3 1" contype="0" conaffinity="0"/>
    <geom name="backdrop" type="box" pos="-0.45 0 0.3" size="0.02 1.5 0.8"
          rgba="0.75 0.78 0.8 1" contype="0" conaffinity="0"/>
    {camera_xml}
    {panda.panda_body_xml()}
    {task_bodies}
  </worldbody>
  <tendon>
    {panda.panda_tendon_xml()}
  </tendon>
  <equality>
    {panda.panda_equality_xml()}
  </equality>
  <actuator>
    {panda.panda_actuators_xml()}
  </actuator>
  {task_extras}
</mujoco>"""


def build_model(task_defaults: str, task_bodies: str, task_extras: str = "") -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(scene_xml(task_defaults, task_bodies, task_extras))
