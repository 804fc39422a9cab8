"""Ctrl-World in JAX: SVD spatio-temporal UNet, temporal VAE, frame-level pose conditioning.

- `unet.py`: `UNetSpatioTemporal`, `UNetConfig` (diffusers' UNetSpatioTemporalConditionModel).
- `vae.py`: `TemporalVAE`, `VAEConfig`, `encode_latents`, `decode_latents`
  (AutoencoderKLTemporalDecoder).
- `ctrl_world.py`: `CtrlWorld`, `CtrlWorldConfig`, `world_model_loss`, `predict`, `rollout`,
  `sample_future`, `karras_sigmas`, multi-view and memory-buffer helpers.
- `pose_maps.py`: `pose_maps`, the gripper drawn where each calibrated camera sees it (extra
  UNet channels; not Ctrl-World's, off at paper).
- `kinematics.py`: `poses_from_joint_velocities` (π0.5 joint velocities -> Ctrl-World poses);
  `integrate_joint_velocities`, `end_effector_poses` (imagine: Franka-limited joints, poses).
Weights: `vlaw/convert/ctrl_world.py`.
"""

from vlaw.models.world_model.ctrl_world import (
    ActionEncoder,
    CtrlWorld,
    CtrlWorldConfig,
    added_time_ids,
    append_memory,
    decode_views,
    init_memory,
    init_params,
    karras_sigmas,
    memory_frames,
    normalize_poses,
    predict,
    rollout,
    sample_future,
    split_views,
    stack_views,
    world_model_loss,
)
from vlaw.models.world_model.kinematics import (
    franka_forward_kinematics,
    pose_from_joints,
    poses_from_joint_velocities,
)
from vlaw.models.world_model.unet import UNetConfig, UNetSpatioTemporal
from vlaw.models.world_model.vae import TemporalVAE, VAEConfig, decode_latents, encode_latents

__all__ = [
    "ActionEncoder",
    "CtrlWorld",
    "CtrlWorldConfig",
    "TemporalVAE",
    "UNetConfig",
    "UNetSpatioTemporal",
    "VAEConfig",
    "added_time_ids",
    "append_memory",
    "decode_latents",
    "decode_views",
    "encode_latents",
    "franka_forward_kinematics",
    "init_memory",
    "init_params",
    "karras_sigmas",
    "memory_frames",
    "normalize_poses",
    "pose_from_joints",
    "poses_from_joint_velocities",
    "predict",
    "rollout",
    "sample_future",
    "split_views",
    "stack_views",
    "world_model_loss",
]
