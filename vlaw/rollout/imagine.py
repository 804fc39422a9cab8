"""Imagination: a policy rolled out inside the world model, batched (paper §3, §4.2).

From an initial state s0 of a real trajectory, policy and world model act in a closed loop,
a_t ~ pi(. | s^_t, I), s^_t+1 ~ M(. | s^_t, a_t). `imagine_batch` imagines B rollouts of a plan
(`vlaw.rollout.imagine_plan`) and returns their episodes; the `imagine` phase
(`vlaw.phases.imagine`) runs the plan batch by batch, resumably, into `iter_NN/synthetic`.

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

Noise: `imagine_batch`'s policy and world-model keys derive from its `rng` alone (split, then
folded with the interaction), so a batch imagines the same episodes whenever it runs.
"""

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlaw.data import droid
from vlaw.data.episode import Episode, EpisodeMetadata
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model import kinematics
from vlaw.models.world_model.vae import encode_latents
from vlaw.rollout.imagine_plan import Rollout, StartState
from vlaw.rollout.station import Observation
from vlaw.train import mesh as mesh_lib


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
# Imagination.


def _episode(rollout: Rollout, frames, joints, poses, stride: int, checkpoint: str) -> Episode:
    """One rollout's 15 Hz `Episode` (see `imagined_episode`)."""
    metadata = EpisodeMetadata(
        success=False,  # the simulator's replay decides, where there is one
        source="synthetic",
        task=rollout.start.task,
        iteration=rollout.iteration,
        policy_checkpoint=checkpoint,
        episode_id=rollout.episode_id,
    )
    return imagined_episode(rollout.start.instruction, metadata, frames, joints, poses, stride)


def imagined_episode(
    instruction: str, metadata: EpisodeMetadata, frames, joints, poses, stride: int
) -> Episode:
    """A 15 Hz `Episode` from world-model frames (1 + K, V, H, W, 3) and the joints (T + 1, 7)
    and poses (T + 1, 7) (gripper last) of its T + 1 states; T may stop short of the frames'
    K * stride steps (a replay cut to its recording's length)."""
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
    episode = Episode(instruction, observation, action_dict, metadata)
    episode.validate(where=metadata.episode_id)
    return episode


@dataclasses.dataclass(frozen=True)
class ImaginedArrays:
    """B rollouts imagined for K interactions of S robot steps each (T = K * S)."""

    frames: np.ndarray  # (B, 1 + K * (F - 1), V, H, W, 3) uint8: the start, then 5 Hz frames
    joints: np.ndarray  # (B, T + 1, 7) float64: integrated joint positions, start first
    poses: np.ndarray  # (B, T + 1, 7) float64: their FK poses, commanded gripper last


def imagine_frames(
    world,
    policy,
    starts: Sequence[StartState],
    *,
    config,
    rng: jax.Array,
    interactions: int | None = None,
    bar=None,
    mesh: Mesh | None = None,
) -> ImaginedArrays:
    """Closed-loop imagination of B rollouts from `starts` (`world`: a `TrainedWorldModel`;
    `policy(observations, rng=key)` -> (B, H, 8) actions, e.g. a `TrainedPolicy`, or recorded
    actions replayed chunk by chunk). `interactions` defaults to `loop.imagine_interactions`;
    the noise depends on `rng` alone.

    `mesh` (default: `vlaw.train.mesh.rows_mesh(B)`): the world model's memory, poses and text
    are split over its "data" axis and its parameters replicated, so every device imagines
    B / n rows of each chunk (the loop's dominant cost); the policy acts on the gathered
    frames."""
    mesh = mesh_lib.rows_mesh(len(starts)) if mesh is None else mesh
    rows = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    params = jax.device_put(world.params, replicated)
    cfg, stride = world.model.config, int(config.world_model.frame_stride)
    if interactions is None:
        interactions = int(config.loop.imagine_interactions)
    steps = steps_per_interaction(config)
    camera_size = (int(config.data.image_height), int(config.data.image_width))
    tool = jnp.asarray(kinematics.station_tool_transform(bool(config.sim.enabled)))
    instructions = [s.instruction for s in starts]
    text = jax.device_put(world.text(instructions), rows)
    joints = np.stack([s.joint_position for s in starts]).astype(np.float64)
    gripper = np.stack([s.gripper_position for s in starts]).astype(np.float64)
    camera = np.stack([s.images for s in starts])  # the policy's first look: real frames
    first, latents = encode_start(
        world.vae, params["vae"], jax.device_put(camera, rows), size=world.pixel_size
    )
    pose = np.asarray(kinematics.end_effector_poses(joints, gripper, tool), np.float64)
    memory = cw.init_memory(cfg, latents, cw.normalize_poses(pose, cfg), interactions)
    # Placed as `imagine_chunk`'s outputs are (rows split, the length replicated): one
    # compilation, not two.
    memory = jax.device_put(memory, (rows, rows, replicated))
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
            for b in range(len(starts))
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
            params,
            memory,
            jax.device_put(np.asarray(chunk_poses[:, ::stride], np.float32), rows),
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
    return ImaginedArrays(frames, path, poses)


def imagine_batch(
    world,
    policy,
    rollouts: Sequence[Rollout],
    *,
    config,
    rng: jax.Array,
    bar=None,
    mesh: Mesh | None = None,
) -> list[Episode]:
    """`imagine_frames` of B planned rollouts with a `TrainedPolicy`, as their B episodes."""
    starts = [r.start for r in rollouts]
    imagined = imagine_frames(world, policy, starts, config=config, rng=rng, bar=bar, mesh=mesh)
    stride = int(config.world_model.frame_stride)
    return [
        _episode(
            r, imagined.frames[b], imagined.joints[b], imagined.poses[b], stride, policy.checkpoint
        )
        for b, r in enumerate(rollouts)
    ]
