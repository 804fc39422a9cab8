"""DSRL, VLAW's second baseline (paper §5.3): the base pi0.5 policy frozen, steered through its
initial flow noise by a SAC agent (Wagenmaker et al., "Steering Your Diffusion Policy with
Latent Space Reinforcement Learning", CoRL 2025).

`config.method = "dsrl"`: the warm start is VLAW's (iteration 0 trains the base policy on the
demonstrations); each iteration k >= 1 runs `train_dsrl` (vlaw/phases/train_dsrl.py) then
`evaluate`, which rolls out the base policy steered by iteration k's noise policy.

Variant: DSRL-SAC, not DSRL-NA. The official pi0 recipe (`dsrl_pi0`) is DSRL-SAC: the replay
holds the noise as the action, and the SAC update never calls the base policy. DSRL-NA's
action critic needs pi0.5 at every gradient step (the next action a' = pi(s', w') of each TD
target, and pi(s, w) for each distillation sample), so with a UTD of 20 it would run the 3B
VLA (image encoder, prefix, 10 flow steps) on thousands of stored observations, images
included, per real step; its gain (aliasing noises that map to the same action, learning from
other policies' data) does not pay for that at the real-rollout budgets compared here.

The noise: as `dsrl_pi0`, one `action_dim` = 32-dimensional vector per decision
(`dsrl.noise_rows` = 1), repeated over the action horizon to make the (H, 32) initial noise
`TrainedPolicy` takes; SAC's tanh output in [-1, 1] scaled by `dsrl.action_magnitude`. The
first round (iteration 1) steers with w ~ N(0, I) clipped to that bound: the unmodified base
policy, as the recipe's first collection round.

The SAC observation: joint positions (7), gripper (1), the task as a one-hot, and the episode's
progress (decision index * executed steps / sim.max_steps). All are free on the station. No
image embedding: the recipe's 64x64 CNN learns from the sparse reward alone, and with tens of
rollouts per task and iteration it has too little signal to learn an encoder; the layout the
image would show is what the base policy already reacts to, and the robot's state tells SAC
where in the task the policy is. The progress feature makes the fixed-horizon MDP Markov
(episodes always run sim.max_steps).

Reward and discount: the station's success label at the episode's last decision (1 or 0, as
DSRL's sparse tasks), 0 before; each decision executes a chunk of `open_loop_steps` actions,
so its discount is gamma ** (steps executed) (the recipe's gamma ** query_freq).

Transitions are rebuilt from the recorded episodes: the states at each decision are the
recorded observations at steps 0, L, 2L, ... (L = executed steps per chunk) and the noise the
acting noise policy chose there is recomputed, because it is a deterministic function of
(actor weights, state, episode seed, decision index). A resumed rollout (episodes loaded from
staging) therefore yields exactly the transitions of an uninterrupted one.

Hyper-parameters (`config.dsrl`): the pi0 recipe of `dsrl_pi0` (fact sheet §3.5): MLP
(128, 128, 128), 10 critics reduced by their mean, actor lr 1e-4, critic and temperature lr
3e-4, tau 0.005, batch 256, 20 updates per new transition, gamma 0.999, action magnitude 1.0
(Libero); target entropy 0 and LayerNorm with tanh as in all of DSRL's shipped configs.
Deviation: the recipe updates after every environment step; here the learner updates once per
iteration, after that iteration's rollouts (the loop's unit of real data), with the same
number of updates per transition.
"""

import dataclasses
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vlaw.agents import policy as policy_agent
from vlaw.baselines import sac
from vlaw.data.atomic_json import read_json, write_json
from vlaw.data.episode import Episode
from vlaw.rollout.station import Observation, TaskSpec, parse_episode_id
from vlaw.train import checkpoints

# The phases of one iteration, in order (the warm start is VLAW's).
ITERATION = ("train_dsrl", "evaluate")
SPEC_FILE, REPLAY_FILE = "dsrl.json", "replay.npz"
JOINTS = 7
BASE, EXPLORE, DETERMINISTIC = "base", "explore", "deterministic"  # NoisePolicy modes


def hyper_params(config: ml_collections.ConfigDict) -> sac.SACHyperParams:
    d = config.dsrl
    return sac.SACHyperParams(
        hidden_dims=tuple(int(w) for w in d.hidden_dims),
        use_layer_norm=bool(d.use_layer_norm),
        num_critics=int(d.num_critics),
        critic_reduction=str(d.critic_reduction),
        actor_learning_rate=float(d.actor_learning_rate),
        critic_learning_rate=float(d.critic_learning_rate),
        temperature_learning_rate=float(d.temperature_learning_rate),
        initial_temperature=float(d.initial_temperature),
        target_entropy=float(d.target_entropy),
        tau=float(d.tau),
        backup_entropy=bool(d.backup_entropy),
    )


def observation_dim(config: ml_collections.ConfigDict) -> int:
    return JOINTS + 1 + len(config.tasks) + 1


def noise_action_dim(config: ml_collections.ConfigDict, base: policy_agent.TrainedPolicy) -> int:
    return int(config.dsrl.noise_rows) * base.config.action_dim


def executed_steps(config: ml_collections.ConfigDict, action_horizon: int) -> int:
    """Actions run per decision (`policy_episodes`: open_loop_steps, at most a chunk)."""
    return min(int(config.policy.open_loop_steps), action_horizon)


def features(
    config: ml_collections.ConfigDict,
    joint_position: np.ndarray,
    gripper_position: np.ndarray,
    task_index: np.ndarray,
    decision: np.ndarray,
    steps_per_decision: int,
) -> np.ndarray:
    """The SAC observation (B, observation_dim): joints, gripper, task one-hot, progress."""
    one_hot = np.eye(len(config.tasks), dtype=np.float32)[np.asarray(task_index)]
    progress = np.asarray(decision, np.float32) * steps_per_decision / float(config.sim.max_steps)
    return np.concatenate(
        [
            np.asarray(joint_position, np.float32).reshape(-1, JOINTS),
            np.asarray(gripper_position, np.float32).reshape(-1, 1),
            one_hot,
            progress.reshape(-1, 1),
        ],
        axis=-1,
    )


def initial_noise(
    actions: np.ndarray, magnitude: float, action_horizon: int, action_dim: int
) -> np.ndarray:
    """SAC actions (B, rows * action_dim) in [-1, 1] -> (B, action_horizon, action_dim) noise:
    scaled by `magnitude`, the rows first, the last row repeated over the rest (dsrl_pi0)."""
    rows = np.asarray(actions, np.float32).reshape(len(actions), -1, action_dim) * magnitude
    if rows.shape[1] > action_horizon:
        raise ValueError(f"{rows.shape[1]} noise rows for an action horizon of {action_horizon}")
    repeats = np.repeat(rows[:, -1:], action_horizon - rows.shape[1], axis=1)
    return np.concatenate([rows, repeats], axis=1)


@jax.jit
def _decision_keys(root: jax.Array, seeds: jax.Array, calls: jax.Array) -> jax.Array:
    return jax.vmap(lambda s, c: jax.random.fold_in(jax.random.fold_in(root, s), c))(seeds, calls)


@dataclasses.dataclass
class NoisePolicy:
    """Chooses the noise, as SAC actions in [-1, 1], for a batch of decisions.

    mode BASE: w ~ N(0, I) clipped to the magnitude (the unsteered base policy); EXPLORE: SAC's
    sampled action; DETERMINISTIC: tanh of its mean (evaluation). Sampling is keyed by
    (episode seed, decision index) alone, so a decision's noise does not depend on its batch.
    """

    mode: str
    hp: sac.SACHyperParams
    actor: object  # SAC actor parameters (None in mode BASE)
    seed: int
    magnitude: float
    action_dim: int

    def actions(self, observation: np.ndarray, episode_calls: Sequence[tuple[int, int]]):
        seeds, calls = np.asarray(episode_calls, np.int64).reshape(-1, 2).T
        keys = _decision_keys(jax.random.PRNGKey(self.seed), seeds % 2**31, calls)
        observation = jnp.asarray(observation, jnp.float32)
        if self.mode == BASE:
            draws = jax.vmap(lambda key: jax.random.normal(key, (self.action_dim,)))(keys)
            return np.clip(np.asarray(draws) / self.magnitude, -1.0, 1.0)
        if self.mode == EXPLORE:
            return np.asarray(sac.act(self.hp, self.actor, observation, keys))
        if self.mode == DETERMINISTIC:
            return np.asarray(sac.act_deterministic(self.hp, self.actor, observation))
        raise ValueError(f"noise policy mode {self.mode!r}")


class SteeredPolicy:
    """The frozen base policy acting from the noise a `NoisePolicy` chooses: the same call as
    `TrainedPolicy` (observations -> (B, H, 8) actions), keyed per (episode seed, call)."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        base: policy_agent.TrainedPolicy,
        noise_policy: NoisePolicy,
        specs: Sequence[TaskSpec],
        checkpoint: str,
    ):
        self.config, self.base, self.noise_policy = config, base, noise_policy
        self.task_of_seed = {spec.seed: list(config.tasks).index(spec.task) for spec in specs}
        self.steps_per_decision = executed_steps(config, base.config.action_horizon)
        self.checkpoint = checkpoint

    def __call__(
        self,
        observations: Sequence[Observation],
        *,
        episode_calls: Sequence[tuple[int, int]] | None = None,
    ) -> np.ndarray:
        if episode_calls is None:
            raise ValueError("a steered policy needs episode_calls: (episode seed, call) per row")
        seeds = [int(seed) for seed, _ in episode_calls]
        unknown = sorted({s for s in seeds if s not in self.task_of_seed})
        if unknown:
            raise ValueError(f"episode seeds {unknown} are not among this policy's task specs")
        observation = features(
            self.config,
            np.stack([obs.joint_position for obs in observations]),
            np.stack([obs.gripper_position for obs in observations]),
            np.array([self.task_of_seed[s] for s in seeds]),
            np.array([call for _, call in episode_calls]),
            self.steps_per_decision,
        )
        actions = self.noise_policy.actions(observation, episode_calls)
        shape = (self.base.config.action_horizon, self.base.config.action_dim)
        noise = initial_noise(actions, self.noise_policy.magnitude, *shape)
        return self.base(observations, noise=noise)


def episode_transitions(
    config: ml_collections.ConfigDict,
    episode: Episode,
    noise_policy: NoisePolicy,
    steps_per_decision: int,
) -> dict[str, np.ndarray]:
    """One recorded episode's decisions as SAC transitions (see the module docstring)."""
    _, _, spec = parse_episode_id(episode.metadata.episode_id)
    num_steps = len(episode.observation["observation/joint_position"])
    starts = np.arange(0, num_steps, steps_per_decision)
    decisions = np.arange(len(starts))
    observation = features(
        config,
        episode.observation["observation/joint_position"][starts],
        episode.observation["observation/gripper_position"][starts],
        np.full(len(starts), list(config.tasks).index(episode.metadata.task)),
        decisions,
        steps_per_decision,
    )
    actions = noise_policy.actions(observation, [(spec.seed, int(j)) for j in decisions])
    executed = np.minimum(steps_per_decision, num_steps - starts)
    done = (decisions == decisions[-1]).astype(np.float32)
    next_observation = np.concatenate([observation[1:], observation[-1:]])  # masked by done
    return {
        "observation": observation,
        "action": actions,
        "reward": done * float(episode.metadata.success),
        "discount": float(config.dsrl.gamma) ** executed,
        "done": done,
        "next_observation": next_observation,
    }


# --------------------------------------------------------------------------------------------
# A DSRL checkpoint directory: checkpoints/dsrl/iter_NN/{<step>/, replay.npz, dsrl.json}.


def is_trained(directory: str) -> bool:
    """The SAC state, the replay and the spec are all there (the spec is written last)."""
    return (
        os.path.exists(os.path.join(directory, SPEC_FILE))
        and checkpoints.latest_step(directory) is not None
    )


def save_state(
    config: ml_collections.ConfigDict, directory: str, state: sac.SACState, spec: dict
) -> None:
    step = int(state.step)
    checkpoints.save_params(directory, step, _as_tree(state), config.ckpt)
    write_json(os.path.join(directory, SPEC_FILE), spec)


def load_state(directory: str, template: sac.SACState) -> sac.SACState:
    """The SAC state saved in `directory`, shaped as `template` (an `init_state`)."""
    restored = checkpoints.restore_on_one_device(directory, _as_tree(template))
    return sac.SACState(**restored)


def _as_tree(state: sac.SACState) -> dict:
    """The state as a plain dict of arrays (what orbax stores); optax's empty states too."""
    return {field.name: getattr(state, field.name) for field in dataclasses.fields(state)}


def load_steered_policy(
    config: ml_collections.ConfigDict,
    directory: str,
    *,
    base_policy_dir: str,
    specs: Sequence[TaskSpec],
    seed: int,
) -> SteeredPolicy:
    """For `evaluate`: the base policy in `base_policy_dir` (iteration 0's) steered by the
    noise policy in `directory`, deterministic, over the episodes of `specs` (evaluate's
    layouts: each episode's seed names its task)."""
    if not is_trained(directory):
        raise FileNotFoundError(
            f"no DSRL noise policy in {directory}; run the train_dsrl phase of its iteration first"
        )
    base = policy_agent.load_policy(base_policy_dir, seed=seed)
    hp = hyper_params(config)
    action_dim = noise_action_dim(config, base)
    template = sac.init_state(hp, observation_dim(config), action_dim, jax.random.PRNGKey(0))
    state = load_state(directory, template)
    noise_policy = NoisePolicy(
        DETERMINISTIC, hp, state.actor, seed, float(config.dsrl.action_magnitude), action_dim
    )
    step = read_json(os.path.join(directory, SPEC_FILE))["sac_step"]
    checkpoint = f"{base.checkpoint} steered by {os.path.join(directory, str(step))}"
    return SteeredPolicy(config, base, noise_policy, specs, checkpoint)
