"""World-model sampling: seconds per chunk per rollout, vlaw's JAX sampler beside diffusers.

    python benchmarks/world_model_sample.py                 # GPU, paper size, 1/4/16/64 rollouts
    python benchmarks/world_model_sample.py --preset=tiny   # CPU smoke run (reference skipped)

One chunk at Ctrl-World's settings (shared/research/ctrl_world.md §1.6, §4.3): 50 Euler steps
over Karras sigmas, classifier-free guidance with the per-frame scale linspace(1, 2) (the UNet
sees 2 x rollouts: zero context, then the real one), 6 memory frames + the 5-frame chunk = 11
frames of 72x40 latents (three 24x40 views stacked), bf16 weights and compute.

- vlaw: `vlaw.models.world_model.ctrl_world.predict`, the rollout's call (action encoder, then
  the whole sampler as one XLA program, a `lax.scan` over the steps), compiled ahead of time so
  that compilation and the program's memory are reported apart from the timing.
- Reference: diffusers' `UNetSpatioTemporalConditionModel` with the same config and bf16
  weights (Ctrl-World casts its whole model to bf16) under `torch.inference_mode()`, driven by a
  Python loop doing the same forwards, CFG combination and float32 Euler update as Ctrl-World's
  pipeline. Its stock UNet repeats one context token over the frames where Ctrl-World gives each
  frame its own: the same FLOPs. Needs CUDA; skipped with the reason otherwise
  (`--torch_on_cpu` runs it in fp32 on the CPU, to smoke test that code path).

Timed: whole chunks, the median of `--iters` after one warm-up chunk; per rollout = chunk
seconds / rollouts. FLOPs per chunk = (2 with guidance) x rollouts x steps x one UNet forward
as `unet_forward_flops` counts it (convolutions, dense layers and attention products, PyTorch
FlopCounterMode's convention): 954.3 TFLOP per rollout at paper size, the issue's 955 (19.1
TFLOP per forward measured with FlopCounterMode, x 50). MFU is against a bf16 (CPU: fp32)
matmul measured in this run. A failure at one batch size (out of memory, the reference's
launch-limit crash at 16 rollouts) is caught and shown in its row.

Both sides share one GPU: the reference runs all its batch sizes first and empties its cache
before JAX first touches the GPU (and preallocates its share), so neither side runs short of
memory because of the other. At paper size a large batch takes minutes per chunk: split long
runs with `--batches` and `--torch_batches`.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _common_world_model import matmul_peak, unet_forward_flops

from vlaw.convert.ctrl_world import diffusers_unet
from vlaw.models.world_model import ctrl_world as cw
from vlaw.train import optim

DEFAULT_BATCHES = {"paper": "1,4,16,64", "sim": "1,4,16", "tiny": "1,2"}


@dataclasses.dataclass
class Timing:
    """One side at one batch size: seconds per chunk, or why it failed."""

    chunk_s: float | None = None
    failure: str = ""
    compile_s: float | None = None
    memory_gib: float | None = None

    def __str__(self) -> str:
        if self.chunk_s is None:
            return f"failed: {self.failure}"
        extra = f", compiled in {self.compile_s:.1f} s" if self.compile_s is not None else ""
        return f"{self.chunk_s:.4g} s per chunk{extra}"


def timed(run, sync, iters: int) -> float:
    """Median seconds of `run` over `iters` calls after a warm-up call, each call synchronised."""
    sync(run())
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        sync(run())
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def describe_failure(error: Exception) -> str:
    """A short table cell for an exception; the whole message goes to stderr."""
    print(f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
    text = str(error)
    if "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower():
        return "out of memory"
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(error).__name__}: {first_line[:80]}"


def chunk_inputs(cfg: cw.CtrlWorldConfig, batch: int) -> dict[str, np.ndarray]:
    """Random inputs of one chunk in our layout (channels last), the same for both sides."""
    rng = np.random.default_rng(0)
    height, width = cfg.num_views * cfg.view_latent_shape[0], cfg.view_latent_shape[1]
    channels = cfg.vae.latent_channels
    latents = (cfg.num_history, height, width, channels)
    return {
        "history": rng.standard_normal((batch, *latents), "float32"),
        "current": rng.standard_normal((batch, height, width, channels), "float32"),
        "poses": rng.uniform(-1, 1, (batch, cfg.num_frames, cfg.action_dim)).astype("float32"),
        "text_embeds": rng.standard_normal((batch, cfg.text_dim), "float32"),
    }


# --------------------------------------------------------------------------------------------
# vlaw: `predict`.


def bench_jax(model: cw.CtrlWorld, params, batch: int, iters: int) -> Timing:
    """`cw.predict` on one batch of rollouts, compiled ahead of time."""
    timing = Timing()
    try:
        inputs = {k: jnp.asarray(v) for k, v in chunk_inputs(model.config, batch).items()}
        args = (
            params,
            inputs["history"],
            inputs["current"],
            inputs["poses"],
            inputs["text_embeds"],
            jax.random.PRNGKey(0),
        )
        start = time.perf_counter()
        compiled = cw.predict.lower(model, *args).compile()
        timing.compile_s = time.perf_counter() - start
        memory = compiled.memory_analysis()  # None on backends that do not report it
        if memory is not None:
            total = (
                memory.argument_size_in_bytes
                + memory.output_size_in_bytes
                + memory.temp_size_in_bytes
                - memory.alias_size_in_bytes
            )
            timing.memory_gib = total / 2**30
        timing.chunk_s = timed(lambda: compiled(*args), jax.block_until_ready, iters)
    except Exception as error:  # out of memory among others: reported in the row
        timing.failure = describe_failure(error)
    return timing


# --------------------------------------------------------------------------------------------
# Reference: diffusers' UNet in a PyTorch Euler loop.


def reference_device(args) -> tuple[str | None, str]:
    """(torch device, "") for the reference, or (None, why it is skipped)."""
    if not args.torch:
        return None, "--no-torch"
    try:
        import diffusers  # noqa: F401  (only to skip cleanly where it is missing)
        import torch
    except ImportError as error:
        return None, f"not installed ({error.name})"
    if torch.cuda.is_available():
        return "cuda", ""
    if args.torch_on_cpu:
        return "cpu", ""
    return None, "no CUDA device"


def torch_sampler(cfg: cw.CtrlWorldConfig, device: str):
    """(bench, release): `bench(batch, iters) -> Timing` runs diffusers' UNet through one chunk's
    Euler loop, the same forwards and update as `cw.sample_future` (bf16 on CUDA, fp32 on the
    CPU); `release()` frees the model's GPU memory."""
    import diffusers
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    unet = diffusers_unet(cfg.unet, cfg.num_frames).to(device, dtype).eval()
    # The schedule from diffusers' scheduler with SVD's config (ctrl_world.md §4.3), as Ctrl-World
    # gets it: the same Karras sigmas as `cw.karras_sigmas` (and no JAX call before JAX's turn).
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="v_prediction",
        use_karras_sigmas=True,
        sigma_min=cfg.sigma_min,
        sigma_max=cfg.sigma_max,
        timestep_spacing="leading",
        timestep_type="continuous",
        steps_offset=1,
    )
    scheduler.set_timesteps(cfg.num_steps)
    sigmas = scheduler.sigmas.double().tolist()  # num_steps + 1, the last 0
    c_noises = scheduler.timesteps.float().tolist()  # ln(sigma) / 4
    init_noise_sigma = float(scheduler.init_noise_sigma)
    guided = cfg.max_guidance > 1.0
    guidance = torch.linspace(cfg.min_guidance, cfg.max_guidance, cfg.num_future, device=device)
    guidance = guidance.reshape(1, cfg.num_future, 1, 1, 1)

    def to_torch(array: np.ndarray, frames_axis: bool) -> torch.Tensor:
        """Channels last -> PyTorch's (..., C, H, W)."""
        tensor = torch.from_numpy(array)
        tensor = tensor.permute(0, 1, 4, 2, 3) if frames_axis else tensor.permute(0, 3, 1, 2)
        return tensor.contiguous().to(device)

    @torch.inference_mode()
    def chunk(history, condition, context, time_ids, batch):
        x = torch.randn(batch, cfg.num_future, *history.shape[2:], device=device)
        x = x * init_noise_sigma
        rows = history.shape[0]
        for step, c_noise in enumerate(c_noises):
            sigma, sigma_next = sigmas[step], sigmas[step + 1]
            # EDM preconditioning with sigma_data 1, v-prediction (ctrl_world.md §4.1).
            c_skip, c_out = 1.0 / (sigma**2 + 1.0), -sigma / (sigma**2 + 1.0) ** 0.5
            future = (x / (sigma**2 + 1.0) ** 0.5).to(dtype)
            if guided:
                future = torch.cat([future, future])
            sample = torch.cat([torch.cat([history, future], dim=1), condition], dim=2)
            timesteps = torch.full((rows,), c_noise, device=device)
            out = unet(sample, timesteps, context, time_ids).sample
            out = out[:, cfg.num_history :].float()
            if guided:
                uncond, cond = out[:batch], out[batch:]
                out = uncond + guidance * (cond - uncond)
            x0 = c_out * out + c_skip * x  # float32, as EulerDiscreteScheduler.step (s_churn 0)
            x = x + (x - x0) / sigma * (sigma_next - sigma)
        return x

    def sync(_):
        if device == "cuda":
            torch.cuda.synchronize()

    def bench(batch: int, iters: int) -> Timing:
        timing = Timing()
        try:
            inputs = chunk_inputs(cfg, batch)
            history = to_torch(inputs["history"], frames_axis=True).to(dtype)
            condition = to_torch(inputs["current"], frames_axis=False).to(dtype)
            condition = condition / cfg.vae.scaling_factor  # unscaled, as Ctrl-World feeds it
            condition = condition[:, None].expand(-1, cfg.num_frames, -1, -1, -1)
            context = torch.randn(batch, 1, cfg.hidden_dim, device=device, dtype=dtype)
            if guided:
                history = torch.cat([history, history])
                condition = torch.cat([condition, condition])
                context = torch.cat([torch.zeros_like(context), context])
            ids = [cfg.fps, cfg.motion_bucket_id, cfg.sample_noise_aug]
            time_ids = torch.tensor([ids] * history.shape[0], device=device, dtype=dtype)
            timing.chunk_s = timed(
                lambda: chunk(history, condition, context, time_ids, batch), sync, iters
            )
        except Exception as error:  # the x16 launch failure, out of memory: reported in the row
            timing.failure = describe_failure(error)
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
        return timing

    def release():
        """Hand the reference's GPU memory back before JAX reserves its share."""
        nonlocal unet
        unet = None
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    return bench, release


# --------------------------------------------------------------------------------------------


def seconds_cells(timing: Timing | None, rollouts: int, flops: float, peak: float) -> list[str]:
    """[s per chunk, s per chunk per rollout, MFU] of one side."""
    if timing is None:
        return ["-", "-", "-"]
    if timing.chunk_s is None:
        return [f"failed: {timing.failure}", "-", "-"]
    seconds = timing.chunk_s
    return [f"{seconds:.4g}", f"{seconds / rollouts:.4g}", f"{flops / seconds / peak:.1%}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="paper", choices=("tiny", "sim", "paper"))
    parser.add_argument("--batches", help="rollouts per chunk (default: 1,4,16,64; tiny 1,2)")
    parser.add_argument("--torch_batches", help="the reference's (default: --batches)")
    parser.add_argument("--sampling_steps", type=int, help="Euler steps (default: the preset's)")
    parser.add_argument("--iters", type=int, default=2, help="timed chunks after a warm-up one")
    parser.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--torch_on_cpu", action="store_true", help="reference without CUDA")
    args = parser.parse_args()
    batches = [int(b) for b in (args.batches or DEFAULT_BATCHES[args.preset]).split(",")]
    torch_batches = [int(b) for b in args.torch_batches.split(",")] if args.torch_batches else []
    torch_batches = torch_batches or batches
    cfg = cw.CtrlWorldConfig.preset(args.preset)
    if args.sampling_steps:
        cfg = dataclasses.replace(cfg, num_steps=args.sampling_steps)

    # The reference first, before JAX initialises the GPU (see the module docstring).
    reference: dict[int, Timing] = {}
    device, skipped = reference_device(args)
    if device is None:
        hint = "; --torch_on_cpu runs it on the CPU" if skipped == "no CUDA device" else ""
        print(f"reference skipped: {skipped}{hint}", flush=True)
    else:
        # The reference's compute dtype follows its device; ours follows JAX's backend, so a
        # CPU reference (smoke test) runs at the preset's sizes in fp32 on both sides.
        bench_torch, release_torch = torch_sampler(cfg, device)
        for batch in torch_batches:
            reference[batch] = bench_torch(batch, args.iters)
            print(f"reference, {batch} rollouts: {reference[batch]}", flush=True)
        release_torch()

    on_gpu = jax.default_backend() == "gpu"
    compute = "bfloat16" if on_gpu else "float32"
    cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, dtype=compute))
    model = cw.CtrlWorld(cfg)
    params = optim.cast_floating(nn.unbox(cw.init_params(model, jax.random.PRNGKey(0))), compute)
    peak = matmul_peak(on_gpu)
    height, width = cfg.num_views * cfg.view_latent_shape[0], cfg.view_latent_shape[1]
    guidance_factor = 2 if cfg.max_guidance > 1.0 else 1
    forward = unet_forward_flops(cfg.unet, guidance_factor, cfg.num_frames, height, width)
    per_rollout = forward * cfg.num_steps
    ours: dict[int, Timing] = {}
    for batch in batches:
        ours[batch] = bench_jax(model, params, batch, args.iters)
        print(f"vlaw, {batch} rollouts: {ours[batch]}", flush=True)

    where = jax.devices()[0].device_kind if on_gpu else "CPU"
    reference_where = {None: f"skipped, {skipped}", "cuda": "CUDA, bf16", "cpu": "CPU, fp32"}
    print(
        f"\nworld-model sampling, preset {args.preset}: {cfg.num_steps} Euler steps, CFG x"
        f"{guidance_factor}, {cfg.num_history} + {cfg.num_future} = {cfg.num_frames} frames of "
        f"{height}x{width} latents; device {where}, compute {compute}; peak "
        f"{'bf16' if on_gpu else 'fp32'} matmul {peak / 1e12:.1f} TFLOP/s; reference "
        f"{reference_where[device]}; median of {args.iters} chunks after a warm-up one"
    )
    print(
        f"UNet forward {forward / 1e12:.4g} TFLOP ({guidance_factor} x {cfg.num_frames} frames); "
        f"{per_rollout / 1e12:.4g} TFLOP per chunk per rollout"
    )
    print(
        "| rollouts | TFLOP/chunk | jax s/chunk | jax s/chunk/rollout | jax MFU | jax compile s "
        "| jax program GiB | torch s/chunk | torch s/chunk/rollout | torch MFU | torch / jax |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch in sorted(set(batches) | set(reference)):
        flops = per_rollout * batch
        jax_timing, torch_timing = ours.get(batch), reference.get(batch)
        row = [f"{batch}", f"{flops / 1e12:.4g}"]
        row += seconds_cells(jax_timing, batch, flops, peak)
        compile_s = jax_timing.compile_s if jax_timing else None
        memory = jax_timing.memory_gib if jax_timing else None
        row += [f"{compile_s:.1f}" if compile_s is not None else "-"]
        row += [f"{memory:.2f}" if memory is not None else "-"]
        row += seconds_cells(torch_timing, batch, flops, peak)
        both = jax_timing and torch_timing and jax_timing.chunk_s and torch_timing.chunk_s
        row += [f"{torch_timing.chunk_s / jax_timing.chunk_s:.2f}x" if both else "-"]
        print("| " + " | ".join(row) + " |", flush=True)
    if not on_gpu:
        print("(CPU: a smoke test of the code paths; the MFU figures say nothing about a GPU)")


if __name__ == "__main__":
    main()
