"""DSRL's pieces on the station's side: the noise it hands the frozen policy, the SAC
observation, the transitions rebuilt from a recorded episode, the keyed noise choice and the
saved SAC state."""

import types

import jax
import numpy as np
import pytest

from vlaw.baselines import dsrl, sac
from vlaw.config import experiment_config
from vlaw.data.episode import Episode, EpisodeMetadata
from vlaw.rollout.station import Observation, TaskSpec, episode_id


def _config():
    return experiment_config(("scoop", "draw"), "tiny")


def test_initial_noise_repeats_the_last_row_over_the_horizon_and_scales():
    actions = np.array([[0.5, -1.0, 0.25], [1.0, 0.0, -0.5]], np.float32)  # 1 row of 3
    noise = dsrl.initial_noise(actions, 2.0, action_horizon=4, action_dim=3)
    assert noise.shape == (2, 4, 3)
    for step in range(4):
        np.testing.assert_allclose(noise[:, step], 2.0 * actions)
    two_rows = dsrl.initial_noise(np.arange(6, dtype=np.float32)[None] / 6, 1.0, 4, 3)
    np.testing.assert_allclose(two_rows[0, 0], [0, 1 / 6, 2 / 6])
    np.testing.assert_allclose(two_rows[0, 1:], np.tile([[0.5, 4 / 6, 5 / 6]], (3, 1)))


def test_features_hold_joints_gripper_task_and_progress():
    config = _config()
    observation = dsrl.features(
        config, np.ones((2, 7)), np.full((2, 1), 0.5), np.array([1, 0]), np.array([0, 3]), 8
    )
    assert observation.shape == (2, dsrl.observation_dim(config))
    np.testing.assert_allclose(observation[0], [1] * 7 + [0.5, 0, 1, 0])
    np.testing.assert_allclose(observation[1, -3:], [1, 0, 24 / config.sim.max_steps])


def _noise_policy(config, mode):
    hp = dsrl.hyper_params(config)
    state = sac.init_state(hp, dsrl.observation_dim(config), 32, jax.random.PRNGKey(0))
    return dsrl.NoisePolicy(mode, hp, state.actor, seed=3, magnitude=1.0, action_dim=32)


def test_noise_choice_depends_on_its_episode_and_decision_alone():
    config = _config()
    observation = np.random.default_rng(0).normal(size=(3, dsrl.observation_dim(config)))
    for mode in (dsrl.BASE, dsrl.EXPLORE, dsrl.DETERMINISTIC):
        policy = _noise_policy(config, mode)
        batch = policy.actions(observation, [(11, 0), (12, 0), (11, 1)])
        alone = policy.actions(observation[2:], [(11, 1)])
        np.testing.assert_allclose(batch[2:], alone, atol=1e-6)
        assert batch.shape == (3, 32) and np.all(np.abs(batch) <= 1.0)
    explore = _noise_policy(config, dsrl.EXPLORE)
    same_state = np.repeat(observation[:1], 2, axis=0)
    draws = explore.actions(same_state, [(11, 0), (11, 1)])
    assert not np.allclose(draws[0], draws[1])  # each decision draws its own noise


def _episode(config, num_steps: int, success: bool) -> Episode:
    spec = TaskSpec("draw", 1234)
    joints = np.arange(num_steps, dtype=np.float64)[:, None] * np.ones((1, 7))
    return Episode(
        instruction="draw a circle",
        observation={
            "observation/joint_position": joints,
            "observation/gripper_position": np.zeros((num_steps, 1)),
        },
        action_dict={},
        metadata=EpisodeMetadata(
            success=success, source="real", task="draw", episode_id=episode_id("real", 1, spec)
        ),
    )


def test_episode_transitions_reward_the_last_decision_with_the_success_label():
    config = _config()
    policy = _noise_policy(config, dsrl.EXPLORE)
    episode = _episode(config, num_steps=30, success=True)  # decisions at 0, 8, 16, 24
    transitions = dsrl.episode_transitions(config, episode, policy, steps_per_decision=8)
    np.testing.assert_allclose(transitions["observation"][:, 0], [0, 8, 16, 24])
    np.testing.assert_allclose(transitions["next_observation"][:3, 0], [8, 16, 24])
    np.testing.assert_allclose(transitions["reward"], [0, 0, 0, 1])
    np.testing.assert_allclose(transitions["done"], [0, 0, 0, 1])
    np.testing.assert_allclose(transitions["discount"], 0.999 ** np.array([8, 8, 8, 6]))
    # The stored noise is what the acting policy chose at those decisions.
    chosen = policy.actions(transitions["observation"], [(1234, j) for j in range(4)])
    np.testing.assert_allclose(transitions["action"], chosen, atol=1e-6)
    failed = dsrl.episode_transitions(config, _episode(config, 30, False), policy, 8)
    assert not failed["reward"].any()


def test_sac_state_round_trips_through_its_checkpoint(tmp_path):
    config = _config()
    hp = dsrl.hyper_params(config)
    state = sac.init_state(hp, dsrl.observation_dim(config), 32, jax.random.PRNGKey(1))
    state = state.replace(step=np.int32(7), log_alpha=np.float32(-0.5))
    directory = str(tmp_path / "dsrl")
    dsrl.save_state(config, directory, state, {"sac_step": 7})
    assert dsrl.is_trained(directory)
    template = sac.init_state(hp, dsrl.observation_dim(config), 32, jax.random.PRNGKey(2))
    loaded = dsrl.load_state(directory, template)
    for saved, restored in zip(jax.tree.leaves(state), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(np.asarray(saved), np.asarray(restored))


class _RecordingBase:
    """Stands in for the frozen `TrainedPolicy`: records the noise it is steered with."""

    config = types.SimpleNamespace(action_horizon=5, action_dim=32)
    checkpoint = "base"

    def __call__(self, observations, *, noise):
        self.noise = noise
        return np.zeros((len(observations), 5, 8), np.float32)


def _observation(joints: float) -> Observation:
    return Observation(
        images={},
        joint_position=np.full(7, joints),
        gripper_position=np.zeros(1),
        cartesian_position=np.zeros(6),
        instruction="",
    )


def test_steered_policy_hands_the_chosen_noise_to_the_frozen_policy():
    config = _config()
    base = _RecordingBase()
    noise_policy = _noise_policy(config, dsrl.DETERMINISTIC)
    specs = [TaskSpec("scoop", 5), TaskSpec("draw", 6)]
    steered = dsrl.SteeredPolicy(config, base, noise_policy, specs, "steered")
    observations = [_observation(0.1), _observation(-0.2)]
    actions = steered(observations, episode_calls=[(5, 0), (6, 2)])
    assert actions.shape == (2, 5, 8) and base.noise.shape == (2, 5, 32)
    expected = noise_policy.actions(
        dsrl.features(
            config, np.array([[0.1] * 7, [-0.2] * 7]), np.zeros((2, 1)), [0, 1], [0, 2], 5
        ),
        [(5, 0), (6, 2)],
    )
    for step in range(5):  # one noise row, repeated over the horizon
        np.testing.assert_allclose(base.noise[:, step], expected, atol=1e-6)
    with pytest.raises(ValueError, match="not among"):
        steered([_observation(0.0)], episode_calls=[(7, 0)])
