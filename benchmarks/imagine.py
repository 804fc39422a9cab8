"""Imagination throughput: pi0.5 and the world model in the closed loop, and what the paper's
budget costs.

    python benchmarks/imagine.py                     # paper size, 8 rollouts (one GPU)
    python benchmarks/imagine.py --preset=tiny       # CPU smoke run

What runs is the `imagine` phase's own loop, `vlaw.rollout.imagine.imagine_batch` (so
`encode_start`, `imagine_chunk` and the policy's sampler, nothing re-implemented), on random
weights of the preset's sizes: the policy built with `TrainedPolicy.from_params` (no checkpoint
written), the world model and its VAE as `TrainedWorldModel`, B rollouts of the scoop task from
a home-pose start with flat grey camera frames. At paper size one interaction is: pi0.5
samples a 15-action chunk (10 flow steps over 3 images at 224x224 + the 200-token prompt);
12 actions are integrated; the world model predicts a 5-frame chunk (50 Euler steps with CFG
over 11 frames of 72x40 latents, bf16), the VAE decodes it to 3 views of 192x320, and the last
frame is resized to the policy's 180x320 cameras.

Timed: each interaction, from the loop's progress callback (each one ends with the new frames
on the host, so it is synchronised). The first interaction includes compilation; the steady
figure is the median of the others (`--interactions` in all, so at least 2). Frames: the
world model's new 5 Hz frames, (num_future - 1) = 4 per rollout per interaction, each a frame
of all three cameras. The paper's budget (paper Sec. 4.2; shared/research/vlaw_paper.txt):
500 rollouts x 5 tasks x 20 interactions = 50,000 rollout-interactions, run as batches of B
rollouts; GPU-hours = batches x (20 steady interactions + the batch's episode assembly). On 8
GPUs: the 1-GPU hours / 8, i.e. 8 independent imaginers (one per GPU, each its share of the
plan); `imagine_batch`'s rows mesh on 8 devices would instead run the policy on the gathered
batch, so its policy share (printed) does not shrink.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import flax.linen as nn
import jax
import numpy as np

from vlaw.agents import policy as policy_lib
from vlaw.agents import world_model as wm
from vlaw.config import experiment_config
from vlaw.data import droid
from vlaw.data.norm_stats import NormStats
from vlaw.franka import HOME_JOINT_POSITION
from vlaw.models.policy import pi05
from vlaw.models.policy.tokenizer import PaligemmaTokenizer
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model.vae import TemporalVAE
from vlaw.rollout import imagine
from vlaw.rollout.imagine_plan import Rollout, StartState

TASK, INSTRUCTION = "scoop", "scoop the beans into the bowl"
PAPER_BUDGET = dict(rollouts_per_task=500, tasks=5, interactions=20)  # paper Sec. 4.2
DEFAULTS = {"paper": dict(rollouts=8, interactions=3), "tiny": dict(rollouts=2, interactions=3)}


def benchmark_config(preset: str, interactions: int, sampling_steps: int | None = None):
    config = experiment_config((TASK,), preset)
    config.loop.imagine_interactions = interactions
    if sampling_steps:
        config.world_model.num_sampling_steps = sampling_steps
    return config


def random_policy(config, assets_dir: str, seed: int = 0) -> policy_lib.TrainedPolicy:
    """pi0.5 at `policy.variant` with random weights, the preset's vocabulary, a small
    SentencePiece model for the prompt and identity-like norm stats."""
    path = policy_lib.train_small_tokenizer(
        os.path.join(assets_dir, policy_lib.TOKENIZER_FILE),
        [INSTRUCTION],
        int(config.policy.tokenizer_vocab_size),
    )
    overrides = policy_lib.model_overrides(config, int(config.policy.tokenizer_vocab_size))
    overrides.pop("vocab_size")  # the preset's (PaliGemma's at paper): its memory, not the 512
    model_config = pi05.pi05_config(config.policy.variant, **overrides)
    init = jax.jit(lambda rng: nn.unbox(pi05.init_params(model_config, rng))["params"])
    params = init(jax.random.PRNGKey(seed))
    dims = droid.POLICY_ACTION_DIM
    unit = NormStats(
        mean=np.zeros(dims, np.float32),
        std=np.ones(dims, np.float32),
        q01=-np.ones(dims, np.float32),
        q99=np.ones(dims, np.float32),
    )
    preprocessor = policy_lib.Preprocessor(
        PaligemmaTokenizer(path, model_config.max_token_len),
        {"state": unit, "actions": unit},
        model_config.action_dim,
        model_config.state_input,
    )
    return policy_lib.TrainedPolicy.from_params(
        model_config, params, preprocessor, checkpoint="random", seed=seed
    )


def random_world_model(config, seed: int = 1) -> wm.TrainedWorldModel:
    """Ctrl-World and its VAE at `world_model.variant`, random weights (fp32 masters, as the
    phase restores them), seeded text vectors."""
    spec = {"scaling_factor": 0.18215, "residual_scale": 0.0}  # SVD's VAE scale
    if config.world_model.diffuse_residuals:
        spec["residual_scale"] = 2.0
    model_cfg = wm.model_config_from_spec(config, spec)
    model = cw.CtrlWorld(model_cfg)
    vae = TemporalVAE(model_cfg.vae)
    init = wm.world_model_init_fn(model, vae, wm.pixel_size(model_cfg))
    params = jax.jit(lambda rng: nn.unbox(init(rng)))(jax.random.PRNGKey(seed))
    text = wm.TextEmbeddings(model_cfg.text_dim)
    return wm.TrainedWorldModel(model, vae, params, text, spec)


def start_rollouts(config, count: int) -> list[Rollout]:
    height, width = int(config.data.image_height), int(config.data.image_width)
    start = StartState(
        task=TASK,
        episode_id="",
        instruction=INSTRUCTION,
        images=np.full((len(droid.CAMERA_NAMES), height, width, 3), 128, np.uint8),
        joint_position=HOME_JOINT_POSITION.astype(np.float32),
        gripper_position=np.zeros(1, np.float32),
    )
    return [Rollout(index=i, start=start, iteration=1) for i in range(count)]


class _Clock:
    """The loop's progress bar: the time at which each interaction ended."""

    def __init__(self):
        self.marks = [time.perf_counter()]

    def update(self, n: int = 1) -> None:
        del n
        self.marks.append(time.perf_counter())


class _TimedPolicy:
    """The policy, with the seconds of each call kept (its share of an interaction)."""

    def __init__(self, policy):
        self.policy, self.checkpoint, self.seconds = policy, policy.checkpoint, []

    def __call__(self, observations, **kwargs):
        start = time.perf_counter()
        actions = self.policy(observations, **kwargs)  # numpy: synchronised
        self.seconds.append(time.perf_counter() - start)
        return actions


def measure(
    preset: str,
    rollouts: int,
    interactions: int,
    sampling_steps: int | None = None,
) -> dict:
    """Runs `imagine_batch` once over `interactions` (>= 2) and returns the figures as a dict
    (the keys gpu_suite.py reads)."""
    if interactions < 2:
        raise ValueError("--interactions must be >= 2: the first one compiles")
    config = benchmark_config(preset, interactions, sampling_steps)
    build_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as assets:
        policy = _TimedPolicy(random_policy(config, assets))
    world = random_world_model(config)
    jax.block_until_ready((policy.policy.params, world.params))
    build_s = time.perf_counter() - build_start
    plan = start_rollouts(config, rollouts)
    clock = _Clock()
    episodes = imagine.imagine_batch(
        world, policy, plan, config=config, rng=jax.random.PRNGKey(0), bar=clock
    )
    end = time.perf_counter()
    per_interaction = np.diff(clock.marks)
    steady = statistics.median(per_interaction[1:].tolist())
    policy_steady = statistics.median(policy.seconds[1:])
    assembly_s = end - clock.marks[-1]
    cfg = world.model.config
    frames_per_interaction = rollouts * (cfg.num_future - 1)
    budget = PAPER_BUDGET["rollouts_per_task"] * PAPER_BUDGET["tasks"]
    batches = -(-budget // rollouts)
    batch_s = PAPER_BUDGET["interactions"] * steady + assembly_s * (
        PAPER_BUDGET["interactions"] / interactions
    )
    hours_1 = batches * batch_s / 3600
    return dict(
        preset=preset,
        rollouts=rollouts,
        interactions=interactions,
        euler_steps=int(cfg.num_steps),
        guidance=float(cfg.max_guidance),
        frames_per_chunk=int(cfg.num_frames),
        build_s=build_s,
        first_interaction_s=float(per_interaction[0]),
        interaction_s=float(steady),
        policy_s=float(policy_steady),
        world_model_s=float(steady - policy_steady),
        assembly_s=float(assembly_s),
        imagined_frames_per_s=frames_per_interaction / steady,
        imagined_steps_per_s=rollouts * imagine.steps_per_interaction(config) / steady,
        paper_rollout_interactions=budget * PAPER_BUDGET["interactions"],
        paper_hours_1_gpu=hours_1,
        paper_hours_8_gpu=hours_1 / 8,
        episodes=len(episodes),
        episode_steps=int(len(episodes[0].action_dict["action_dict/joint_velocity"])),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(DEFAULTS), default="paper")
    parser.add_argument("--rollouts", type=int, help="rollouts imagined together (B)")
    parser.add_argument("--interactions", type=int, help="interactions, the first compiling")
    parser.add_argument("--sampling_steps", type=int, help="Euler steps (default: the config's)")
    args = parser.parse_args()
    defaults = DEFAULTS[args.preset]
    result = measure(
        args.preset,
        args.rollouts or defaults["rollouts"],
        args.interactions or defaults["interactions"],
        args.sampling_steps,
    )
    where = jax.devices()[0].device_kind
    print(
        f"imagination, preset {args.preset}, device {where}: {result['rollouts']} rollouts, "
        f"{result['euler_steps']} Euler steps, CFG {result['guidance']:g}, "
        f"{result['interactions']} interactions (the first compiles)"
    )
    print(
        "| first interaction s | interaction s | policy s | world model s | frames/s "
        "| 15 Hz steps/s | paper budget, 1 GPU h | 8 GPUs h |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {result['first_interaction_s']:.2f} | {result['interaction_s']:.3f} | "
        f"{result['policy_s']:.3f} | {result['world_model_s']:.3f} | "
        f"{result['imagined_frames_per_s']:.2f} | {result['imagined_steps_per_s']:.1f} | "
        f"{result['paper_hours_1_gpu']:.1f} | {result['paper_hours_8_gpu']:.2f} |"
    )
    if jax.default_backend() == "cpu":
        print("(CPU: a smoke test of the loop; the figures say nothing about a GPU)")


if __name__ == "__main__":
    main()
