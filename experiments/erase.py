"""VLAW on one task family: Erase marker lines with a tissue.

Run (built-in simulated DROID station, small models; a laptop CPU):
  python launch.py --config=experiments/erase.py:sim --workdir=runs/erase_sim
Paper scale (a real DROID station, DROID shards, real checkpoints; GPU/TPU pods):
  python launch.py --config=experiments/erase.py --workdir=/path/to/workdir
Tests: experiments/erase.py:tiny.

Presets: tiny | sim | paper (default). The paper's hyper-parameters: 50 real rollouts per task
and iteration, 500 synthetic per task, 2 iterations, world model 50K steps, reward model 200
steps at batch 128, policy 2k steps at batch 256, alpha = 0.8, 16 reward frames, 25 warm-start
demonstrations per task (VLAW §5.1 and Appendix C).
"""

from vlaw.config import experiment_config


def get_config(arg=None):
    return experiment_config(("erase",), arg)
