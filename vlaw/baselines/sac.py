"""Soft actor-critic (Haarnoja et al. 2018) as pure JAX functions: DSRL's learner.

    hp = SACHyperParams(...)
    state = init_state(hp, observation_dim, action_dim, rng)
    state, metrics = update(hp, state, batches, rng)     # jitted; `batches` stacks U minibatches
    actions = act(hp, state.actor, observations, keys)   # sampled (exploration)
    actions = act_deterministic(hp, state.actor, observations)

Actions live in [-1, 1]^action_dim (a tanh-squashed Gaussian); the caller scales them to its
own action space (DSRL: the noise bound `action_magnitude`). The pieces:

- actor: MLP -> (mean, log std) of a Gaussian, squashed by tanh; log-probabilities carry the
  tanh change of variables;
- critics: an ensemble of `num_critics` Q MLPs on (observation, action) (`nn.vmap`), reduced by
  min (the clipped double-Q of two critics) or mean (the pi0 DSRL recipe's ten critics), with
  Polyak-averaged targets (rate `tau`);
- temperature: alpha = exp(log_alpha), learned towards `target_entropy`;
- TD target: r + discount * (1 - done) * (reduce_k Q_target,k(s', a') - alpha * log pi(a'|s')),
  a' ~ pi(.|s'); `discount` is per transition (DSRL: gamma ** executed steps of a chunk).

`update` runs U gradient steps in one `lax.scan` (U = the update-to-data ratio's steps for the
data just added), each a critic step, an actor step, a temperature step and a target update.
Every array of the state is replicated on the trainer's mesh and each minibatch sharded over
its batch axes (`place_state`, `place_batches`): the networks are small, so data parallelism is
all the learner needs. Nothing here knows about robots.
"""

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vlaw.train.mesh import BATCH_AXES

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # bounds of the actor's log std (SB3, jaxrl2)
BATCH_FIELDS = ("observation", "action", "reward", "discount", "done", "next_observation")


@dataclasses.dataclass(frozen=True)
class SACHyperParams:
    """Static (hashable) hyper-parameters; see `vlaw.config`'s `dsrl` section for values."""

    hidden_dims: tuple[int, ...] = (128, 128, 128)
    use_layer_norm: bool = True
    num_critics: int = 2
    critic_reduction: str = "min"  # "min" | "mean"
    actor_learning_rate: float = 1e-4
    critic_learning_rate: float = 3e-4
    temperature_learning_rate: float = 3e-4
    initial_temperature: float = 1.0
    target_entropy: float = 0.0
    tau: float = 0.005
    backup_entropy: bool = True  # the -alpha log pi term in the TD target


class MLP(nn.Module):
    """Dense layers with tanh, each followed by LayerNorm when asked (DSRL's networks)."""

    hidden_dims: Sequence[int]
    output_dim: int
    use_layer_norm: bool = True

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_dims:
            x = nn.Dense(width)(x)
            if self.use_layer_norm:
                x = nn.LayerNorm()(x)
            x = jnp.tanh(x)
        return nn.Dense(self.output_dim)(x)


class Actor(nn.Module):
    """observation -> (mean, log std) of the pre-tanh Gaussian."""

    hidden_dims: Sequence[int]
    action_dim: int
    use_layer_norm: bool = True

    @nn.compact
    def __call__(self, observation):
        out = MLP(self.hidden_dims, 2 * self.action_dim, self.use_layer_norm)(observation)
        mean, log_std = jnp.split(out, 2, axis=-1)
        return mean, jnp.clip(log_std, LOG_STD_MIN, LOG_STD_MAX)


class Critics(nn.Module):
    """(observation, action) -> (num_critics, B) Q values, one MLP per ensemble member."""

    hidden_dims: Sequence[int]
    num_critics: int
    use_layer_norm: bool = True

    @nn.compact
    def __call__(self, observation, action):
        ensemble = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        q = ensemble(self.hidden_dims, 1, self.use_layer_norm)(
            jnp.concatenate([observation, action], -1)
        )
        return q[..., 0]


@flax.struct.dataclass
class SACState:
    actor: Any
    critic: Any
    target_critic: Any
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    step: jax.Array


def _actor(hp: SACHyperParams, action_dim: int) -> Actor:
    return Actor(hp.hidden_dims, action_dim, hp.use_layer_norm)


def _critics(hp: SACHyperParams) -> Critics:
    return Critics(hp.hidden_dims, hp.num_critics, hp.use_layer_norm)


def _optimizers(hp: SACHyperParams):
    return (
        optax.adam(hp.actor_learning_rate),
        optax.adam(hp.critic_learning_rate),
        optax.adam(hp.temperature_learning_rate),
    )


def init_state(
    hp: SACHyperParams, observation_dim: int, action_dim: int, rng: jax.Array
) -> SACState:
    actor_rng, critic_rng = jax.random.split(rng)
    observation = jnp.zeros((1, observation_dim), jnp.float32)
    action = jnp.zeros((1, action_dim), jnp.float32)
    actor = _actor(hp, action_dim).init(actor_rng, observation)["params"]
    critic = _critics(hp).init(critic_rng, observation, action)["params"]
    log_alpha = jnp.asarray(np.log(hp.initial_temperature), jnp.float32)
    actor_tx, critic_tx, alpha_tx = _optimizers(hp)
    return SACState(
        actor=actor,
        critic=critic,
        target_critic=jax.tree.map(jnp.copy, critic),  # its own buffers, not the critic's
        log_alpha=log_alpha,
        actor_opt=actor_tx.init(actor),
        critic_opt=critic_tx.init(critic),
        alpha_opt=alpha_tx.init(log_alpha),
        step=jnp.zeros((), jnp.int32),
    )


def action_dim_of(actor_params: Any) -> int:
    """The action dimension an actor's parameters were built for (its last layer's width / 2)."""
    last = max((k for k in actor_params["MLP_0"] if k.startswith("Dense_")), key=_layer_index)
    return int(actor_params["MLP_0"][last]["bias"].shape[0]) // 2


def _layer_index(name: str) -> int:
    return int(name.split("_")[-1])


def sample_and_log_prob(
    hp: SACHyperParams, actor_params: Any, observation: jax.Array, rng: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """a ~ pi(.|s) in [-1, 1]^d (reparameterised) and log pi(a|s), (B, d) and (B,)."""
    action_dim = action_dim_of(actor_params)
    mean, log_std = _actor(hp, action_dim).apply({"params": actor_params}, observation)
    eps = jax.random.normal(rng, mean.shape)
    return _squash(mean, log_std, eps)


def _squash(mean, log_std, eps):
    pre_tanh = mean + jnp.exp(log_std) * eps
    gaussian = -0.5 * (eps**2 + jnp.log(2 * jnp.pi)) - log_std
    # log|d tanh(u)/du| = log(1 - tanh(u)^2), written stably as 2 (log 2 - u - softplus(-2u)).
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.tanh(pre_tanh), jnp.sum(gaussian - log_det, axis=-1)


@functools.partial(jax.jit, static_argnames=("hp",))
def act(hp: SACHyperParams, actor_params: Any, observation: jax.Array, keys: jax.Array):
    """Sampled actions (B, d), one PRNG key per row (so a row's action depends on its key and
    observation alone, whatever else shares the batch)."""
    action_dim = action_dim_of(actor_params)
    mean, log_std = _actor(hp, action_dim).apply({"params": actor_params}, observation)
    eps = jax.vmap(lambda key: jax.random.normal(key, (action_dim,)))(keys)
    return _squash(mean, log_std, eps)[0]


@functools.partial(jax.jit, static_argnames=("hp",))
def act_deterministic(hp: SACHyperParams, actor_params: Any, observation: jax.Array):
    """tanh(mean): the policy SAC evaluates with."""
    action_dim = action_dim_of(actor_params)
    mean, _ = _actor(hp, action_dim).apply({"params": actor_params}, observation)
    return jnp.tanh(mean)


@functools.partial(jax.jit, static_argnames=("hp",))
def q_values(hp: SACHyperParams, critic_params: Any, observation, action) -> jax.Array:
    """The ensemble's reduced Q(s, a), (B,)."""
    return _reduce(hp, _critics(hp).apply({"params": critic_params}, observation, action))


def _reduce(hp: SACHyperParams, q: jax.Array) -> jax.Array:
    return jnp.min(q, axis=0) if hp.critic_reduction == "min" else jnp.mean(q, axis=0)


def _one_update(hp: SACHyperParams, state: SACState, batch: dict, rng: jax.Array):
    critics = _critics(hp)
    actor_tx, critic_tx, alpha_tx = _optimizers(hp)
    next_rng, actor_rng = jax.random.split(rng)
    alpha = jnp.exp(state.log_alpha)

    # Critic: TD regression towards the target critics at a' ~ pi(.|s').
    next_action, next_log_prob = sample_and_log_prob(
        hp, state.actor, batch["next_observation"], next_rng
    )
    next_q = _reduce(
        hp,
        critics.apply({"params": state.target_critic}, batch["next_observation"], next_action),
    )
    if hp.backup_entropy:
        next_q = next_q - alpha * next_log_prob
    target = batch["reward"] + batch["discount"] * (1.0 - batch["done"]) * next_q
    target = jax.lax.stop_gradient(target)

    def critic_loss_fn(params):
        q = critics.apply({"params": params}, batch["observation"], batch["action"])
        return 0.5 * jnp.mean(jnp.sum((q - target[None]) ** 2, axis=0)), jnp.mean(q)

    (critic_loss, q_mean), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(state.critic)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, updates)

    # Actor: maximise reduce_k Q_k(s, a) - alpha log pi(a|s), a reparameterised.
    def actor_loss_fn(params):
        action, log_prob = sample_and_log_prob(hp, params, batch["observation"], actor_rng)
        q = _reduce(hp, critics.apply({"params": critic}, batch["observation"], action))
        return jnp.mean(alpha * log_prob - q), log_prob

    (actor_loss, log_prob), grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(state.actor)
    updates, actor_opt = actor_tx.update(grads, state.actor_opt, state.actor)
    actor = optax.apply_updates(state.actor, updates)

    # Temperature: raise alpha while the entropy -log pi is below its target, lower it above.
    entropy = jax.lax.stop_gradient(-jnp.mean(log_prob))

    def alpha_loss_fn(log_alpha):
        return log_alpha * (entropy - hp.target_entropy)

    alpha_loss, grad = jax.value_and_grad(alpha_loss_fn)(state.log_alpha)
    updates, alpha_opt = alpha_tx.update(grad, state.alpha_opt, state.log_alpha)
    log_alpha = optax.apply_updates(state.log_alpha, updates)

    target_critic = optax.incremental_update(critic, state.target_critic, hp.tau)
    new_state = SACState(
        actor=actor,
        critic=critic,
        target_critic=target_critic,
        log_alpha=log_alpha,
        actor_opt=actor_opt,
        critic_opt=critic_opt,
        alpha_opt=alpha_opt,
        step=state.step + 1,
    )
    metrics = {
        "critic_loss": critic_loss,
        "actor_loss": actor_loss,
        "alpha_loss": alpha_loss,
        "q_mean": q_mean,
        "target_mean": jnp.mean(target),
        "entropy": entropy,
        "alpha": jnp.exp(log_alpha),
    }
    return new_state, metrics


@functools.partial(jax.jit, static_argnames=("hp",))
def update(
    hp: SACHyperParams, state: SACState, batches: dict, rng: jax.Array
) -> tuple[SACState, dict]:
    """U SAC steps over `batches` (each field stacked (U, B, ...)); metrics are the means over
    the U steps."""
    steps = jax.tree.leaves(batches)[0].shape[0]

    def body(state, inputs):
        batch, key = inputs
        return _one_update(hp, state, batch, key)

    state, metrics = jax.lax.scan(body, state, (batches, jax.random.split(rng, steps)))
    return state, jax.tree.map(jnp.mean, metrics)


# --------------------------------------------------------------------------------------------
# Placement on the trainer's mesh.


def place_state(state: SACState, mesh: Mesh) -> SACState:
    """Every array replicated over the mesh."""
    return jax.device_put(state, NamedSharding(mesh, P()))


def place_batches(batches: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """(U, B, ...) host minibatches -> arrays whose B axis is split over the batch axes."""
    sharding = NamedSharding(mesh, P(None, BATCH_AXES))
    devices = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
    out = {}
    for name in BATCH_FIELDS:
        value = np.asarray(batches[name], np.float32)
        if value.shape[1] % devices:
            raise ValueError(
                f"SAC batch size {value.shape[1]} must be a multiple of the {devices} "
                "data-parallel devices of the mesh"
            )
        out[name] = jax.device_put(value, sharding)
    return out


# --------------------------------------------------------------------------------------------
# Replay.


class ReplayBuffer:
    """Every transition seen so far, as numpy arrays (BATCH_FIELDS), sampled uniformly.

    Unbounded: the real-rollout budget (hundreds to thousands of chunk decisions) is far below
    what host memory holds, and DSRL keeps all of its online data."""

    def __init__(self, observation_dim: int, action_dim: int):
        self.data = {
            "observation": np.zeros((0, observation_dim), np.float32),
            "action": np.zeros((0, action_dim), np.float32),
            "reward": np.zeros((0,), np.float32),
            "discount": np.zeros((0,), np.float32),
            "done": np.zeros((0,), np.float32),
            "next_observation": np.zeros((0, observation_dim), np.float32),
        }

    def __len__(self) -> int:
        return int(self.data["reward"].shape[0])

    def add(self, transitions: dict[str, np.ndarray]) -> None:
        for name in BATCH_FIELDS:
            value = np.asarray(transitions[name], np.float32)
            if value.shape[1:] != self.data[name].shape[1:]:
                raise ValueError(
                    f"transition field {name} of shape {value.shape}; the buffer holds "
                    f"{self.data[name].shape[1:]} per row"
                )
            self.data[name] = np.concatenate([self.data[name], value])

    def minibatches(self, rng: np.random.Generator, steps: int, batch_size: int) -> dict:
        """(steps, batch_size, ...) rows drawn uniformly with replacement."""
        if not len(self):
            raise ValueError("the replay buffer is empty")
        index = rng.integers(0, len(self), size=(steps, batch_size))
        return {name: value[index] for name, value in self.data.items()}

    def save(self, path: str) -> None:
        temp = f"{path}.tmp.npz"
        np.savez_compressed(temp, **self.data)
        os.replace(temp, path)

    @classmethod
    def load(cls, path: str) -> "ReplayBuffer":
        with np.load(path) as stored:
            data = {name: stored[name] for name in BATCH_FIELDS}
        buffer = cls(data["observation"].shape[1], data["action"].shape[1])
        buffer.data = data
        return buffer
