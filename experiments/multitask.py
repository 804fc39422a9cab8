"""VLAW on all five task families at once (the paper's multi-task setting, Fig. 7 and Table 2).

Run (built-in simulated DROID station, small models):
  python launch.py --config=experiments/multitask.py:sim --workdir=runs/multitask_sim
Paper scale:
  python launch.py --config=experiments/multitask.py --workdir=/path/to/workdir
Presets: tiny | sim | paper (default); see vlaw/config.py.
"""

from vlaw.config import TASKS, experiment_config


def get_config(arg=None):
    return experiment_config(TASKS, arg)
