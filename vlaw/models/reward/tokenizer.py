"""The reward query: chat prompt, video placeholder with timestamps, tokenizer, model inputs.

One code path serves the real Qwen3-VL tokenizer (`load_tokenizer(path)`: transformers from a
local directory holding `tokenizer.json` and the chat template) and the small tokenizer built
on the fly for tests and the `sim` preset (`build_small_tokenizer()`: a byte-level BPE trained
with the `tokenizers` library, with Qwen's 14 special tokens and a ChatML chat template written
here). Both go through `apply_chat_template` and the same placeholder expansion.

Layout (reward_dsrl_metrics.md §1.6-1.8, checked against transformers' Qwen3-VL processor):

    <|im_start|>user\\n{video}{question}<|im_end|>\\n<|im_start|>assistant\\n

where the chat template renders the video as `<|vision_start|><|video_pad|><|vision_end|>` and
the processor replaces that triple with, for each temporal patch i (two frames),
`<{t_i:.1f} seconds><|vision_start|>` + `<|video_pad|>` x (tokens per frame) + `<|vision_end|>`,
t_i the mean time of its two frames. We follow transformers 4.57.1, the release Qwen3-VL shipped
with (5.x replaces only the pad token and keeps an extra outer start/end pair). The answer is
the next token, read at the last prompt position.

The question is ours (the paper does not print its wording): `Did the robot successfully
{instruction}? Answer yes or no.`; the answer tokens are "yes" / "no" without a leading space
(Qwen ids 9693 / 2152), as the first assistant token follows a newline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vlaw.models.reward.vision import normalize_frames, resized_frame_size

# Qwen2/Qwen3 special tokens in id order (151643 ... 151656 in the real vocabulary).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
VIDEO_TEMPLATE = "<|vision_start|><|video_pad|><|vision_end|>"

# ChatML with Qwen3-VL's content items (no default system turn, unlike Qwen2-VL).
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

_TASKS = (
    "scoop the beans into the bowl",
    "stack the red block on the blue block",
    "open the book",
    "erase the marker lines with the tissue",
    "draw a closed circle with the marker",
    "pick up the cup and put it in the sink",
)


def _training_corpus() -> list[str]:
    """Text the small BPE is trained on: the questions, answers and timestamp strings it will
    see, so that "yes", "no" and the task words become single tokens."""
    lines = [reward_question(task) for task in _TASKS]
    lines += [f"<{t / 10:.1f} seconds>" for t in range(0, 200)]
    lines += ["yes", "no", "Yes", "No", "user", "assistant", "system"] * 50
    return lines * 4


def build_small_tokenizer(vocab_size: int = 512):
    """A small Qwen-style tokenizer (transformers `PreTrainedTokenizerFast`), built in ~0.1 s.

    Its special tokens take ids 0-13 in Qwen's order, which `Qwen3VLConfig.tiny/sim` assume.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_training_corpus(), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def load_tokenizer(path: str | Path):
    """The real Qwen3-VL tokenizer (and its chat template) from a local directory."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def reward_question(instruction: str) -> str:
    """The yes/no question about one instruction ("Scoop the beans." -> "Did the robot
    successfully scoop the beans? Answer yes or no.")."""
    task = instruction.strip().rstrip(".!?").strip()
    task = task[:1].lower() + task[1:]
    return f"Did the robot successfully {task}? Answer yes or no."


def answer_token_ids(tokenizer) -> tuple[int, int]:
    """(yes id, no id) of the first answer token; each must be a single token."""
    ids = []
    for word in ("yes", "no"):
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) != 1:
            raise ValueError(f"{word!r} is not a single token for this tokenizer: {encoded}")
        ids.append(encoded[0])
    return ids[0], ids[1]


def sample_frame_indices(num_steps: int, num_frames: int = 16) -> np.ndarray:
    """Uniformly spaced frame indices over a trajectory (the processor's own sampler)."""
    return np.linspace(0, num_steps - 1, num_frames).round().astype(np.int64)


def frame_timestamps(
    frame_indices: Sequence[int], fps: float, temporal_patch_size: int = 2
) -> list[float]:
    """Seconds of each temporal patch: the mean time of its first and last frame (the last
    index is repeated to fill the final patch), as the processor computes them."""
    indices = list(frame_indices)
    indices += [indices[-1]] * (-len(indices) % temporal_patch_size)
    seconds = [i / fps for i in indices]
    return [
        (seconds[i] + seconds[i + temporal_patch_size - 1]) / 2
        for i in range(0, len(seconds), temporal_patch_size)
    ]


def video_placeholder(timestamps: Sequence[float], tokens_per_frame: int) -> str:
    """The expanded video: one `<t seconds>` + start + pads + end group per temporal patch."""
    group = "<|vision_start|>" + "<|video_pad|>" * tokens_per_frame + "<|vision_end|>"
    return "".join(f"<{t:.1f} seconds>" + group for t in timestamps)


def reward_prompt_ids(
    tokenizer, instruction: str, timestamps: Sequence[float], tokens_per_frame: int
) -> list[int]:
    """Token ids of the whole reward query, ending with `<|im_start|>assistant\\n`."""
    messages = [
        {
            "role": "user",
            "content": [{"type": "video"}, {"type": "text", "text": reward_question(instruction)}],
        }
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if text.count(VIDEO_TEMPLATE) != 1:
        raise ValueError(f"chat template did not render one {VIDEO_TEMPLATE!r}: {text!r}")
    text = text.replace(VIDEO_TEMPLATE, video_placeholder(timestamps, tokens_per_frame))
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_inputs(
    tokenizer,
    trajectory_lengths: Sequence[int],
    instructions: Sequence[str],
    *,
    frame_hw: tuple[int, int],
    config,
    fps: float = 15.0,
    num_frames: int = 16,
    length: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The text side of a batch of reward queries: (input_ids (B, L) int32, attention_mask
    (B, L) int32, each query's sampled frame indices). Prompts are right-padded to `length`
    (default: the longest), so a fixed `length` keeps jitted shapes constant across batches.

    `trajectory_lengths[i]` frames of size `frame_hw` each; `num_frames` of them are sampled
    uniformly (paper: 16), and the prompt carries their timestamps and one placeholder per
    visual token of the frame size the model resizes them to (`resized_frame_size`).
    """
    if len(trajectory_lengths) != len(instructions):
        raise ValueError("one instruction per trajectory")
    size = resized_frame_size(*frame_hw, config.frame_factor)
    per_side = config.vision.patch_size * config.vision.spatial_merge_size
    tokens_per_frame = (size[0] // per_side) * (size[1] // per_side)
    indices, prompts = [], []
    for num_steps, instruction in zip(trajectory_lengths, instructions, strict=True):
        index = sample_frame_indices(num_steps, num_frames)
        stamps = frame_timestamps(index, fps, config.vision.temporal_patch_size)
        prompts.append(reward_prompt_ids(tokenizer, instruction, stamps, tokens_per_frame))
        indices.append(index)
    length = length or max(map(len, prompts))
    if max(map(len, prompts)) > length:
        raise ValueError(f"a prompt of {max(map(len, prompts))} tokens exceeds length={length}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = np.full((len(prompts), length), pad, np.int32)
    attention_mask = np.zeros((len(prompts), length), np.int32)
    for i, ids in enumerate(prompts):
        input_ids[i, : len(ids)] = ids
        attention_mask[i, : len(ids)] = 1
    return input_ids, attention_mask, indices


def model_video(frames, config):
    """uint8 sampled frames (B, T, H, W, 3) -> the model's video (B, T, h, w, 3) in [-1, 1],
    resized to multiples of `config.frame_factor`. Runs on the device inside a jitted
    function, so only uint8 frames cross from the host."""
    size = resized_frame_size(frames.shape[-3], frames.shape[-2], config.frame_factor)
    return normalize_frames(frames, size)


def prepare_inputs(
    tokenizer,
    trajectories: Sequence[np.ndarray],
    instructions: Sequence[str],
    *,
    config,
    fps: float = 15.0,
    num_frames: int = 16,
    length: int | None = None,
) -> dict[str, np.ndarray]:
    """Model inputs for a batch of reward queries, the video preprocessed here (tests, tools;
    the training and scoring loops ship uint8 frames and call `model_video` under jit).

    trajectories: one uint8 video (T_i, H, W, 3) per query (one camera), all of one frame size.
    Returns input_ids (B, L) int32, attention_mask (B, L) int32, video (B, num_frames, h, w, 3)
    float32 in [-1, 1].
    """
    height, width = trajectories[0].shape[1:3]
    if any(frames.shape[1:3] != (height, width) for frames in trajectories):
        raise ValueError("all trajectories of a batch must share one frame size")
    input_ids, attention_mask, indices = prompt_inputs(
        tokenizer,
        [len(frames) for frames in trajectories],
        instructions,
        frame_hw=(height, width),
        config=config,
        fps=fps,
        num_frames=num_frames,
        length=length,
    )
    frames = np.stack([frames[index] for frames, index in zip(trajectories, indices, strict=True)])
    video = np.asarray(model_video(frames, config))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "video": video}
