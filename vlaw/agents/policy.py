"""pi0.5 as an experiment configures it: tokenizer, model config, the trainer's init, loss and
batch preparation, a trained checkpoint directory and its loading as a callable policy.

A trained policy is one directory (the workdir puts iteration k's at
`checkpoints/policy/iter_NN/`), everything it needs to act beside its orbax steps:

  <step>/             orbax TrainState + data position (vlaw.train.trainer)
  metrics.jsonl       the loss curve
  norm_stats.json     openpi's layout; quantile normalisation of state and actions
  tokenizer.model     the SentencePiece model of the prompt
  policy.json         the model preset and its overrides, camera slots, provenance

`prepare_checkpoint_dir` writes the last three before the first step (once per directory, so a
resumed run sees exactly the preprocessing it started with), `TrainedPolicy` / `load_policy`
read the directory back, and `save_policy` writes a complete one from parameters in hand.

Norm stats are computed from the training data the first time a policy is trained (or taken
from the openpi checkpoint it starts from) and carried forward from iteration to iteration, so
a fine-tuned model keeps the input and output scales it was trained with.

Tokenizer: with `policy.tokenizer_path` set (paper: PaliGemma's SentencePiece model) that model
is used and the preset's vocabulary (PaliGemma's 257 152, so openpi checkpoints load) kept. Left
empty (tiny, sim), a small SentencePiece model is trained once, deterministically, on the task
instructions found in the data and on every state-bin string, saved to the run's assets, and
the model's vocabulary is set to that tokenizer's size (`policy.tokenizer_vocab_size`, 512 by
default, instead of 257 152: the sim preset's embedding then shrinks from 66M to 0.1M
parameters).
"""

import dataclasses
import functools
import os
import shutil
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vlaw.data import droid, policy_windows, transforms, windows
from vlaw.data import norm_stats as norm_stats_lib
from vlaw.data.atomic_json import read_json, write_json
from vlaw.losses import flow_matching_loss
from vlaw.models.policy import pi05
from vlaw.models.policy.tokenizer import NUM_STATE_BINS, PaligemmaTokenizer
from vlaw.train import checkpoints, optim

# Camera -> pi0.5 image slot, openpi's DROID mapping: base_0_rgb = exterior 1, left_wrist_0_rgb
# = the wrist camera; openpi leaves the third slot (right_wrist_0_rgb) empty for DROID, here it
# sees the second exterior camera, which every VLAW station records.
CAMERA_SLOTS = (droid.CAMERA_NAMES[0], droid.CAMERA_NAMES[2], droid.CAMERA_NAMES[1])
_SLOT_INDEX = np.array([droid.CAMERA_NAMES.index(name) for name in CAMERA_SLOTS])
SPEC_FILE, NORM_STATS_FILE, TOKENIZER_FILE = "policy.json", "norm_stats.json", "tokenizer.model"


def is_trained(directory: str) -> bool:
    """True once `directory` holds a committed checkpoint and the spec (a loadable policy)."""
    return (
        os.path.exists(os.path.join(directory, SPEC_FILE))
        and checkpoints.latest_step(directory) is not None
    )


def is_openpi_checkpoint(path: str) -> bool:
    """An openpi checkpoint directory (`params/`, no orbax steps of a vlaw run)."""
    return os.path.isdir(os.path.join(path, "params")) and checkpoints.latest_step(path) is None


def weighted_policy_batches(
    config: ml_collections.ConfigDict,
    dataset_dirs: Sequence[str],
    seed: int,
    shuffle_buffer: int | None = None,
    *,
    drop_failures: bool = False,
):
    """The policy's training examples with Eq. 4's weights (`policy_windows.episode_weight`,
    every demonstration at 1 under `policy.failed_demos`); `drop_failures` leaves the weight-0
    ones out.

    Batches: images (B, 3, H, W, 3) uint8 in droid.CAMERA_NAMES order, state (B, 8), prompt (B,)
    bytes, actions (B, action_horizon, 8), weight (B,) float32.
    """
    data = config.data
    return policy_windows.policy_batches(
        list(dataset_dirs),
        batch_size=windows.host_batch_size(config.policy.train.batch_size),
        action_horizon=config.policy.action_horizon,
        seed=seed,
        shuffle_buffer=data.shuffle_buffer if shuffle_buffer is None else shuffle_buffer,
        num_parallel_reads=data.num_parallel_reads,
        image_size=(data.image_height, data.image_width),
        skip_corrupt=data.skip_corrupt,
        drop_failures=drop_failures,
        failed_demos=config.policy.failed_demos,
    )


# --------------------------------------------------------------------------------------------
# Tokenizer and model configuration.


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
    config: ml_collections.ConfigDict, assets_dir: str, instructions: Sequence[str]
) -> str:
    """`policy.tokenizer_path`, or the run's own small model in `assets_dir` (trained there the
    first time)."""
    if config.policy.tokenizer_path:
        return config.policy.tokenizer_path
    if config.policy.variant == "paper":
        raise ValueError(
            "the paper preset needs PaliGemma's SentencePiece model: set "
            "--config.policy.tokenizer_path=/path/to/paligemma_tokenizer.model"
        )
    path = os.path.join(assets_dir, TOKENIZER_FILE)
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
# A checkpoint directory: prepared before training, its starting weights.


def prepare_checkpoint_dir(
    config: ml_collections.ConfigDict,
    directory: str,
    *,
    start_kind: str,
    start_path: str,
    assets_dir: str,
    dataset_dirs: Sequence[str],
    instructions: Sequence[str],
    iteration: int,
) -> dict:
    """Writes tokenizer, norm stats and policy.json into `directory` and returns the spec.

    Written once: a directory that already holds a checkpoint step keeps its files, so a
    resumed run sees exactly the preprocessing it started with. A spec without any step (the
    run failed before its first save, e.g. at a bad `init_from`) is prepared again from the
    current config, so fixing the config is enough to recover.

    `start_kind`/`start_path`: where the weights come from (`vlaw.workdir.Start`);
    "init_from" is resolved here to "openpi" or "vlaw" by what the directory holds.
    """
    spec_path = os.path.join(directory, SPEC_FILE)
    if os.path.exists(spec_path) and checkpoints.latest_step(directory) is not None:
        return read_json(spec_path)
    os.makedirs(directory, exist_ok=True)
    if start_kind == "init_from":
        start_kind = "openpi" if is_openpi_checkpoint(start_path) else "vlaw"
    if start_kind == "openpi" and config.policy.state_input != "tokens":
        raise ValueError(
            f"{start_path} is an openpi checkpoint, trained with the state as text bins: set "
            "--config.policy.state_input=tokens (and --config.policy.loss_on_padding=True, "
            "openpi's loss) to fine-tune it"
        )
    init = {"kind": start_kind, "path": start_path}

    # A vlaw policy checkpoint we start from brings its tokenizer (whose ids its embedding
    # was trained on) and its norm stats (the scales its inputs and outputs were trained at).
    carry_from = start_path if start_kind in ("previous_iteration", "vlaw") else ""

    def carried(name: str) -> bool:
        return bool(carry_from) and os.path.exists(os.path.join(carry_from, name))

    if carried(TOKENIZER_FILE):
        tokenizer_source = os.path.join(carry_from, TOKENIZER_FILE)
    else:
        tokenizer_source = tokenizer_path_for(config, assets_dir, instructions)
    shutil.copyfile(tokenizer_source, os.path.join(directory, TOKENIZER_FILE))

    stats_path = os.path.join(directory, NORM_STATS_FILE)
    openpi_stats = os.path.join(
        start_path, "assets", str(config.policy.openpi_asset_id), NORM_STATS_FILE
    )
    if carried(NORM_STATS_FILE):
        stats_origin = os.path.join(carry_from, NORM_STATS_FILE)
        stats = norm_stats_lib.load_norm_stats(stats_origin)
    elif start_kind == "openpi" and os.path.exists(openpi_stats):
        from vlaw.convert.openpi import load_norm_stats  # torch-free, but only for openpi runs

        stats, stats_origin = load_norm_stats(openpi_stats), openpi_stats
    else:
        stats = norm_stats_lib.compute_norm_stats(
            list(dataset_dirs), skip_corrupt=config.data.skip_corrupt
        )
        stats_origin = "computed from the training data"
    norm_stats_lib.save_norm_stats(stats_path, {k: stats[k] for k in ("state", "actions")})

    tokenizer = PaligemmaTokenizer(
        os.path.join(directory, TOKENIZER_FILE), config.policy.max_token_len
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
    write_json(spec_path, spec)  # last: its presence means "prepared"
    return spec


def model_config_from_spec(spec: dict) -> pi05.Pi05Config:
    return pi05.pi05_config(spec["variant"], **spec["overrides"])


def preprocessor_for(directory: str, model_config: pi05.Pi05Config) -> "Preprocessor":
    """The host preprocessing a prepared (or trained) directory's files describe."""
    return Preprocessor(
        PaligemmaTokenizer(os.path.join(directory, TOKENIZER_FILE), model_config.max_token_len),
        norm_stats_lib.load_norm_stats(os.path.join(directory, NORM_STATS_FILE)),
        model_config.action_dim,
        model_config.state_input,
    )


def initial_params(spec: dict, model_config: pi05.Pi05Config) -> Callable[[Any], Any] | None:
    """The trainer's `initial_params` for the spec's starting point: a vlaw checkpoint's
    `params` restored straight into the target shardings, openpi's converted, or None (a
    fresh initialisation)."""
    kind, path = spec["init"]["kind"], spec["init"]["path"]
    if kind in ("previous_iteration", "vlaw"):
        return checkpoints.params_loader(path)
    if kind == "openpi":

        def from_openpi(target):
            del target  # the trainer checks the shapes and places the host arrays
            from vlaw.convert.openpi import load_openpi_checkpoint

            return load_openpi_checkpoint(path, model_config)[0]["params"]

        return from_openpi
    return None


def save_policy(
    directory: str,
    params: Any,
    *,
    spec: dict,
    step: int,
    ckpt_config: ml_collections.ConfigDict,
) -> None:
    """Writes `params` as checkpoint `step` of a prepared `directory` (its tokenizer, norm stats
    and spec already there), loadable by `TrainedPolicy`. For tools and tests that make a
    policy without the trainer; the trainer's own checkpoints hold the whole TrainState."""
    if not os.path.exists(os.path.join(directory, SPEC_FILE)):
        write_json(os.path.join(directory, SPEC_FILE), spec)
    checkpoints.save_params(directory, step, params, ckpt_config)


# --------------------------------------------------------------------------------------------
# Inference.


@functools.partial(jax.jit, static_argnames=("model",))
def _sample(
    model: pi05.Pi05, params, images, tokens, token_mask, state, rng, noise=None
) -> jax.Array:
    """uint8 images (B, 3, H, W, 3), tokens/mask (B, L) -> normalised actions (B, H, A), from
    `noise` (B, H, A) when given, else from noise drawn with `rng`.

    Module-level, keyed on the (hashable) model: every policy of one configuration shares the
    compiled sampler, e.g. successive iterations' checkpoints in one process.
    """
    obs = device_observation(model.config, images, tokens, token_mask, state)
    return pi05.sample_actions(model, params, obs, rng, noise=noise)


@functools.partial(jax.jit, static_argnames=("shape",))
def _episode_noise(root: jax.Array, seeds: jax.Array, calls: jax.Array, shape) -> jax.Array:
    """One (H, A) standard normal draw per row, keyed by (episode seed, call index) alone."""

    def one(seed, call):
        return jax.random.normal(jax.random.fold_in(jax.random.fold_in(root, seed), call), shape)

    return jax.vmap(one)(seeds, calls)


class TrainedPolicy:
    """A trained checkpoint as `vlaw.rollout.episodes.Policy`: observations -> (B, H, 8) actions.

    Joint velocities come out in [-1, 1] and the gripper position in [0, 1]: the unnormalised
    samples are clipped to the station's action space (a sample outside it is a command the
    robot could not execute anyway). Each call draws fresh noise (a per-call counter folded
    into the seed), so repeated calls are reproducible across runs; a caller whose noise must
    not depend on call order (imagine's resumable batches) passes its own `rng`. The weights
    are the checkpoint's master `params` (an EMA, when `policy.train.ema_decay` > 0, is not
    read yet).
    """

    def __init__(self, checkpoint_dir: str, *, seed: int = 0):
        spec = read_json(os.path.join(checkpoint_dir, SPEC_FILE))
        step = checkpoints.latest_step(checkpoint_dir)
        if step is None:
            raise FileNotFoundError(f"no policy checkpoint step under {checkpoint_dir}")
        config = model_config_from_spec(spec)
        abstract = nn.unbox(pi05.abstract_params(config))["params"]
        self._setup(
            config,
            checkpoints.restore_on_one_device(checkpoint_dir, abstract),
            preprocessor_for(checkpoint_dir, config),
            checkpoint=os.path.join(os.path.abspath(checkpoint_dir), str(step)),
            camera_slots=tuple(spec["camera_slots"]),
            open_loop_steps=int(spec.get("open_loop_steps", 8)),
            seed=seed,
        )

    @classmethod
    def from_params(
        cls,
        config: pi05.Pi05Config,
        params: Any,
        preprocessor: "Preprocessor",
        *,
        checkpoint: str = "",
        camera_slots: Sequence[str] = CAMERA_SLOTS,
        open_loop_steps: int = 8,
        seed: int = 0,
    ) -> "TrainedPolicy":
        """A policy from parameters in hand (`Pi05(config)`'s unboxed "params" tree) and its
        preprocessing, no directory: for benchmarks of the acting path at sizes whose
        checkpoints would cost minutes to write and read back."""
        policy = cls.__new__(cls)
        policy._setup(
            config,
            params,
            preprocessor,
            checkpoint=checkpoint,
            camera_slots=tuple(camera_slots),
            open_loop_steps=open_loop_steps,
            seed=seed,
        )
        return policy

    def _setup(
        self, config, params, preprocessor, *, checkpoint, camera_slots, open_loop_steps, seed
    ) -> None:
        self.checkpoint = checkpoint
        self.config = config
        self.model = pi05.Pi05(config)
        self.camera_slots = camera_slots
        self.open_loop_steps = open_loop_steps
        self.preprocessor = preprocessor
        self.params = {"params": params}
        self._rng = jax.random.PRNGKey(seed)
        self._calls = 0

    def __call__(
        self,
        observations: Sequence[Any],
        *,
        rng: jax.Array | None = None,
        episode_calls: Sequence[tuple[int, int]] | None = None,
        noise: np.ndarray | jax.Array | None = None,
    ) -> np.ndarray:
        """(B, H, 8) actions for B observations.

        Noise, in order of precedence: `noise` itself, (B, action_horizon, action_dim) in the
        model's normalised, padded action space (the flow's x at t = 1: a noise-space policy
        such as DSRL's steers the frozen policy through it; the sampler is deterministic given
        it); `episode_calls`, one (episode seed, call index) per row,
        keys each row's noise by its episode and call alone, so an episode's actions do not
        depend on which episodes share its batch or ran before it (a resumed `collect` redoes
        an episode exactly); else `rng`, one key for the batch; else this policy's next own key
        (advancing the call counter, which the others leave alone)."""
        images = np.stack(
            [np.stack([obs.images[name] for name in self.camera_slots]) for obs in observations]
        )
        state = np.stack(
            [np.concatenate([obs.joint_position, obs.gripper_position]) for obs in observations]
        )
        tokens, token_mask, state = self.preprocessor.inputs(
            [obs.instruction for obs in observations], state
        )
        if noise is not None:
            expected = (len(observations), self.config.action_horizon, self.config.action_dim)
            if tuple(np.shape(noise)) != expected:
                raise ValueError(f"noise of shape {np.shape(noise)}; expected {expected}")
            noise, rng = jnp.asarray(noise, jnp.float32), self._rng
        elif episode_calls is not None:
            seeds, calls = np.asarray(episode_calls, np.int64).reshape(-1, 2).T
            shape = (self.config.action_horizon, self.config.action_dim)
            noise = _episode_noise(self._rng, seeds % 2**31, calls, shape)
            rng = self._rng  # unused: the noise is given
        elif rng is None:
            rng = jax.random.fold_in(self._rng, self._calls)
            self._calls += 1
        normalized = _sample(self.model, self.params, images, tokens, token_mask, state, rng, noise)
        normalized = np.asarray(normalized)
        actions = transforms.unnormalize(
            normalized[..., : droid.POLICY_ACTION_DIM],
            self.preprocessor.stats["actions"],
            use_quantiles=True,
        )
        actions[..., :7] = np.clip(actions[..., :7], -1.0, 1.0)
        actions[..., 7:] = np.clip(actions[..., 7:], 0.0, 1.0)
        return actions.astype(np.float32)


def load_policy(checkpoint_dir: str, *, seed: int = 0) -> TrainedPolicy:
    """The policy trained into `checkpoint_dir` (its newest checkpoint), ready for
    `vlaw.rollout.episodes.policy_episodes`; a FileNotFoundError says what is missing."""
    if not os.path.exists(os.path.join(checkpoint_dir, SPEC_FILE)):
        raise FileNotFoundError(
            f"{checkpoint_dir} holds no {SPEC_FILE}: not a vlaw policy checkpoint directory "
            "(run the train_policy phase, or point at a directory it wrote)"
        )
    return TrainedPolicy(checkpoint_dir, seed=seed)
