"""The reward model's train step at the `sim` preset on a CPU: seconds per step by dtype and
remat, beside the preset's own setting (issue 13, item 6).

  python benchmarks/reward_step.py                 # sim preset, batch 16 (the train_reward phase)
  python benchmarks/reward_step.py --preset=tiny   # smoke test

The step is the `train_reward` phase's: `vlaw.agents.reward.make_loss_fn` (16 frames of one
64x64 camera and the padded prompt through the small Qwen3-VL, the one-token yes/no
cross-entropy) with its gradient and an AdamW update, on random clips and labels. Every variant
is compiled first; then the variants take one step each in turn for `rounds` rounds and the
median per variant is reported, so a load change on a shared machine hits every variant alike.
"""

import argparse
import dataclasses
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vlaw.agents import reward as reward_agent
from vlaw.config import experiment_config

# name: (compute dtype, remat policy, reward.max_instruction_tokens, reward.num_frames); None:
# the preset's value. The last two rows show where the time goes: the prompt's padding (the
# instruction room) and the video (frames).
VARIANTS = {
    "bf16, remat nothing_saveable": ("bfloat16", "nothing_saveable", None, None),
    "f32, remat nothing_saveable": ("float32", "nothing_saveable", None, None),
    "bf16, no remat": ("bfloat16", None, None, None),
    "f32, no remat": ("float32", None, None, None),
    "bf16, remat, instruction room 16 tokens": ("bfloat16", "nothing_saveable", 16, None),
    "bf16, remat, 8 frames": ("bfloat16", "nothing_saveable", None, 8),
}


def make_step(model_cfg, tokenizer):
    loss_fn = reward_agent.make_loss_fn(model_cfg, tokenizer)
    optimizer = optax.adamw(1e-4)

    def step(params, opt_state, batch):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, None)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step, donate_argnums=(0, 1)), optimizer


def random_batch(config, tokenizer, model_cfg) -> dict:
    """A train_reward batch of random clips and labels, its prompt padded as the phase pads."""
    r, d = config.reward, config.data
    batch_size = int(r.train.batch_size)
    rng = np.random.default_rng(0)
    shape = (batch_size, r.num_frames, d.image_height, d.image_width, 3)
    length = reward_agent.prompt_length(
        tokenizer, model_cfg, (d.image_height, d.image_width), config
    )
    inputs = reward_agent.model_inputs(
        tokenizer,
        list(rng.integers(0, 256, shape, np.uint8)),
        ["scoop the beans into the bowl"] * batch_size,
        model_cfg=model_cfg,
        length=length,
    )
    batch = {k: jnp.asarray(v) for k, v in inputs.items()}
    batch["label"] = jnp.asarray(rng.integers(0, 2, batch_size).astype(bool))
    return batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="sim", choices=["tiny", "sim"])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    config = experiment_config(("scoop",), args.preset)
    r, d = config.reward, config.data
    batch_size = int(r.train.batch_size)
    tokenizer = reward_agent.reward_tokenizer(config)
    base_cfg = reward_agent.model_config(config)
    print(
        f"preset {args.preset}: batch {batch_size}, {r.num_frames} frames of "
        f"{d.image_height}x{d.image_width}, instruction room {r.max_instruction_tokens} tokens; "
        f"{jax.devices()[0]}"
    )

    runs = {}
    for name, (dtype, remat, instruction_tokens, num_frames) in VARIANTS.items():
        model_cfg = dataclasses.replace(base_cfg, dtype=dtype, remat_policy=remat)
        variant = config.copy_and_resolve_references()
        if instruction_tokens is not None:
            variant.reward.max_instruction_tokens = instruction_tokens
        if num_frames is not None:
            variant.reward.num_frames = num_frames
        batch = random_batch(variant, tokenizer, model_cfg)
        params = nn.unbox(reward_agent.init_fn_for(model_cfg)(jax.random.key(0)))
        step, optimizer = make_step(model_cfg, tokenizer)
        opt_state = optimizer.init(params)
        start = time.perf_counter()
        params, opt_state, loss = step(params, opt_state, batch)
        jax.block_until_ready(loss)
        compile_s = time.perf_counter() - start
        runs[name] = dict(
            step=step,
            params=params,
            opt_state=opt_state,
            batch=batch,
            times=[],
            compile_s=compile_s,
            tokens=int(batch["input_ids"].shape[1]),
        )
    for _ in range(args.rounds):
        for run in runs.values():
            start = time.perf_counter()
            run["params"], run["opt_state"], loss = run["step"](
                run["params"], run["opt_state"], run["batch"]
            )
            jax.block_until_ready(loss)
            run["times"].append(time.perf_counter() - start)
    # The preset's own setting (tiny trains in f32: its steps are too few for bf16).
    remat = r.train.remat_policy if r.train.remat_policy not in ("", "none") else None
    preset_name = next(
        n for n, v in VARIANTS.items() if v == (r.train.compute_dtype, remat, None, None)
    )
    preset_s = statistics.median(runs[preset_name]["times"])
    print(
        "\n| variant | prompt tokens | first step (compile) s | median s/step | steps/s | vs preset"
        " |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, run in runs.items():
        median = statistics.median(run["times"])
        print(
            f"| {name}{' (preset)' if name == preset_name else ''} | {run['tokens']} "
            f"| {run['compile_s']:.1f} "
            f"| {median:.3f} | {1 / median:.2f} | {preset_s / median:.2f}x |"
        )


if __name__ == "__main__":
    main()
