"""Device memory of each GPU-suite program at paper size, from XLA, without running anything.

    JAX_PLATFORMS=cpu python benchmarks/memory_plan.py                 # every target
    JAX_PLATFORMS=cpu python benchmarks/memory_plan.py --targets=policy_step --mode=lower

Each target is the program `gpu_suite.py` times (built by the same functions), lowered on
abstract `jax.ShapeDtypeStruct` inputs (nothing is allocated) and, in `--mode=compile` (the
default), compiled for the local backend; XLA's `memory_analysis()` then gives the bytes of
the arguments, the outputs, the aliased (donated) part and the temporaries. Peak = arguments +
outputs - aliased + temporaries: every buffer the program holds at once, an upper bound of the
live set.

On a CPU this is an approximation of the GPU figure: the CPU compiler fuses differently, runs
attention as plain dots (no cuDNN workspace) and keeps some bf16 work in fp32, so temporaries
can differ by tens of percent either way; arguments and outputs (parameters, optimizer moments,
inputs) are exact. Attention is the exception that matters most: on the GPU it runs as
cuDNN's fused kernel, which keeps no (T, S) scores, where XLA's CPU attention materialises
them (11 GiB per rollout in the sampler at paper size), so by default (`--attention=fused`)
every model's attention is replaced, for the compile only, by a stand-in with a fused kernel's
memory (`_fused_attention_standin`). `--mode=lower` skips compilation (minutes and GBs of
RAM for the policy at paper size on a small CPU) and prints the analytic part only: the bytes
of the arguments and outputs, which for a train step are the state (fp32 params + AdamW's two
fp32 moments) plus the batch, and for the samplers the bf16 weights plus the inputs.

Targets (batch sizes are the suite's; `--policy_batch` etc. change them):
- policy_step: pi0.5 train step (benchmarks/policy_step.py), remat `--policy_remat`.
- world_model_step: UNet train step (benchmarks/world_model_step.py), 8 frames of 72x40,
  remat `--wm_remat`, at each of `--wm_batches`.
- world_model_sample: `ctrl_world.predict`, 50 Euler steps, CFG (the UNet sees 2 x rollouts),
  11 frames, bf16, at each of `--sample_rollouts`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import sys
import time

import jax
import numpy as np

GIB = 2**30
CARD_GIB = 80.0  # an H100's HBM; the suite's programs must fit under it with room to spare


@dataclasses.dataclass
class Plan:
    """One program's memory, in bytes (None: not known in this mode)."""

    target: str
    batch: int
    setting: str
    arguments: float
    outputs: float
    aliased: float | None = None
    temporaries: float | None = None
    seconds: float = 0.0
    note: str = ""
    analytic: float | None = None  # train steps: `_train_step_analytic`

    @property
    def peak(self) -> float | None:
        if self.temporaries is None:
            return None
        return self.arguments + self.outputs - (self.aliased or 0.0) + self.temporaries


# Modules that call the attention wrapper, each having imported it by name.
_ATTENTION_USERS = (
    "vlaw.models.policy.siglip",
    "vlaw.models.policy.gemma",
    "vlaw.models.world_model.unet",
    "vlaw.models.world_model.vae",
    "vlaw.models.reward.text",
)


def _fused_attention_standin(query, key, value, **unused):
    """Stands in for cuDNN's fused attention when compiling for the CPU: the same shapes in and
    out, and like a fused kernel it keeps no (T, S) score matrix, so the program's memory is the
    GPU program's rather than that of XLA's CPU attention, which materialises the scores (11
    GiB per rollout in the world-model sampler at paper size). Its values are meaningless."""
    del unused
    import jax.numpy as jnp

    summary = jnp.mean(key * value, axis=1, keepdims=True)  # (B, 1, K, D)
    summary = jnp.repeat(summary, query.shape[2] // key.shape[2], axis=2)
    return (query * summary).astype(query.dtype)


@contextlib.contextmanager
def attention(kind: str):
    """kind "fused": the stand-in above in every model; "xla": the models as they are."""
    if kind == "xla":
        yield
        return
    modules = [importlib.import_module(name) for name in _ATTENTION_USERS]
    saved = [module.dot_product_attention for module in modules]
    for module in modules:
        module.dot_product_attention = _fused_attention_standin
    try:
        yield
    finally:
        for module, original in zip(modules, saved, strict=True):
            module.dot_product_attention = original


def _abstract(tree):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


def _bytes(tree) -> float:
    return float(sum(np.prod(a.shape) * np.dtype(a.dtype).itemsize for a in jax.tree.leaves(tree)))


def _train_step_analytic(state, batch, loss_fn) -> float:
    """Bytes a train step needs by count: the state (fp32 params, AdamW's two fp32 moments;
    donated, so held once), the batch, fp32 gradients, and the activations the backward pass
    reads (`saved_residuals` of the loss under the model's remat policy, traced on abstract
    shapes: the bf16 copies of the weights and each remat block's inputs). Not counted: the
    transient of recomputing one block, and workspace."""
    from jax._src.ad_checkpoint import saved_residuals  # no public form returns the list

    def loss(params, batch):
        return loss_fn(params, batch, jax.random.PRNGKey(0))[0]

    residuals = saved_residuals(loss, state.params, batch)
    activations = sum(
        float(np.prod(aval.shape)) * np.dtype(aval.dtype).itemsize
        for aval, source in residuals
        if "argument" not in source  # params and batch: counted already
    )
    return _bytes(state) + _bytes(batch) + _bytes(state.params) + activations


def _plan(target, batch, setting, lower, args, mode: str) -> Plan:
    """Lowers (`lower(*args)`, a jitted function's `.lower`) and in compile mode compiles the
    program on abstract `args`."""
    start = time.perf_counter()
    lowered = lower(*args)
    out_bytes = _bytes(lowered.out_info)
    plan = Plan(target, batch, setting, _bytes(args), out_bytes)
    if mode == "compile":
        memory = lowered.compile().memory_analysis()
        if memory is not None:
            plan.arguments = float(memory.argument_size_in_bytes)
            plan.outputs = float(memory.output_size_in_bytes)
            plan.aliased = float(memory.alias_size_in_bytes)
            plan.temporaries = float(memory.temp_size_in_bytes)
        else:
            plan.note = "backend reports no memory analysis"
    plan.seconds = time.perf_counter() - start
    return plan


def policy_step_plan(preset: str, batch: int, remat: str, mode: str) -> Plan:
    import policy_step

    model_config = policy_step.benchmark_model_config(preset, remat)
    init, step, loss_fn = policy_step.jax_train_step(model_config, batch)
    state = jax.eval_shape(init, jax.random.key(0))
    data = _abstract(policy_step.fake_batch(model_config, batch, 60))
    plan = _plan("policy_step", batch, f"remat {remat}", step.lower, (state, data), mode)
    plan.analytic = _train_step_analytic(state, data, loss_fn)
    return plan


def world_model_step_plan(preset: str, batch: int, remat: str, mode: str) -> Plan:
    import world_model_step

    from vlaw.models.world_model.unet import UNetConfig

    cfg = UNetConfig.preset(preset, dtype="bfloat16", remat_policy=remat)
    height, width = world_model_step.latent_size(preset)
    init, step, data, loss_fn = world_model_step.jax_train_step(cfg, batch, 8, height, width)
    state = jax.eval_shape(init, jax.random.key(0))
    args = (state, _abstract(data))
    plan = _plan("world_model_step", batch, f"remat {remat}", step.lower, args, mode)
    plan.analytic = _train_step_analytic(state, args[1], loss_fn)
    return plan


def world_model_sample_plan(preset: str, rollouts: int, mode: str) -> Plan:
    import flax.linen as nn
    import jax.numpy as jnp
    from world_model_sample import chunk_inputs

    from vlaw.models.world_model import ctrl_world as cw
    from vlaw.train import optim

    cfg = cw.CtrlWorldConfig.preset(preset)
    cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, dtype="bfloat16"))
    model = cw.CtrlWorld(cfg)
    params = jax.eval_shape(
        lambda key: optim.cast_floating(nn.unbox(cw.init_params(model, key)), jnp.bfloat16),
        jax.random.key(0),
    )
    inputs = _abstract(chunk_inputs(cfg, rollouts))
    args = (
        params,
        inputs["history"],
        inputs["current"],
        inputs["poses"],
        inputs["text_embeds"],
        jax.ShapeDtypeStruct((2,), jnp.uint32),
    )
    setting = f"{cfg.num_steps} steps, CFG, bf16"
    lower = functools.partial(cw.predict.lower, model)
    return _plan("world_model_sample", rollouts, setting, lower, args, mode)


def table(plans: list[Plan], mode: str) -> str:
    def gib(value):
        return "-" if value is None else f"{value / GIB:.2f}"

    lines = [
        f"memory plan ({mode} on {jax.default_backend()}: "
        + ("XLA memory_analysis of the compiled program" if mode == "compile" else "lowering only")
        + f"); fits = under {CARD_GIB:.0f} GiB less 10 %; analytic: state + batch + fp32 "
        "grads + saved activations (train steps)",
        "| program | batch | setting | arguments GiB | outputs GiB | donated GiB | temporaries "
        "GiB | peak GiB | analytic GiB | fits 80 GB (peak / analytic) | seconds |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for p in plans:
        peak = p.peak
        fits = " / ".join(
            "-" if v is None else ("yes" if v < 0.9 * CARD_GIB * GIB else "NO")
            for v in (peak, p.analytic)
        )
        lines.append(
            f"| {p.target} | {p.batch} | {p.setting} | {gib(p.arguments)} | {gib(p.outputs)} | "
            f"{gib(p.aliased)} | {gib(p.temporaries)} | {gib(peak)} | {gib(p.analytic)} | "
            f"{fits} | {p.seconds:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--targets", default="policy_step,world_model_step,world_model_sample", help="comma list"
    )
    parser.add_argument("--mode", choices=("compile", "lower"), default="compile")
    parser.add_argument("--preset", choices=("tiny", "sim", "paper"), default="paper")
    parser.add_argument(
        "--attention",
        choices=("fused", "xla"),
        default="fused",
        help="fused: a stand-in with fused attention's memory (the GPU's cuDNN); xla: as is",
    )
    parser.add_argument("--policy_batch", type=int, default=32)
    parser.add_argument("--policy_remat", default="nothing_saveable")
    parser.add_argument("--wm_batches", default="16")
    parser.add_argument("--wm_remat", default="nothing_saveable")
    parser.add_argument("--sample_rollouts", default="1,4,16,64")
    args = parser.parse_args()
    targets = args.targets.split(",")
    plans: list[Plan] = []

    def add(make):
        try:
            with attention(args.attention):
                plans.append(make())
        except Exception as error:  # report and go on: one target's failure is a finding
            print(f"{type(error).__name__}: {error}", file=sys.stderr, flush=True)
            return
        print(table(plans[-1:], args.mode).splitlines()[-1], flush=True)

    preset, mode = args.preset, args.mode
    if "policy_step" in targets:
        for remat in args.policy_remat.split(","):
            add(lambda remat=remat: policy_step_plan(preset, args.policy_batch, remat, mode))
    if "world_model_step" in targets:
        for batch in (int(b) for b in args.wm_batches.split(",")):
            add(lambda batch=batch: world_model_step_plan(preset, batch, args.wm_remat, mode))
    if "world_model_sample" in targets:
        for rollouts in (int(r) for r in args.sample_rollouts.split(",")):
            add(lambda rollouts=rollouts: world_model_sample_plan(preset, rollouts, mode))
    print()
    print(table(plans, args.mode))
    print(f"attention: {args.attention}")
    if jax.default_backend() == "cpu" and args.mode == "compile":
        print(
            "(compiled for the CPU: arguments and outputs are exact, temporaries an "
            "approximation of the GPU program's)"
        )


if __name__ == "__main__":
    main()
