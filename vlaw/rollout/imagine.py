"""The `imagine` phase: the policy rolled out inside the world model (Algorithm 1, D_syn).

Paper §3, §4.2: from an initial state s0 of a real trajectory, policy and world model act in a
closed loop, a_t ~ pi(. | s^_t, I), s^_t+1 ~ M(. | s^_t, a_t). `loop.synthetic_rollouts_per_task`
rollouts per task go to `<workdir>/iter_NN/synthetic`, for `label` to score.

Starts: the first step of each episode of the task in `iter_NN/real`, else `<workdir>/demos`;
each serves equally often (+-1), in a seeded order. Policy: the one this iteration improves,
which `collect` rolled out: `train_policy`'s checkpoint of iteration k - 1, else a vlaw policy
at `policy.train.init_from` (collect's base policy at iteration 0, the scripted expert, reads
the simulator's state and cannot act on predicted frames).

One interaction (Ctrl-World's pi0.5 loop, shared/research/ctrl_world.md §1.3-1.4): the policy
sees the current frames (at the camera size it was trained on) and proprioception and samples
a chunk; its first (num_future - 1) * frame_stride = 12 joint velocities are executed as a
Franka would (per-step delta 0.2 v within the datasheet velocity and position limits); forward
kinematics gives each state's pose in the station's convention (the simulator's TCP, DROID's
flange); every `frame_stride`-th pose, `num_future` of them with the current first, conditions
one world-model chunk, whose last latent and pose join the memory buffer and become the next
current frame (no decode/re-encode in the loop). The pose stride is the world model's own
frame stride (Ctrl-World's `policy_skip_step` is 2 or 3), so predicted frames are the 5 Hz
frames it was trained on.

Records are 15 Hz steps, as the policy trainer reads them: executed joint velocities and
commanded gripper; integrated joints, their FK pose and the commanded gripper. Images are held
between world-model frames (zero-order hold): step t shows frame floor(t / frame_stride), the
newest at or before t. A later frame would show the effect of actions not yet chosen at t, and
interpolated frames are images the world model never made. Images stay at its resolution.

Ground truth (vlaw/rollout/replay.py): in the simulator (`sim.enabled`,
`loop.imagine_sim_replay`) each imagined action sequence is replayed open loop from the reset
that made its start; the station's label becomes `success`. Otherwise `success` is False.

Resume: finished batches are staged (lossless npz beside the dataset, as in `collect`), replay
outcomes too, and a rerun imagines only what is missing. The policy is loaded once; its
sampling key, like the world model's, derives from the phase's seed (run seed and iteration),
the batch and the interaction alone, so a resumed run writes what a straight run writes. The
RLDS dataset is written atomically, in plan order, and the staging removed.
"""

import dataclasses
import functools
import os
import shutil
import time
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from tqdm import tqdm

from vlaw.data import droid
from vlaw.data.episode import Episode, EpisodeMetadata
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model import kinematics
from vlaw.models.world_model.vae import encode_latents
from vlaw.rollout import real, replay
from vlaw.rollout.imagine_plan import Rollout, rollout_plan, start_states
from vlaw.rollout.station import Observation

PLAN_FILE = "plan.json"


def imagine_seed(config: ml_collections.ConfigDict, iteration: int) -> int:
    # One seed per (run, phase, iteration): each iteration imagines with fresh noise.
    return int(np.random.SeedSequence([int(config.seed), 6, iteration]).generate_state(1)[0] >> 1)


def steps_per_interaction(config: ml_collections.ConfigDict) -> int:
    """15 Hz actions executed per policy call: (num_future - 1) * frame_stride (Ctrl-World: 12)."""
    w = config.world_model
    steps = (int(w.num_future) - 1) * int(w.frame_stride)
    if steps > int(config.policy.action_horizon):
        raise ValueError(
            f"one world-model chunk spans {steps} robot steps ((world_model.num_future - 1) * "
            f"world_model.frame_stride) but the policy's chunks have policy.action_horizon="
            f"{config.policy.action_horizon} actions"
        )
    return steps


def _to_uint8(pixels: jax.Array) -> jax.Array:
    return jnp.clip(jnp.round((pixels + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def _resize(pixels: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(..., H, W, 3) float -> (..., h, w, 3), antialiased as the data pipeline resizes."""
    if pixels.shape[-3:-1] == tuple(size):
        return pixels
    return jax.image.resize(pixels, (*pixels.shape[:-3], *size, 3), "linear", antialias=True)


@functools.partial(jax.jit, static_argnames=("vae", "size"))
def encode_start(vae, vae_params, images: jax.Array, *, size: tuple[int, int]):
    """Recorded frames (B, V, H, W, 3) uint8 -> (frames at the model's size (B, V, h, w, 3)
    uint8, stacked latents (B, V * h', w', C): the posterior mean, scaled)."""
    pixels = _resize(images.astype(jnp.float32) / 127.5 - 1.0, size)
    return _to_uint8(pixels), cw.stack_views(encode_latents(vae, vae_params, pixels))


@functools.partial(jax.jit, static_argnames=("model", "vae", "policy_size"))
def imagine_chunk(model, vae, params, memory, poses, text_embeds, rng, *, policy_size):
    """One world-model step of B rollouts (ctrl_world.md §1.3).

    memory: `cw.init_memory`'s buffer (normalised poses); poses (B, F, 7) raw, the first the
    current state's; text_embeds (B, text_dim). Returns the memory with the chunk's last frame
    and pose appended, the F - 1 new frames (B, F - 1, V, H, W, 3) uint8 and the last of them at
    the policy's camera size (B, V, h, w, 3) uint8.
    """
    cfg = model.config
    poses = cw.normalize_poses(poses, cfg)
    history, history_poses = cw.memory_frames(memory, cfg.history_idx)
    current = cw.memory_frames(memory, (-1,))[0][:, 0]
    chunk_poses = jnp.concatenate([history_poses, poses], axis=1)
    chunk = cw.predict(
        model, params["world_model"], history, current, chunk_poses, text_embeds, rng
    )
    memory = cw.append_memory(memory, chunk[:, -1], poses[:, -1])
    views = cw.decode_views(vae, params["vae"], chunk, cfg.num_views, cfg.decode_chunk_size)
    pixels = jnp.moveaxis(views, 1, 2)[:, 1:]  # (B, F - 1, V, H, W, 3); frame 0 is the current
    return memory, _to_uint8(pixels), _to_uint8(_resize(pixels[:, -1], policy_size))


# --------------------------------------------------------------------------------------------
# Which policy imagines.


def imagining_policy_dir(config, workdir: str, iteration: int) -> str:
    """The checkpoint directory of the policy that imagines (see the module docstring)."""
    from vlaw.train import policy as policy_lib

    if iteration > 0 and policy_lib.has_policy_checkpoint(workdir, iteration - 1):
        return policy_lib.policy_checkpoint_dir(workdir, iteration - 1)
    init_from = str(config.policy.train.init_from or "")
    if init_from and os.path.exists(os.path.join(init_from, policy_lib.SPEC_FILE)):
        return init_from
    if iteration > 0:
        reason = (
            f"{policy_lib.policy_checkpoint_dir(workdir, iteration - 1)} holds no checkpoint; "
            f"run the train_policy phase for iteration {iteration - 1} first"
        )
    else:
        reason = (
            "at iteration 0 collect's base policy is the scripted expert, which reads the "
            "simulator's state and cannot act on predicted frames; start imagining at "
            "iteration 1 (after train_policy of iteration 0)"
        )
    raise FileNotFoundError(
        f"imagine iter_{iteration:02d}: no policy to roll out: {reason}, or set "
        "policy.train.init_from to a vlaw policy checkpoint directory"
    )


# --------------------------------------------------------------------------------------------
# Imagination.


def _episode(rollout: Rollout, frames, joints, poses, stride: int, checkpoint: str) -> Episode:
    """One rollout's 15 Hz `Episode` from its world-model frames (1 + K, V, H, W, 3) and the
    joints (T + 1, 7) and poses (T + 1, 7) (gripper last) of its T + 1 states."""
    num_steps = len(joints) - 1
    step_frames = frames[np.arange(num_steps) // stride]  # zero-order hold
    observation = {
        f"observation/{name}": step_frames[:, v] for v, name in enumerate(droid.CAMERA_NAMES)
    }
    observation["observation/joint_position"] = joints[:-1]
    observation["observation/cartesian_position"] = poses[:-1, :6]
    observation["observation/gripper_position"] = poses[:-1, 6:]
    delta = np.diff(poses, axis=0)
    delta[:, 3:6] = (delta[:, 3:6] + np.pi) % (2 * np.pi) - np.pi
    linear, angular = droid.CARTESIAN_DELTA_PER_UNIT
    cartesian_velocity = np.concatenate([delta[:, :3] / linear, delta[:, 3:6] / angular], 1)
    action_dict = {
        "action_dict/cartesian_position": poses[1:, :6],
        "action_dict/cartesian_velocity": np.clip(cartesian_velocity, -1.0, 1.0),
        "action_dict/gripper_position": poses[1:, 6:],
        "action_dict/gripper_velocity": np.clip(
            delta[:, 6:] / droid.GRIPPER_DELTA_PER_UNIT, -1.0, 1.0
        ),
        "action_dict/joint_position": joints[1:],
        "action_dict/joint_velocity": np.diff(joints, axis=0) / kinematics.RAD_PER_UNIT_VELOCITY,
    }
    metadata = EpisodeMetadata(
        success=False,  # the simulator's replay decides, where there is one
        source="synthetic",
        task=rollout.start.task,
        iteration=rollout.iteration,
        policy_checkpoint=checkpoint,
        episode_id=rollout.episode_id,
    )
    episode = Episode(rollout.start.instruction, observation, action_dict, metadata)
    episode.validate(where=rollout.episode_id)
    return episode


def imagine_batch(
    world, policy, rollouts: Sequence[Rollout], *, config, rng: jax.Array, bar=None
) -> list[Episode]:
    """Closed-loop imagination of B rollouts (`world`: a `TrainedWorldModel`, `policy`: a
    `TrainedPolicy`, called with an explicit key). Returns their B episodes; their noise
    depends on `rng` alone."""
    cfg, stride = world.model.config, int(config.world_model.frame_stride)
    interactions, steps = int(config.loop.imagine_interactions), steps_per_interaction(config)
    camera_size = (int(config.data.image_height), int(config.data.image_width))
    tool = jnp.asarray(kinematics.station_tool_transform(bool(config.sim.enabled)))
    instructions = [r.start.instruction for r in rollouts]
    text = jnp.asarray(world.text(instructions))
    joints = np.stack([r.start.joint_position for r in rollouts]).astype(np.float64)
    gripper = np.stack([r.start.gripper_position for r in rollouts]).astype(np.float64)
    camera = np.stack([r.start.images for r in rollouts])  # the policy's first look: real frames
    first, latents = encode_start(world.vae, world.params["vae"], camera, size=world.pixel_size)
    pose = np.asarray(kinematics.end_effector_poses(joints, gripper, tool), np.float64)
    memory = cw.init_memory(cfg, latents, cw.normalize_poses(pose, cfg), interactions)
    # Committed to the device as `imagine_chunk`'s outputs are: one compilation, not two.
    memory = jax.device_put(memory, jax.devices()[0])
    frames, path, poses = [np.asarray(first)[:, None]], [joints[:, None]], [pose[:, None]]
    world_rng, policy_rng = jax.random.split(rng)
    for i in range(interactions):
        observations = [
            Observation(
                images=dict(zip(droid.CAMERA_NAMES, camera[b], strict=True)),
                joint_position=joints[b],
                gripper_position=gripper[b],
                cartesian_position=pose[b, :6],
                instruction=instructions[b],
            )
            for b in range(len(rollouts))
        ]
        policy_key = jax.random.fold_in(policy_rng, i)
        actions = np.asarray(policy(observations, rng=policy_key), np.float64)[:, :steps]
        chunk_joints = kinematics.integrate_joint_velocities(joints, actions[..., :7])
        grippers = np.concatenate([gripper[:, None], np.clip(actions[..., 7:], 0.0, 1.0)], 1)
        chunk_poses = kinematics.end_effector_poses(chunk_joints, grippers, tool)
        chunk_poses = np.asarray(chunk_poses, np.float64)
        memory, new_frames, camera = imagine_chunk(
            world.model,
            world.vae,
            world.params,
            memory,
            jnp.asarray(chunk_poses[:, ::stride], jnp.float32),
            text,
            jax.random.fold_in(world_rng, i),
            policy_size=camera_size,
        )
        frames.append(np.asarray(new_frames))
        camera = np.asarray(camera)
        path.append(chunk_joints[:, 1:])
        poses.append(chunk_poses[:, 1:])
        joints, gripper, pose = chunk_joints[:, -1], grippers[:, -1], chunk_poses[:, -1]
        if bar is not None:
            bar.update(1)
    frames, path, poses = (np.concatenate(x, axis=1) for x in (frames, path, poses))
    return [
        _episode(r, frames[b], path[b], poses[b], stride, policy.checkpoint)
        for b, r in enumerate(rollouts)
    ]


# --------------------------------------------------------------------------------------------
# The phase.


def _staged_path(staging: str, episode_id: str) -> str:
    return os.path.join(staging, f"{episode_id}.npz")


def _check_plan(staging: str, plan: dict) -> None:
    """Staged episodes belong to one plan: a rerun with other settings must not mix in."""
    path = os.path.join(staging, PLAN_FILE)
    stored = real.read_staged_json(path, default=plan)
    changed = sorted(k for k in set(stored) | set(plan) if stored.get(k) != plan.get(k))
    if changed:
        raise ValueError(
            f"{staging} holds episodes imagined with other settings ({', '.join(changed)}); "
            "remove it to start over, or restore those settings to resume"
        )
    os.makedirs(staging, exist_ok=True)
    real.write_staged_json(path, plan)


def imagine_phase(
    config: ml_collections.ConfigDict,
    workdir: str,
    iteration: int,
    *,
    stop_after_batches: int | None = None,
    progress: bool = True,
) -> dict:
    """Algorithm 1's imagination (see the module docstring). Returns the summary.

    `stop_after_batches` ends the call after that many newly imagined batches, without
    writing the dataset, as a preemption would; calling again resumes.
    """
    from vlaw.data import rlds_write
    from vlaw.pipeline import iteration_dir
    from vlaw.train import policy as policy_lib
    from vlaw.train import world_model as world_model_lib
    from vlaw.train import world_model_data

    dataset_dir = os.path.join(iteration_dir(workdir, iteration), "synthetic")
    if os.path.exists(dataset_dir):
        logging.info("imagine: %s exists, keeping it", dataset_dir)
        return {"dataset_dir": dataset_dir, "skipped": True}
    interactions, steps = int(config.loop.imagine_interactions), steps_per_interaction(config)
    policy_dir = imagining_policy_dir(config, workdir, iteration)
    seed = imagine_seed(config, iteration)
    plan = rollout_plan(config, start_states(config, workdir, iteration), iteration, seed)
    replay_labels = replay.replay_enabled(config)
    # Up front: a start the simulator cannot reset to stops the phase before it imagines.
    replay_specs = {r.episode_id: r.start.station_spec() for r in plan} if replay_labels else {}
    world_model_dir = world_model_data.checkpoint_dir(workdir, iteration)
    world = world_model_lib.load_world_model(config, workdir, iteration)
    size = int(config.loop.imagine_batch_size)
    batches = [plan[i : i + size] for i in range(0, len(plan), size)]
    staging = real.staging_dir(dataset_dir)
    ids = [r.episode_id for r in plan]
    settings = dict(episode_ids=ids, interactions=interactions, batch_size=size, seed=seed)
    _check_plan(staging, {**settings, "policy": os.path.abspath(policy_dir)})
    staged = [all(os.path.exists(_staged_path(staging, r.episode_id)) for r in b) for b in batches]
    todo = [k for k, done in enumerate(staged) if not done]
    now = todo[:stop_after_batches] if stop_after_batches is not None else todo
    logging.info("imagine: %d of %d batches to imagine", len(todo), len(batches))
    # Loaded once: imagine_batch passes each call its key, so the policy's own keys go unused.
    policy = policy_lib.TrainedPolicy(policy_dir) if now else None
    key, start = jax.random.PRNGKey(seed), time.perf_counter()
    with tqdm(
        total=len(now) * interactions, desc="imagine", unit="interaction", disable=not progress
    ) as bar:
        for k in now:
            batch = batches[k] + [batches[k][0]] * (size - len(batches[k]))  # one shape
            # Noise from (seed, batch) alone: a resumed run imagines what a straight one does.
            rng = jax.random.fold_in(key, k)
            episodes = imagine_batch(world, policy, batch, config=config, rng=rng, bar=bar)
            for episode in episodes[: len(batches[k])]:
                real.save_staged_episode(staging, episode)
    seconds = time.perf_counter() - start
    summary = {
        "dataset_dir": dataset_dir,
        "policy_checkpoint_dir": policy_dir,
        "world_model_checkpoint_dir": world_model_dir,
        "interactions_per_episode": interactions,
        "steps_per_episode": interactions * steps,
        "batch_size": size,
        "resumed_episodes": sum(len(b) for b, done in zip(batches, staged) if done),
        "imagine_seconds": round(seconds, 2),
        # One closed-loop step of a whole batch: policy call, world-model chunk, decode.
        "seconds_per_interaction": round(seconds / (len(now) * interactions), 3) if now else None,
    }
    if len(now) < len(todo):
        return {**summary, "stopped_early": True, "batches_left": len(todo) - len(now)}
    outcomes = {}
    if replay_labels:
        outcomes = replay.replayed_labels(
            config,
            staging,
            replay_specs,
            lambda id_: real.load_staged_episode(_staged_path(staging, id_)).policy_actions(),
            progress=progress,
        )

    def episodes() -> Iterator[Episode]:
        for rollout in plan:  # plan order: a resumed run writes what a straight run writes
            episode = real.load_staged_episode(_staged_path(staging, rollout.episode_id))
            success = bool(outcomes.get(rollout.episode_id, False))
            episode.metadata = dataclasses.replace(episode.metadata, success=success)
            yield episode

    written = rlds_write.write_episodes(
        dataset_dir,
        episodes(),
        name="vlaw_synthetic",
        episodes_per_shard=int(config.data.episodes_per_shard),
        progress=progress,
    )
    shutil.rmtree(staging, ignore_errors=True)
    per_task = {task: [r for r in plan if r.start.task == task] for task in config.tasks}
    summary.update(
        num_episodes=written["num_episodes"],
        episodes_per_task={task: len(rollouts) for task, rollouts in per_task.items()},
        start_episodes={t: len({r.start.episode_id for r in rs}) for t, rs in per_task.items()},
        success_is_ground_truth=replay_labels,
    )
    if replay_labels:
        summary["sim_success_rate"] = {
            task: float(np.mean([outcomes[r.episode_id] for r in rollouts]))
            for task, rollouts in per_task.items()
        }
    logging.info("imagine iter_%02d: %s", iteration, summary)
    return summary
