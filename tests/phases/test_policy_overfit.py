"""The overfit gate of issue 13: at the sim preset, a policy trained on 3 scripted
demonstrations must reproduce them.

Two checks on one trained checkpoint: its sampled arm actions fit its own training chunks
(R^2 > 0.95 over the 7 joint velocities, every step of every demo, in the station's units), and
rolled out from the demos' own layouts (the same seeds) it succeeds. A policy that cannot do
this cannot learn from 25 demos either, whatever else is wrong.

The demos are the scripted expert's without injected noise (`sim.expert_noise = 0`): at the
preset's 0.3 the arm commands carry per-step Gaussian noise that no observation explains, and
even without it ~20 % of the arm actions' variance is step-to-step (the expert's closed loop
reacting to joint velocities the policy does not observe; benchmarks/RESULTS.md, "Policy at
the sim preset"). Slow: the sim preset's model trains for OVERFIT_STEPS steps on the CPU.
"""

import os

import numpy as np
import pytest

from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.agents import policy as policy_lib
from vlaw.config import experiment_config
from vlaw.data import droid, rlds_read, transforms
from vlaw.rollout.episodes import policy_stream
from vlaw.rollout.station import Observation

# The gate is issue 13's open question: expected to fail until a recipe meets it (the run that
# does passes as XPASS and this mark goes).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.xfail(
        reason="issue 13: no sim recipe has met the overfit gate yet (3 000 steps: R^2 0.947, "
        "0 of 3 replays; with DART corrections at spread 0.3, 1 000 steps: R^2 0.81, 0 of 3; "
        "benchmarks/RESULTS.md, 'Policy at the sim preset' and 'Recovery data (DART)')",
        strict=False,
    ),
]

NUM_DEMOS = 3
# Demonstrations collected so that NUM_DEMOS succeed: with the low-passed expert the first 5
# noise-free layouts of seed 0's demo stream give 3 successes (the failures weigh 0 in training).
COLLECTED_DEMOS = 5
# With the smoother expert the recipe fits R^2 0.83 at 300 steps (was 0.32 with the old one;
# benchmarks/RESULTS.md, "A smoother expert").
OVERFIT_STEPS = 1000
SUCCEEDED = [False, True, True, False, True]  # the expert on those layouts (seed 0, noise 0)


def overfit_config():
    """The sim preset as it is, on 3 noise-free scoop demos, trained long enough to memorise
    them."""
    config = experiment_config(("scoop",), "sim")
    config.loop.warmstart_demos_per_task = COLLECTED_DEMOS
    config.sim.expert_noise = 0.0  # demonstrations whose arm commands the scene explains
    config.sim.layout_spread = 1.0  # the full spread, where SUCCEEDED was recorded
    config.policy.train.steps = OVERFIT_STEPS
    config.policy.warmstart_steps = OVERFIT_STEPS
    config.policy.train.learning_rate = 1e-3  # memorising, not generalising: as fast as stable
    config.policy.train.warmup_steps = 20
    config.ckpt.save_every_steps = OVERFIT_STEPS
    return config


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    import tensorflow as tf  # noqa: F401  (in play in this process, as in the real phase)

    workdir = str(tmp_path_factory.mktemp("policy_overfit"))
    config = overfit_config()
    pipeline.run_phase("collect", config, workdir, iteration=0)  # the demonstrations alone
    collected = list(rlds_read.read_episodes(os.path.join(workdir, "demos")))
    demos = [d for d in collected if d.metadata.success]
    assert [d.metadata.success for d in collected] == SUCCEEDED
    summary = pipeline.run_phase("train_policy", config, workdir, iteration=0)
    directory = workdir_lib.checkpoint_dir(workdir, "policy", 0)
    return config, workdir, demos, summary, policy_lib.load_policy(directory)


def _observation(episode, t: int) -> Observation:
    return Observation(
        images={name: episode.observation[f"observation/{name}"][t] for name in droid.CAMERA_NAMES},
        joint_position=episode.observation["observation/joint_position"][t],
        gripper_position=episode.observation["observation/gripper_position"][t],
        cartesian_position=episode.observation["observation/cartesian_position"][t],
        instruction=episode.instruction,
    )


def arm_r2(policy, episodes, batch: int = 32) -> float:
    """R^2 of the policy's sampled arm actions against every training chunk (pooled over the 7
    joints, each joint's own mean as the baseline), in the station's action units."""
    predicted, target = [], []
    for episode in episodes:
        actions = droid.policy_actions(episode.action_dict)
        chunks = transforms.chunk_actions(actions, policy.config.action_horizon)
        for start in range(0, len(actions), batch):
            steps = range(start, min(start + batch, len(actions)))
            predicted.append(policy([_observation(episode, t) for t in steps])[..., :7])
            target.append(chunks[start : start + len(steps), :, :7])
    predicted, target = np.concatenate(predicted), np.concatenate(target)
    residual = np.sum((predicted - target) ** 2)
    total = np.sum((target - target.mean(axis=(0, 1))) ** 2)
    return float(1.0 - residual / total)


def test_policy_fits_its_three_demos(overfit):
    _, _, demos, summary, policy = overfit
    assert summary["step"] == OVERFIT_STEPS
    assert arm_r2(policy, demos) > 0.95


def test_policy_replays_its_three_demos_in_the_simulator(overfit):
    config, _, demos, _, policy = overfit
    specs = [  # the successful demos' own layouts (collect writes the demos in spec order)
        spec
        for spec, ok in zip(workdir_lib.task_specs(config, "demo", 0, COLLECTED_DEMOS), SUCCEEDED)
        if ok
    ]
    successes = [bool(e.metadata.success) for e in policy_stream(config, specs, policy)]
    assert sum(successes) == NUM_DEMOS, successes
