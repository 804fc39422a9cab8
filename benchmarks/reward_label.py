"""Reward labelling throughput: 16-frame episodes scored per second, vlaw (JAX) vs transformers.

  python benchmarks/reward_label.py                      # paper size (Qwen3-VL-4B), on a GPU
  python benchmarks/reward_label.py --preset=tiny        # CPU smoke run of both sides

Both sides score the same B episodes with the same weights (transformers' random init, moved
into our parameters by `vlaw.convert.qwen3_vl`): a 16-frame clip at DROID's 180x320 (resized to
192x320, 480 video tokens at paper size) plus the reward question, read out as P(first answer
token = "yes") from the position after the prompt.

- vlaw: `vlaw.agents.reward.answer_probabilities` (jitted; bf16 at paper size; the lm_head runs
  on the answer position only), inputs from `prepare_inputs` as in the label phase.
- transformers: `Qwen3VLForConditionalGeneration` (bf16 on GPU, SDPA attention) under
  `torch.inference_mode()`, `logits_to_keep=1` (also the answer position only), its patch rows
  being exactly the video processor's (checked in tests/models/reward/test_parity.py).

Timed: the model read-out on inputs already on the device, `--iters` batches after a warm-up
(compile) batch, each side synchronised; plus the vlaw path end to end (host tokenisation,
resizing and upload included). The table also prints the largest |P(yes) difference| between
the two sides, so the two are seen to compute the same thing.
"""

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from vlaw.agents.reward import answer_probabilities
from vlaw.models.reward.qwen3_vl import Qwen3VLConfig
from vlaw.models.reward.tokenizer import (
    answer_token_ids,
    build_small_tokenizer,
    load_tokenizer,
    prepare_inputs,
    sample_frame_indices,
)
from vlaw.models.reward.vision import patchify_video

INSTRUCTION = "scoop the beans into the bowl"


def hf_config(config: Qwen3VLConfig):
    """transformers' Qwen3VLConfig for our config (the inverse of `config_from_hf`)."""
    from transformers import Qwen3VLConfig as HFConfig

    v, t = config.vision, config.text
    return HFConfig(
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        vision_start_token_id=config.vision_start_token_id,
        vision_end_token_id=config.vision_end_token_id,
        tie_word_embeddings=t.tie_word_embeddings,
        text_config=dict(
            vocab_size=t.vocab_size,
            hidden_size=t.hidden_size,
            num_hidden_layers=t.num_layers,
            num_attention_heads=t.num_heads,
            num_key_value_heads=t.num_kv_heads,
            head_dim=t.head_dim,
            intermediate_size=t.intermediate_size,
            rms_norm_eps=t.rms_norm_eps,
            tie_word_embeddings=t.tie_word_embeddings,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": t.rope_theta,
                "mrope_section": list(t.mrope_section),
                "mrope_interleaved": True,
            },
        ),
        vision_config=dict(
            depth=v.depth,
            hidden_size=v.hidden_size,
            num_heads=v.num_heads,
            intermediate_size=v.intermediate_size,
            patch_size=v.patch_size,
            temporal_patch_size=v.temporal_patch_size,
            spatial_merge_size=v.spatial_merge_size,
            out_hidden_size=v.out_hidden_size,
            num_position_embeddings=v.num_position_embeddings,
            deepstack_visual_indexes=list(v.deepstack_layers),
        ),
    )


def episodes(batch: int, frames: int, height: int, width: int, seed: int = 0) -> list:
    """B smooth random 16-frame clips (uint8), a moving block on a gradient, like camera frames."""
    rng = np.random.default_rng(seed)
    clips = []
    for _ in range(batch):
        base = rng.uniform(40, 200, 3)
        rows = np.linspace(0, 1, height)[:, None, None] * rng.uniform(-40, 40, 3)
        clip = np.broadcast_to(base + rows, (frames, height, width, 3)).copy()
        for t in range(frames):
            top, left = (7 * t) % (height - 16), (11 * t) % (width - 16)
            clip[t, top : top + 16, left : left + 16] = 255 - base
        clips.append(np.clip(clip, 0, 255).astype(np.uint8))
    return clips


def timed(fn, sync, iters: int) -> float:
    """Seconds per call of `fn` after one warm-up call (compilation, autotuning)."""
    sync(fn())
    start = time.perf_counter()
    for _ in range(iters):
        out = fn()
    sync(out)
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper", choices=("tiny", "sim", "paper"))
    parser.add_argument("--batch", type=int, default=None, help="episodes per batch")
    parser.add_argument("--iters", type=int, default=None, help="timed batches per side")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--tokenizer_path", default="", help="Qwen3-VL tokenizer dir (paper)")
    args = parser.parse_args()
    result = measure(args)
    print(
        f"\nreward labelling, preset={args.preset}, {args.frames} frames {args.height}x"
        f"{args.width} -> {result['video_height']}x{result['video_width']}, batch "
        f"{result['batch']}, prompt {result['prompt_tokens']} tokens, {result['iters']} timed "
        f"batches, device {result['device']}"
    )
    print("| side | episodes/s | ms/batch | vs transformers |")
    print("|---|---:|---:|---:|")
    for name, key in (
        ("transformers Qwen3VLForConditionalGeneration", "theirs"),
        ("vlaw answer_probabilities (inputs on device)", "ours"),
        ("vlaw end to end (host prep + upload + read-out)", "ours_end_to_end"),
    ):
        seconds = result[f"{key}_s"]
        ratio = result["theirs_s"] / seconds
        print(
            f"| {name} | {result['batch'] / seconds:,.1f} | {1e3 * seconds:,.1f} | {ratio:.2f}x |"
        )
    print(f"max |P(yes) vlaw - transformers| = {result['max_abs_diff']:.2e}")


def measure(args) -> dict:
    """Both sides on the same episodes and weights; seconds per batch of each, as a dict (the
    keys gpu_suite.py reads). `args`: this script's flags."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from vlaw.convert.qwen3_vl import params_from_state_dict

    paper = args.preset == "paper"
    batch = args.batch or (16 if paper else 4)
    iters = args.iters or (10 if paper else 5)
    gpu = torch.cuda.is_available() and jax.default_backend() == "gpu"
    if paper and not gpu:
        print("note: paper size without a GPU (both sides on CPU) will be very slow")
    device = torch.device("cuda" if gpu else "cpu")
    torch_dtype = torch.bfloat16 if paper else torch.float32
    config = Qwen3VLConfig.from_preset(args.preset)
    config = dataclasses.replace(
        config, dtype="bfloat16" if paper else "float32", remat_policy=None
    )
    if args.tokenizer_path:
        tokenizer = load_tokenizer(args.tokenizer_path)
    else:
        # The small tokenizer's ids sit at 0-13; at paper size, move the specials to Qwen's ids
        # by offsetting every token, which keeps the same prompt layout and length class.
        tokenizer = build_small_tokenizer()
    yes, no = answer_token_ids(tokenizer)
    small = not args.tokenizer_path and paper

    clips = episodes(batch, args.frames, args.height, args.width)
    inputs = prepare_inputs(
        tokenizer, clips, [INSTRUCTION] * batch, config=config, num_frames=args.frames
    )
    ids = inputs["input_ids"]
    if small:
        ids = np.where(ids < 14, ids + 151_643, ids + 1_000)  # specials -> Qwen's 151643...
        yes, no = yes + 1_000, no + 1_000
    video = inputs["video"]
    # What answer_probabilities takes: the sampled uint8 frames (resized on the device).
    frames = np.stack([clip[sample_frame_indices(len(clip), args.frames)] for clip in clips])

    # transformers' model, random weights, and the same weights in our layout.
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)
    hf_cfg = hf_config(config)
    hf_cfg._attn_implementation = "sdpa"
    with torch.device(device):
        hf = Qwen3VLForConditionalGeneration(hf_cfg).eval()
    torch.set_default_dtype(previous)
    params = params_from_state_dict(
        hf.state_dict(), config, dtype=jnp.bfloat16 if paper else np.float32
    )
    params = jax.device_put(params)

    # vlaw: device inputs, then the jitted read-out.
    ids_d, frames_d = jnp.asarray(ids), jnp.asarray(frames)
    mask_d = jnp.asarray(inputs["attention_mask"])

    def ours():
        return answer_probabilities(
            params, ids_d, frames_d, mask_d, config=config, yes_token_id=yes, no_token_id=no
        )

    def ours_end_to_end():
        fresh = prepare_inputs(
            tokenizer, clips, [INSTRUCTION] * batch, config=config, num_frames=args.frames
        )
        fresh_ids = fresh["input_ids"]
        if small:
            fresh_ids = np.where(fresh_ids < 14, fresh_ids + 151_643, fresh_ids + 1_000)
        return answer_probabilities(
            params,
            fresh_ids,
            frames,
            fresh["attention_mask"],
            config=config,
            yes_token_id=yes,
            no_token_id=no,
        )

    # transformers: the processor's patch rows are ours (tests/models/reward/test_parity.py).
    patches = np.asarray(patchify_video(jnp.asarray(video), config.vision))
    grid = (  # (temporal patches, patch rows, patch columns) per video
        patches.shape[1],
        video.shape[2] // config.vision.patch_size,
        video.shape[3] // config.vision.patch_size,
    )
    ids_t = torch.from_numpy(np.asarray(ids, np.int64)).to(device)
    hf_inputs = dict(
        input_ids=ids_t,
        attention_mask=torch.from_numpy(np.asarray(inputs["attention_mask"])).to(device),
        pixel_values_videos=torch.from_numpy(patches.reshape(-1, patches.shape[-1]).copy())
        .to(device)
        .to(torch_dtype),
        video_grid_thw=torch.tensor([grid] * batch, device=device),
        mm_token_type_ids=(ids_t == config.video_token_id).long() * 2,
    )

    def theirs():
        with torch.inference_mode():
            logits = hf(**hf_inputs, logits_to_keep=1).logits[:, -1].float()
            probs = torch.softmax(logits, dim=-1)
            return probs[:, yes], probs[:, no]

    def sync_jax(out):
        jax.block_until_ready(out)

    def sync_torch(out):
        if gpu:
            torch.cuda.synchronize()

    p_ours = np.asarray(ours()[0])
    p_theirs = theirs()[0].cpu().numpy()
    t_ours = timed(ours, sync_jax, iters)
    t_e2e = timed(ours_end_to_end, sync_jax, iters)
    t_theirs = timed(theirs, sync_torch, iters)
    return dict(
        batch=batch,
        iters=iters,
        prompt_tokens=int(ids.shape[1]),
        video_height=int(video.shape[2]),
        video_width=int(video.shape[3]),
        device=jax.devices()[0].device_kind if gpu else "CPU",
        ours_s=t_ours,
        ours_end_to_end_s=t_e2e,
        theirs_s=t_theirs,
        max_abs_diff=float(np.max(np.abs(p_ours - p_theirs))),
    )


if __name__ == "__main__":
    main()
