"""The `train_policy` phase: pi0.5 on D_real+ and D_syn+ with Eq. 4's binary weights, and the
trained policy loaded back as a callable for `vlaw.rollout.real.policy_episodes`.

At iteration k the policy trains on the union of `<workdir>/demos`, every
`<workdir>/iter_{0..k}/real` and every `<workdir>/iter_{0..k}/synthetic` that exists. Each
example carries its episode's weight (Eq. 4): the station's `success` label for demos and real
rollouts, the reward model's `kept` decision (P("yes") > alpha, Eq. 3) for synthetic ones;
failures weigh 0, so they cost compute but contribute no gradient.

Starting point, in order: the previous iteration's policy checkpoint; else
`policy.train.init_from` (an openpi checkpoint directory holding `params/`, or a vlaw run's
checkpoint directory); else a fresh initialisation. Resume (the same iteration interrupted) is
separate and always wins: the trainer restores the newest checkpoint of the iteration's own
directory, with its data position.

Everything a checkpoint needs to act is written beside it, so `load_policy` reads one
directory, `<workdir>/checkpoints/policy/iter_NN/`:

  <step>/             orbax TrainState + data position (vlaw.train.trainer)
  metrics.jsonl       the loss curve
  norm_stats.json     openpi's layout; quantile normalisation of state and actions
  tokenizer.model     the SentencePiece model of the prompt
  policy.json         the model preset and its overrides, camera slots, provenance

Norm stats are computed from the training data the first time a policy is trained (or taken
from the openpi checkpoint it starts from) and carried forward from iteration to iteration, so
a fine-tuned model keeps the input and output scales it was trained with.

Tokenizer: with `policy.tokenizer_path` set (paper: PaliGemma's SentencePiece model) that model
is used and the preset's vocabulary (PaliGemma's 257 152, so openpi checkpoints load) kept. Left
empty (tiny, sim), a small SentencePiece model is trained once, deterministically, on the task
instructions found in the data and on every state-bin string, saved to
`<workdir>/assets/tokenizer.model`, and the model's vocabulary is set to that tokenizer's size
(`policy.tokenizer_vocab_size`, 512 by default, instead of 257 152: the sim preset's
embedding then shrinks from 66M to 0.1M parameters).
"""

import dataclasses
import functools
import glob
import json
import os
import shutil
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vlaw.data import droid, rlds, transforms, windows
from vlaw.data import norm_stats as norm_stats_lib
from vlaw.models.policy import pi05
from vlaw.models.policy.tokenizer import NUM_STATE_BINS, PaligemmaTokenizer, clean_prompt
from vlaw.train import checkpoints, optim, trainer

# Camera -> pi0.5 image slot, openpi's DROID mapping: base_0_rgb = exterior 1, left_wrist_0_rgb
# = the wrist camera; openpi leaves the third slot (right_wrist_0_rgb) empty for DROID, here it
# sees the second exterior camera, which every VLAW station records.
CAMERA_SLOTS = (droid.CAMERA_NAMES[0], droid.CAMERA_NAMES[2], droid.CAMERA_NAMES[1])
_SLOT_INDEX = np.array([droid.CAMERA_NAMES.index(name) for name in CAMERA_SLOTS])
SPEC_FILE, NORM_STATS_FILE, TOKENIZER_FILE = "policy.json", "norm_stats.json", "tokenizer.model"


def policy_checkpoint_dir(workdir: str, iteration: int) -> str:
    return os.path.join(workdir, "checkpoints", "policy", f"iter_{iteration:02d}")


def has_policy_checkpoint(workdir: str, iteration: int) -> bool:
    """True once iteration's training has saved a checkpoint and its spec (loadable)."""
    directory = policy_checkpoint_dir(workdir, iteration)
    return (
        os.path.exists(os.path.join(directory, SPEC_FILE)) and _latest_step(directory) is not None
    )


def _latest_step(directory: str) -> int | None:
    """The newest committed orbax step (its temporary `<step>.orbax-checkpoint-tmp-*` skipped)."""
    names = [os.path.basename(p) for p in glob.glob(os.path.join(directory, "[0-9]*"))]
    steps = [int(n) for n in names if n.isdigit() and os.path.isdir(os.path.join(directory, n))]
    return max(steps) if steps else None


def training_dataset_dirs(workdir: str, iteration: int) -> list[str]:
    """demos, then iter_00/real, iter_00/synthetic, ..., iter_k/synthetic: those that exist."""
    from vlaw.pipeline import iteration_dir

    candidates = [os.path.join(workdir, "demos")]
    for i in range(iteration + 1):
        candidates += [
            os.path.join(iteration_dir(workdir, i), kind) for kind in ("real", "synthetic")
        ]
    return [d for d in candidates if os.path.isdir(d)]


def weighted_policy_batches(
    config: ml_collections.ConfigDict,
    dataset_dirs: Sequence[str],
    seed: int,
    shuffle_buffer: int | None = None,
):
    """The policy's training examples with Eq. 4's weights (`windows.episode_weight`).

    Batches: images (B, 3, H, W, 3) uint8 in droid.CAMERA_NAMES order, state (B, 8), prompt (B,)
    bytes, actions (B, action_horizon, 8), weight (B,) float32.
    """
    return windows.policy_batches_from_config(
        config, dataset_dirs, seed=seed, shuffle_buffer=shuffle_buffer
    )


# --------------------------------------------------------------------------------------------
# Tokenizer and model configuration.


@dataclasses.dataclass
class DataSummary:
    """What one pass over the training episodes' records finds (images stay encoded)."""

    num_episodes: int = 0
    num_steps: int = 0
    weighted_episodes: int = 0  # episodes of weight 1 (Eq. 4)
    weighted_steps: int = 0
    instructions: tuple[str, ...] = ()


def scan_episodes(dataset_dirs: Sequence[str], skip_corrupt: bool = False) -> DataSummary:
    summary, instructions = DataSummary(), set()
    for dataset_dir in dataset_dirs:
        layout = rlds.open_dataset(dataset_dir)
        for raw in rlds.iter_raw_episodes(layout, skip_corrupt=skip_corrupt):
            weight = windows.episode_weight(rlds.metadata_from_raw(raw))
            summary.num_episodes += 1
            summary.num_steps += int(raw["num_steps"])
            summary.weighted_episodes += int(weight > 0)
            summary.weighted_steps += int(weight > 0) * int(raw["num_steps"])
            instructions.add(clean_prompt(rlds.instruction_from_raw(raw)))
    summary.instructions = tuple(sorted(instructions))
    return summary


def train_small_tokenizer(path: str, instructions: Sequence[str], vocab_size: int) -> str:
    """Trains a SentencePiece model for the pi0.5 prompt format; deterministic in its inputs.

    BPE (a unigram model of this size learned the 256 numbers but spelled the words out letter
    by letter, doubling the prompt). Special ids as PaliGemma's (pad 0, eos 1, bos 2, unk 3);
    byte fallback, so any text (an
    instruction not seen here, the "\\n" of the prompt) still encodes; identity normalisation
    and no dummy prefix, as Gemma's tokenizer. The corpus: each instruction inside the prompt
    template, and every state bin 0..255 in runs of 8 (the DROID state's length).
    """
    import sentencepiece

    # Instructions are repeated so that their words weigh as much as the 256 numbers do.
    lines = [f"Task: {text}, State: " for text in instructions] * 64
    bins = np.arange(NUM_STATE_BINS)
    for shift in range(8):
        rolled = np.roll(bins, -shift * 37)  # different neighbours for each number
        lines += [" ".join(map(str, rolled[i : i + 8])) + ";" for i in range(0, NUM_STATE_BINS, 8)]
    lines += ["Action: "] * 64
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    prefix = f"{path}.tmp-{os.getpid()}"
    with open(prefix + ".txt", "w") as f:
        f.write("\n".join(lines) + "\n")
    sentencepiece.SentencePieceTrainer.train(
        input=prefix + ".txt",
        model_prefix=prefix,
        vocab_size=vocab_size,
        model_type="bpe",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        hard_vocab_limit=False,
        num_threads=1,  # one thread: the same corpus gives the same model
        minloglevel=2,
    )
    os.replace(prefix + ".model", path)
    for leftover in (prefix + ".txt", prefix + ".vocab"):
        os.remove(leftover)
    return path


def tokenizer_path_for(
    config: ml_collections.ConfigDict, workdir: str, instructions: Sequence[str]
) -> str:
    """`policy.tokenizer_path`, or the run's own small model (trained here the first time)."""
    if config.policy.tokenizer_path:
        return config.policy.tokenizer_path
    if config.policy.variant == "paper":
        raise ValueError(
            "the paper preset needs PaliGemma's SentencePiece model: set "
            "--config.policy.tokenizer_path=/path/to/paligemma_tokenizer.model"
        )
    path = os.path.join(workdir, "assets", TOKENIZER_FILE)
    if not os.path.exists(path):
        train_small_tokenizer(path, instructions, config.policy.tokenizer_vocab_size)
        logging.info("train_policy: trained a SentencePiece model for the prompts: %s", path)
    return path


def model_overrides(config: ml_collections.ConfigDict, tokenizer_vocab: int) -> dict[str, Any]:
    """The fields of `pi05_config(policy.variant)` that the experiment config decides."""
    p = config.policy
    overrides = dict(
        action_horizon=int(p.action_horizon),
        num_sampling_steps=int(p.num_sampling_steps),
        max_token_len=int(p.max_token_len),
        dtype=str(p.train.compute_dtype),
        param_dtype=str(p.train.param_dtype),
        remat_policy=str(p.train.remat_policy),
        state_input=str(p.state_input),
        trained_action_dims=0 if p.loss_on_padding else droid.POLICY_ACTION_DIM,
    )
    preset_vocab = pi05.pi05_config(p.variant).vocab_size
    if not p.tokenizer_path:
        overrides["vocab_size"] = int(tokenizer_vocab)  # the run's small tokenizer
    elif tokenizer_vocab > preset_vocab:
        raise ValueError(
            f"{p.tokenizer_path} has {tokenizer_vocab} pieces, more than the {p.variant} "
            f"preset's vocabulary of {preset_vocab}"
        )
    return overrides


# --------------------------------------------------------------------------------------------
# Preprocessing, shared by training (host_fn + loss) and inference (TrainedPolicy).


@dataclasses.dataclass
class Preprocessor:
    """Host side of the policy's input pipeline: normalise, tokenise, pad.

    `host_batch` maps a `weighted_policy_batches` batch to the arrays the loss reads: images
    (B, 3, H, W, 3) uint8 in CAMERA_SLOTS order, tokens (B, L) int32, token_mask (B, L) bool,
    state (B, 8) float32 (quantile-normalised), actions (B, H, action_dim) float32
    (quantile-normalised, zero-padded), weight (B,). With `state_input` "continuous" the
    prompt carries no state bins (the model reads `state`).
    """

    tokenizer: PaligemmaTokenizer
    stats: dict[str, norm_stats_lib.NormStats]
    action_dim: int
    state_input: str = "tokens"

    def inputs(
        self, prompts: Sequence[str], state: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> tokens (B, L), token_mask (B, L), normalised state (B, 8) float32."""
        normalized = transforms.normalize(
            np.asarray(state, np.float32), self.stats["state"], use_quantiles=True
        ).astype(np.float32)
        in_prompt = normalized if self.state_input == "tokens" else None
        tokens, token_mask = self.tokenizer.tokenize_batch(list(prompts), in_prompt)
        return tokens, token_mask, normalized

    def host_batch(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        prompts = [p.decode() if isinstance(p, bytes) else str(p) for p in batch["prompt"]]
        tokens, token_mask, state = self.inputs(prompts, batch["state"])
        actions = transforms.normalize(batch["actions"], self.stats["actions"], use_quantiles=True)
        padding = self.action_dim - actions.shape[-1]
        actions = np.pad(actions, [(0, 0), (0, 0), (0, padding)])  # openpi pads with zeros
        return {
            "images": np.asarray(batch["images"])[:, _SLOT_INDEX],
            "tokens": tokens.astype(np.int32),
            "token_mask": token_mask,
            "state": state,
            "actions": actions.astype(np.float32),
            "weight": np.asarray(batch["weight"], np.float32),
        }


def device_observation(
    model_config: pi05.Pi05Config,
    images: jax.Array,
    tokens: jax.Array,
    token_mask: jax.Array,
    state: jax.Array | None = None,
) -> pi05.Observation:
    """uint8 images (B, 3, H, W, 3) -> resized with padding to the model's size, in [-1, 1]."""
    size = model_config.image_size
    resized = transforms.resize_with_pad(images, size, size)
    return pi05.Observation(
        images=resized.astype(jnp.float32) / 127.5 - 1.0,
        image_masks=jnp.ones(images.shape[:2], bool),
        tokens=tokens,
        token_mask=token_mask,
        state=state,
    )


def make_loss_fn(model: pi05.Pi05):
    """(params, batch, rng) -> (loss, metrics): Eq. 4 on the masters cast to compute dtype."""
    from vlaw.losses import flow_matching_loss

    config = model.config

    def loss_fn(params, batch, rng):
        params = optim.cast_for_compute(params, config.dtype)
        obs = device_observation(
            config, batch["images"], batch["tokens"], batch["token_mask"], batch.get("state")
        )

        def velocity(x_t, t):
            return model.apply({"params": params}, obs, x_t, t)

        # trained_action_dims 0: all 32 dims are trained, padded ones towards 0, as openpi does
        # (so its checkpoints fine-tune as they were trained). Else only the real ones.
        trained = config.trained_action_dims or config.action_dim
        # The real dims' losses, logged apart (DROID: 7 joint velocities, then the gripper).
        dims = jnp.arange(config.action_dim)
        gripper = droid.POLICY_ACTION_DIM - 1
        reported = {"arm": dims < gripper, "gripper": dims == gripper}
        return flow_matching_loss(
            velocity,
            batch["actions"],
            rng,
            weights=batch["weight"],
            action_mask=jnp.arange(config.action_dim) < trained,
            dim_groups=reported,
        )

    return loss_fn


# --------------------------------------------------------------------------------------------
# The phase.


def _seed(config, iteration: int) -> int:
    # A seed per (run, phase, iteration): iterations draw different noise and data orders.
    return int(np.random.SeedSequence([int(config.seed), 4, iteration]).generate_state(1)[0] >> 1)


def _write_json(path: str, payload: dict) -> None:
    temp = f"{path}.tmp-{os.getpid()}"
    with open(temp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(temp, path)


def _is_openpi_checkpoint(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "params")) and _latest_step(path) is None


def _prepare(
    config, workdir: str, iteration: int, dataset_dirs: list[str], data: DataSummary
) -> dict:
    """Writes tokenizer, norm stats and policy.json beside the checkpoint (once per iteration:
    a resumed run reuses them, so it sees exactly the preprocessing it started with)."""
    ckpt_dir = policy_checkpoint_dir(workdir, iteration)
    spec_path = os.path.join(ckpt_dir, SPEC_FILE)
    if os.path.exists(spec_path):
        with open(spec_path) as f:
            return json.load(f)
    os.makedirs(ckpt_dir, exist_ok=True)
    previous = policy_checkpoint_dir(workdir, iteration - 1) if iteration > 0 else ""
    init_from = str(config.policy.train.init_from or "")
    if previous and has_policy_checkpoint(workdir, iteration - 1):
        init = {"kind": "previous_iteration", "path": previous}
    elif init_from:
        kind = "openpi" if _is_openpi_checkpoint(init_from) else "vlaw"
        init = {"kind": kind, "path": init_from}
    else:
        init = {"kind": "scratch", "path": ""}

    # A vlaw policy checkpoint we start from brings its tokenizer (whose ids its embedding
    # was trained on) and its norm stats (the scales its inputs and outputs were trained at).
    carry_from = init["path"] if init["kind"] in ("previous_iteration", "vlaw") else ""

    def carried(name: str) -> bool:
        return bool(carry_from) and os.path.exists(os.path.join(carry_from, name))

    if carried(TOKENIZER_FILE):
        tokenizer_source = os.path.join(carry_from, TOKENIZER_FILE)
    else:
        tokenizer_source = tokenizer_path_for(config, workdir, data.instructions)
    shutil.copyfile(tokenizer_source, os.path.join(ckpt_dir, TOKENIZER_FILE))

    stats_path = os.path.join(ckpt_dir, NORM_STATS_FILE)
    openpi_stats = os.path.join(
        init_from, "assets", str(config.policy.openpi_asset_id), NORM_STATS_FILE
    )
    if carried(NORM_STATS_FILE):
        stats_origin = os.path.join(carry_from, NORM_STATS_FILE)
        stats = norm_stats_lib.load_norm_stats(stats_origin)
    elif init["kind"] == "openpi" and os.path.exists(openpi_stats):
        from vlaw.convert.openpi import load_norm_stats

        stats, stats_origin = load_norm_stats(openpi_stats), openpi_stats
    else:
        stats = norm_stats_lib.compute_norm_stats(
            dataset_dirs, skip_corrupt=config.data.skip_corrupt
        )
        stats_origin = "computed from the training data"
    norm_stats_lib.save_norm_stats(stats_path, {k: stats[k] for k in ("state", "actions")})

    tokenizer = PaligemmaTokenizer(
        os.path.join(ckpt_dir, TOKENIZER_FILE), config.policy.max_token_len
    )
    spec = {
        "variant": str(config.policy.variant),
        "overrides": model_overrides(config, tokenizer.vocab_size),
        "camera_slots": list(CAMERA_SLOTS),
        "iteration": iteration,
        "init": init,
        "norm_stats_origin": stats_origin,
        "dataset_dirs": list(dataset_dirs),
        "open_loop_steps": int(config.policy.open_loop_steps),
    }
    _write_json(spec_path, spec)  # last: its presence means "prepared"
    return spec


def train_policy_phase(
    config: ml_collections.ConfigDict,
    workdir: str,
    iteration: int,
    *,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> dict:
    """Algorithm 1's policy update (see the module docstring). Returns the summary.

    `stop_at_step` ends the call early with a checkpoint, as a preemption would (tests,
    time-limited jobs); calling again resumes exactly.
    """
    dataset_dirs = training_dataset_dirs(workdir, iteration)
    if not dataset_dirs:
        raise FileNotFoundError(
            f"train_policy: no dataset under {workdir} (demos, iter_NN/real, iter_NN/synthetic); "
            "run the collect phase first"
        )
    data = scan_episodes(dataset_dirs, config.data.skip_corrupt)
    if data.weighted_episodes == 0:
        logging.warning(
            "train_policy: none of the %d episodes succeeded (or was kept): every example has "
            "weight 0 (Eq. 4), so the policy will not change",
            data.num_episodes,
        )
    spec = _prepare(config, workdir, iteration, dataset_dirs, data)
    ckpt_dir = policy_checkpoint_dir(workdir, iteration)
    model_config = pi05.pi05_config(spec["variant"], **spec["overrides"])
    model = pi05.Pi05(model_config)
    preprocessor = Preprocessor(
        PaligemmaTokenizer(os.path.join(ckpt_dir, TOKENIZER_FILE), model_config.max_token_len),
        norm_stats_lib.load_norm_stats(os.path.join(ckpt_dir, NORM_STATS_FILE)),
        model_config.action_dim,
        model_config.state_input,
    )
    train_config = ml_collections.ConfigDict(config.policy.train.to_dict())
    init_params = None
    init = spec["init"]
    if init["kind"] in ("previous_iteration", "vlaw"):
        train_config.init_from = init["path"]  # the trainer reads only its `params`
    elif init["kind"] == "openpi":
        from vlaw.convert.openpi import load_openpi_checkpoint

        train_config.init_from = ""
        if _latest_step(ckpt_dir) is None:  # not needed when resuming
            init_params = load_openpi_checkpoint(init["path"], model_config)[0]["params"]
    else:
        train_config.init_from = ""
    seed = _seed(config, iteration)
    # A shuffle buffer larger than the data only mixes epochs, and fills slowly: reading the
    # tiny preset's 120 steps 17 times over before the first batch of a 2000-step buffer.
    buffer = min(int(config.data.shuffle_buffer), data.num_steps)
    batches = weighted_policy_batches(config, dataset_dirs, seed, shuffle_buffer=buffer)
    try:
        state = trainer.train(
            train_config,
            config.ckpt,
            config.mesh,
            workdir=ckpt_dir,
            init_fn=lambda rng: pi05.init_params(model_config, rng)["params"],
            loss_fn=make_loss_fn(model),
            batches=batches,
            host_fn=preprocessor.host_batch,
            init_params=init_params,
            seed=seed,
            progress=progress,
            stop_at_step=stop_at_step,
        )
    finally:
        batches.close()
    curve = trainer.read_metrics(ckpt_dir)
    step = int(jax.device_get(state.step))
    summary = {
        "checkpoint": ckpt_dir,
        "step": step,
        "init": init["kind"],
        "init_path": init["path"],
        "dataset_dirs": dataset_dirs,
        "norm_stats": spec["norm_stats_origin"],
        "num_episodes": data.num_episodes,
        "num_steps": data.num_steps,
        "weighted_episodes": data.weighted_episodes,
        "weighted_steps": data.weighted_steps,
        "nonfinite_count": int(jax.device_get(state.nonfinite_count)),
    }
    if curve:
        summary["first_loss"] = curve[0]["loss"]
        summary["final_loss"] = curve[-1]["loss"]
        summary["mean_weight"] = float(np.mean([m["weight_sum"] for m in curve]))
        summary["mean_weight"] /= int(config.policy.train.batch_size)
    logging.info("train_policy %s: %s", f"iter_{iteration:02d}", summary)
    return summary


# --------------------------------------------------------------------------------------------
# Inference.


@functools.partial(jax.jit, static_argnames=("model",))
def _sample(model: pi05.Pi05, params, images, tokens, token_mask, state, rng) -> jax.Array:
    """uint8 images (B, 3, H, W, 3), tokens/mask (B, L) -> normalised actions (B, H, A).

    Module-level, keyed on the (hashable) model: every policy of one configuration shares the
    compiled sampler, e.g. successive iterations' checkpoints in one process.
    """
    obs = device_observation(model.config, images, tokens, token_mask, state)
    return pi05.sample_actions(model, params, obs, rng)


class TrainedPolicy:
    """A trained checkpoint as `vlaw.rollout.real.Policy`: observations -> (B, H, 8) actions.

    Joint velocities come out in [-1, 1] and the gripper position in [0, 1]: the unnormalised
    samples are clipped to the station's action space (a sample outside it is a command the
    robot could not execute anyway). Each call draws fresh noise (a per-call counter folded
    into the seed), so repeated calls are reproducible across runs; a caller whose noise must
    not depend on call order (imagine's resumable batches) passes its own `rng`. The weights
    are the checkpoint's master `params` (an EMA, when `policy.train.ema_decay` > 0, is not
    read yet).
    """

    def __init__(self, checkpoint_dir: str, *, seed: int = 0):
        with open(os.path.join(checkpoint_dir, SPEC_FILE)) as f:
            spec = json.load(f)
        step = _latest_step(checkpoint_dir)
        if step is None:
            raise FileNotFoundError(f"no policy checkpoint step under {checkpoint_dir}")
        self.checkpoint = os.path.join(os.path.abspath(checkpoint_dir), str(step))
        self.config = pi05.pi05_config(spec["variant"], **spec["overrides"])
        self.model = pi05.Pi05(self.config)
        self.camera_slots = tuple(spec["camera_slots"])
        self.open_loop_steps = int(spec.get("open_loop_steps", 8))
        self.preprocessor = Preprocessor(
            PaligemmaTokenizer(
                os.path.join(checkpoint_dir, TOKENIZER_FILE), self.config.max_token_len
            ),
            norm_stats_lib.load_norm_stats(os.path.join(checkpoint_dir, NORM_STATS_FILE)),
            self.config.action_dim,
            self.config.state_input,
        )
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        abstract = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
            nn.unbox(pi05.abstract_params(self.config))["params"],
        )
        self.params = {"params": checkpoints.restore_params(checkpoint_dir, abstract)}
        self._rng = jax.random.PRNGKey(seed)
        self._calls = 0

    def __call__(self, observations: Sequence[Any], *, rng: jax.Array | None = None) -> np.ndarray:
        """(B, H, 8) actions for B observations. `rng`: the sampling key; None takes this
        policy's next own key (and advances the call counter, which an explicit key does not)."""
        images = np.stack(
            [np.stack([obs.images[name] for name in self.camera_slots]) for obs in observations]
        )
        state = np.stack(
            [np.concatenate([obs.joint_position, obs.gripper_position]) for obs in observations]
        )
        tokens, token_mask, state = self.preprocessor.inputs(
            [obs.instruction for obs in observations], state
        )
        if rng is None:
            rng = jax.random.fold_in(self._rng, self._calls)
            self._calls += 1
        normalized = np.asarray(
            _sample(self.model, self.params, images, tokens, token_mask, state, rng)
        )
        actions = transforms.unnormalize(
            normalized[..., : droid.POLICY_ACTION_DIM],
            self.preprocessor.stats["actions"],
            use_quantiles=True,
        )
        actions[..., :7] = np.clip(actions[..., :7], -1.0, 1.0)
        actions[..., 7:] = np.clip(actions[..., 7:], 0.0, 1.0)
        return actions.astype(np.float32)


def load_policy(workdir: str, iteration: int, *, seed: int = 0) -> TrainedPolicy:
    """The policy trained at `iteration` (its newest checkpoint), ready for `policy_episodes`."""
    return TrainedPolicy(policy_checkpoint_dir(workdir, iteration), seed=seed)
