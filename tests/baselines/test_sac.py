"""The SAC learner on a bandit whose optimal noise is known: a frozen "policy" maps the noise
w to the action a = 0.8 tanh(2 w) and the reward is -|a - a*(context)|^2, so the best noise of
each context is w* = artanh(a* / 0.8) / 2. SAC acting in the noise space must find it."""

import jax
import numpy as np

from vlaw.baselines import sac
from vlaw.config import experiment_config
from vlaw.train.mesh import create_mesh

TARGET_ACTIONS = np.array([[0.5, -0.3], [-0.6, 0.2]], np.float32)  # a* per context
OPTIMAL_NOISE = np.arctanh(TARGET_ACTIONS / 0.8) / 2.0


def frozen_policy(noise: np.ndarray) -> np.ndarray:
    return 0.8 * np.tanh(2.0 * noise)


HP = sac.SACHyperParams(
    hidden_dims=(64, 64),
    num_critics=2,
    critic_reduction="min",
    actor_learning_rate=1e-3,
    critic_learning_rate=1e-3,
    temperature_learning_rate=1e-3,
    initial_temperature=0.01,
    target_entropy=-6.0,  # -3 per dimension: a nearly deterministic optimum
)


def _bandit_transitions(state, rng: np.random.Generator, key: jax.Array, count: int) -> dict:
    contexts = rng.integers(0, 2, size=count)
    observation = np.eye(2, dtype=np.float32)[contexts]
    keys = jax.random.split(key, count)
    noise = np.asarray(sac.act(HP, state.actor, observation, keys))
    error = frozen_policy(noise) - TARGET_ACTIONS[contexts]
    return {
        "observation": observation,
        "action": noise,
        "reward": -np.sum(error**2, axis=-1),
        "discount": np.full(count, 0.99),
        "done": np.ones(count),  # one-step episodes: the target is the reward alone
        "next_observation": observation,
    }


def test_sac_finds_the_known_optimal_noise_of_each_context():
    mesh = create_mesh(experiment_config(("scoop",), "tiny").mesh)
    key = jax.random.PRNGKey(0)
    state = sac.place_state(sac.init_state(HP, 2, 2, key), mesh)
    rng = np.random.default_rng(0)
    buffer = sac.ReplayBuffer(2, 2)
    for _ in range(60):
        key, act_key, update_key = jax.random.split(key, 3)
        buffer.add(_bandit_transitions(state, rng, act_key, 32))
        batches = sac.place_batches(buffer.minibatches(rng, 50, 64), mesh)
        state, metrics = sac.update(HP, state, batches, update_key)
    learned = np.asarray(sac.act_deterministic(HP, state.actor, np.eye(2, dtype=np.float32)))
    np.testing.assert_allclose(learned, OPTIMAL_NOISE, atol=0.05)
    assert np.isfinite(float(metrics["critic_loss"]))
    # The critics learned the reward surface: the optimum is worth about 0, a noise away from
    # it what the frozen policy's error there costs.
    contexts = np.eye(2, dtype=np.float32)
    at_optimum = sac.q_values(HP, state.critic, contexts, OPTIMAL_NOISE)
    np.testing.assert_allclose(np.asarray(at_optimum), 0.0, atol=0.03)
    away = -OPTIMAL_NOISE
    expected = -np.sum((frozen_policy(away) - TARGET_ACTIONS) ** 2, axis=-1)
    np.testing.assert_allclose(
        np.asarray(sac.q_values(HP, state.critic, contexts, away)), expected, atol=0.15
    )


def test_replay_buffer_round_trips_and_samples_its_rows(tmp_path):
    buffer = sac.ReplayBuffer(3, 2)
    rows = {
        "observation": np.arange(12, dtype=np.float32).reshape(4, 3),
        "action": np.zeros((4, 2)),
        "reward": np.arange(4),
        "discount": np.ones(4),
        "done": np.zeros(4),
        "next_observation": np.ones((4, 3)),
    }
    buffer.add(rows)
    path = str(tmp_path / "replay.npz")
    buffer.save(path)
    loaded = sac.ReplayBuffer.load(path)
    assert len(loaded) == 4
    batch = loaded.minibatches(np.random.default_rng(0), 3, 5)
    assert batch["observation"].shape == (3, 5, 3)
    # Each sampled row is one stored transition, fields kept together.
    np.testing.assert_array_equal(batch["observation"][..., 0], 3 * batch["reward"])
