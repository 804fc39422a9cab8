"""World-model train step: vlaw's JAX SVD UNet beside diffusers' in the same run.

    python benchmarks/world_model_step.py                 # GPU, paper size (SVD img2vid UNet)
    python benchmarks/world_model_step.py --preset=tiny   # CPU smoke run, both sides tiny

One step on both sides: the UNet over (B, F, 72, 40, 8) latents (three 24x40 views stacked,
4 noisy + 4 condition channels), one context token per frame, [fps, motion, noise] ids, MSE to
a random target, backward, global-norm clipping and AdamW, fp32 master weights. JAX: bf16
compute (`UNetConfig.dtype`), remat `nothing_saveable`, the state donated, through
`vlaw.train.trainer.train_step`. PyTorch: bf16 autocast and gradient checkpointing on GPU
(fp32, no checkpointing on CPU), `torch.optim.AdamW` - the setup of the peer figures in
shared/research/device_measurements.md (6.0 samples/s at batch 4, 8 frames, on one H100).

MFU = model FLOPs / step time / peak, where model FLOPs = 3 x the forward's analytic FLOPs
(`unet_forward_flops`, the count world_model_sample.py uses; no recompute; the same count for
both sides; XLA's cost analysis would count nothing for a cuDNN attention call) and peak is a
bf16 (CPU: fp32) matmul measured in this run. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _common_world_model import matmul_peak, unet_forward_flops

from vlaw.convert.ctrl_world import diffusers_unet
from vlaw.models.world_model.unet import UNetConfig, UNetSpatioTemporal
from vlaw.train import optim, trainer


def jax_inputs(cfg: UNetConfig, batch: int, frames: int, height: int, width: int):
    rng = np.random.default_rng(0)
    return {
        "sample": rng.standard_normal((batch, frames, height, width, cfg.in_channels), "float32"),
        "timesteps": rng.standard_normal((batch,), "float32"),
        "context": rng.standard_normal((batch, frames, 1, cfg.cross_attention_dim), "float32"),
        "ids": np.tile(np.asarray([[7.0, 127.0, 0.0]], np.float32), (batch, 1)),
        "target": rng.standard_normal((batch, frames, height, width, cfg.out_channels), "float32"),
    }


def jax_train_step(cfg: UNetConfig, batch, frames, height, width):
    """(init(rng) -> TrainState, the jitted train step with the state donated, the batch as
    numpy arrays, its loss_fn(params, batch, rng)): the UNet train step this script times.
    `memory_plan.py` lowers the same step on abstract shapes."""
    model = UNetSpatioTemporal(cfg)
    data = jax_inputs(cfg, batch, frames, height, width)

    def forward(params, b):
        out = model.apply({"params": params}, b["sample"], b["timesteps"], b["context"], b["ids"])
        return jnp.mean(jnp.square(out.astype(jnp.float32) - b["target"]))

    def loss_fn(params, b, rng):
        del rng
        loss = forward(params, b)
        return loss, {}

    train_cfg = _train_cfg()
    tx = optim.make_optimizer(train_cfg)

    def init(rng):
        variables = model.init(rng, data["sample"], data["timesteps"], data["context"], data["ids"])
        params = optim.cast_floating(nn.unbox(variables["params"]), "float32")
        return trainer.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            ema_params=None,
            opt_state=tx.init(params),
            rng=jax.random.PRNGKey(0),
            nonfinite_count=jnp.zeros((), jnp.int32),
        )

    step = jax.jit(
        functools.partial(
            trainer.train_step,
            loss_fn=loss_fn,
            tx=tx,
            schedule=optim.learning_rate_schedule(train_cfg),
            ema_decay=0.0,
            mask=None,
        ),
        donate_argnums=(0,),
    )
    return init, step, data, loss_fn


def bench_jax(cfg: UNetConfig, batch, frames, height, width, steps) -> tuple[float, float]:
    """(median step seconds, model FLOPs per step) of the JAX train step."""
    init, step, data, _ = jax_train_step(cfg, batch, frames, height, width)
    state = jax.jit(init)(jax.random.key(0))
    data = {k: jnp.asarray(v) for k, v in data.items()}
    model_flops = 3.0 * unet_forward_flops(cfg, batch, frames, height, width)
    state, metrics = step(state, data)  # compile + warm-up
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, data)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), model_flops


def benchmark_unet_config(preset: str, on_gpu: bool) -> UNetConfig:
    """The UNet as benchmarked: bf16 compute and remat `nothing_saveable` on a GPU (fp32 and no
    remat on a CPU, where bf16 convolutions compile for minutes)."""
    compute = "bfloat16" if on_gpu else "float32"
    remat = "nothing_saveable" if on_gpu else "none"
    return dataclasses.replace(UNetConfig.preset(preset), dtype=compute, remat_policy=remat)


def latent_size(preset: str) -> tuple[int, int]:
    """(H, W) of the latents: three views stacked along the height, 24x40 each at paper size,
    4x8 at tiny/sim (a smoke size)."""
    return (72, 40) if preset == "paper" else (12, 8)


def _train_cfg():
    import ml_collections

    t = ml_collections.ConfigDict()
    t.steps, t.learning_rate, t.warmup_steps = 1000, 1e-5, 10
    t.weight_decay, t.grad_clip_norm, t.param_dtype = 1e-10, 1.0, "float32"
    return t


def bench_torch(cfg: UNetConfig, batch, frames, height, width, steps, on_gpu) -> float | None:
    """Median step seconds of diffusers' UNet doing the same step (None: not installed)."""
    try:
        import diffusers  # noqa: F401  (built by `diffusers_unet`)
        import torch
    except ImportError:
        return None
    device = "cuda" if on_gpu and torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = diffusers_unet(cfg, frames).to(device)
    model.train()
    if device == "cuda":
        model.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=1e-10)
    data = jax_inputs(cfg, batch, frames, height, width)
    sample = torch.from_numpy(data["sample"]).permute(0, 1, 4, 2, 3).contiguous().to(device)
    target = torch.from_numpy(data["target"]).permute(0, 1, 4, 2, 3).contiguous().to(device)
    timesteps = torch.from_numpy(data["timesteps"]).to(device)
    context = torch.from_numpy(data["context"][:, 0]).to(device)  # (B, 1, D), repeated per frame
    ids = torch.from_numpy(data["ids"]).to(device)

    def one_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out = model(sample, timesteps, context, ids).sample
        loss = torch.mean(torch.square(out.float() - target))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    one_step()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        one_step()
        sync()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper", choices=("tiny", "sim", "paper"))
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    on_gpu = jax.default_backend() == "gpu"
    cfg = benchmark_unet_config(args.preset, on_gpu)
    compute, remat = cfg.dtype, cfg.remat_policy
    height, width = latent_size(args.preset)
    peak = matmul_peak(on_gpu)
    print(
        f"device: {jax.devices()[0].device_kind}; peak {'bf16' if on_gpu else 'fp32'} "
        f"matmul {peak / 1e12:.1f} TFLOP/s; UNet {args.preset}, {args.frames} frames of "
        f"{height}x{width} latents; compute {compute}, remat {remat}"
    )
    print(
        "| batch | jax step s | jax samples/s | jax MFU | torch step s | torch samples/s "
        "| torch MFU | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for batch in (int(b) for b in args.batches.split(",")):
        jax_s, flops = bench_jax(cfg, batch, args.frames, height, width, args.steps)
        torch_s = None
        if args.torch:
            torch_s = bench_torch(cfg, batch, args.frames, height, width, args.steps, on_gpu)
        row = [f"{batch}", f"{jax_s:.4f}", f"{batch / jax_s:.2f}", f"{flops / jax_s / peak:.1%}"]
        if torch_s is None:
            row += ["-", "-", "-", "-"]
        else:
            row += [
                f"{torch_s:.4f}",
                f"{batch / torch_s:.2f}",
                f"{flops / torch_s / peak:.1%}",
                f"{torch_s / jax_s:.2f}x",
            ]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
