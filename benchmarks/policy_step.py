"""pi0.5 training step: examples/s and model FLOPs utilisation, beside a PyTorch peer.

  python benchmarks/policy_step.py                       # paper size, batch 32 (one GPU)
  python benchmarks/policy_step.py --preset=tiny         # CPU smoke test of both sides

Ours: `vlaw.train.trainer.train_step` on the loss of `vlaw.agents.policy.make_loss_fn` (the
`train_policy` phase's step): SigLIP So400m/14 on 3 images of 224x224 + Gemma 2B over the 768
image tokens and the 200-token prompt + the 300M action expert over the 15 action tokens; fp32
master weights and AdamW moments, bf16 compute, remat `nothing_saveable`, grad clipping.

The peer (PyTorch, transformers): SiglipVisionModel on the 3 images, a linear projector, and
GemmaModel over the 768 image tokens and the prompt (no action expert, no LM head: a squared
loss on the last hidden states); fp32 masters, AdamW (fused on CUDA), bf16 autocast, gradient
checkpointing in both towers, SDPA attention.

FLOPs are analytic (`step_flops`): 6 x (multiply-adds of every matmul per example), attention
score and value products included, remat recomputation excluded (model FLOPs, as MFU is
defined). The peak is the best bf16 matmul rate measured in this run (JAX and torch each
measure; the larger is used for both sides).
"""

import argparse
import dataclasses
import time

import numpy as np

PRESETS = {
    # batch, steps timed, warm-up steps, matmul size for the peak, prompt tokens in use
    "paper": dict(batch=32, steps=10, warmup=3, matmul=8192, prompt_tokens=60),
    "tiny": dict(batch=4, steps=3, warmup=1, matmul=512, prompt_tokens=10),
}


# --------------------------------------------------------------------------------------------
# Analytic FLOPs.


def _gemma_layer_macs(c, queries: int, keys: int) -> int:
    """Multiply-adds of one Gemma block for `queries` tokens attending to `keys` keys."""
    proj = c.width * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)  # q, k, v, out
    mlp = 3 * c.width * c.mlp_dim  # gate, up, down
    attention = 2 * queries * keys * c.num_heads * c.head_dim  # scores and values
    return queries * (proj + mlp) + attention


def step_flops(model_config, batch: int, with_expert: bool = True) -> dict[str, float]:
    """Training FLOPs of one step by component (forward + backward = 3 x forward)."""
    s, llm, ex = model_config.siglip, model_config.llm, model_config.expert
    patches = (s.image_size // s.patch_size) ** 2
    siglip_layer = patches * (4 * s.width**2 + 2 * s.width * s.mlp_dim) + 2 * patches**2 * s.width
    siglip = (
        patches * s.patch_size**2 * 3 * s.width  # patch embedding
        + s.depth * siglip_layer
        + patches * s.width * llm.width  # projector to the LLM width
    ) * model_config.num_images
    prefix = model_config.num_images * patches + model_config.max_token_len
    horizon = model_config.action_horizon
    llm_macs = llm.depth * _gemma_layer_macs(llm, prefix, prefix)
    out = {"siglip": siglip, "gemma_2b": llm_macs}
    if with_expert:
        expert = ex.depth * _gemma_layer_macs(ex, horizon, prefix + horizon)
        expert += ex.depth * 3 * ex.width * ex.width  # adaRMS modulations (per example)
        expert += horizon * 2 * model_config.action_dim * ex.width + 2 * ex.width**2
        out["action_expert"] = expert
    return {k: 6.0 * batch * v for k, v in out.items()}


# --------------------------------------------------------------------------------------------
# JAX.


def jax_peak(n: int, repeats: int = 10) -> float:
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.bfloat16)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.bfloat16)
    matmul = jax.jit(lambda a, b: (a @ b).astype(jnp.bfloat16))
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            c = matmul(a, b)
        c.block_until_ready()
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2.0 * n**3 / best


def fake_batch(model_config, batch: int, prompt_tokens: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    size, length = model_config.image_size, model_config.max_token_len
    return {
        "images": rng.integers(0, 256, (batch, model_config.num_images, size, size, 3), np.uint8),
        "tokens": rng.integers(1, model_config.vocab_size, (batch, length)).astype(np.int32),
        "token_mask": np.broadcast_to(np.arange(length) < prompt_tokens, (batch, length)).copy(),
        "actions": rng.uniform(
            -1, 1, (batch, model_config.action_horizon, model_config.action_dim)
        ).astype(np.float32),
        "weight": np.ones(batch, np.float32),
    }


def benchmark_model_config(preset: str, remat: str = "nothing_saveable"):
    """pi0.5 as benchmarked: bf16 compute, fp32 masters, openpi's 200-token prompt at paper."""
    from vlaw.models.policy import pi05

    model_config = pi05.pi05_config(
        preset, dtype="bfloat16", param_dtype="float32", remat_policy=remat
    )
    if preset == "paper":
        model_config = dataclasses.replace(model_config, max_token_len=200)
    return model_config


def jax_train_step(model_config, batch_size: int):
    """(init(rng) -> TrainState, the jitted train step with the state donated, its
    loss_fn(params, batch, rng)): the `train_policy` phase's step on pi0.5 at `model_config`.
    `memory_plan.py` lowers the same step on abstract shapes."""
    import functools

    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    from vlaw.agents.policy import make_loss_fn
    from vlaw.config import _train_section
    from vlaw.models.policy import pi05
    from vlaw.train import optim, trainer

    train_config = _train_section(1000, batch_size, 5e-5)
    tx = optim.make_optimizer(train_config)

    def init(rng):
        params = nn.unbox(pi05.init_params(model_config, rng)["params"])
        params = optim.cast_floating(params, jnp.float32)
        return trainer.TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            ema_params=None,
            opt_state=tx.init(params),
            rng=jax.random.PRNGKey(1),
            nonfinite_count=jnp.zeros((), jnp.int32),
        )

    loss_fn = make_loss_fn(pi05.Pi05(model_config))
    step = jax.jit(
        functools.partial(
            trainer.train_step,
            loss_fn=loss_fn,
            tx=tx,
            schedule=optim.learning_rate_schedule(train_config),
            ema_decay=0.0,
            mask=None,
        ),
        donate_argnums=(0,),
    )
    return init, step, loss_fn


def run_jax(model_config, args) -> dict:
    import jax

    init, step, _ = jax_train_step(model_config, args.batch)
    state = jax.jit(init)(jax.random.key(0))
    num_params = sum(x.size for x in jax.tree.leaves(state.params))
    batch = jax.device_put(fake_batch(model_config, args.batch, args.prompt_tokens))
    compile_start = time.perf_counter()
    compiled = step.lower(state, batch).compile()
    compile_s = time.perf_counter() - compile_start
    for _ in range(args.warmup):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = compiled(state, batch)
    loss = float(jax.device_get(metrics["loss"]))
    seconds = (time.perf_counter() - start) / args.steps
    return dict(params=num_params, step_s=seconds, compile_s=compile_s, loss=loss)


# --------------------------------------------------------------------------------------------
# PyTorch peer.


def torch_peak(n: int, device: str, repeats: int = 10) -> float:
    import torch

    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    best = float("inf")
    for _ in range(3):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2.0 * n**3 / best


def run_torch(model_config, args, device: str) -> dict:
    import torch
    from transformers import GemmaConfig, GemmaModel, SiglipVisionConfig, SiglipVisionModel

    s, llm = model_config.siglip, model_config.llm
    with torch.device(device):  # random init on the GPU: much faster than on the CPU
        vision = SiglipVisionModel(
            SiglipVisionConfig(
                hidden_size=s.width,
                intermediate_size=s.mlp_dim,
                num_hidden_layers=s.depth,
                num_attention_heads=s.num_heads,
                image_size=s.image_size,
                patch_size=s.patch_size,
                attn_implementation="sdpa",
            )
        )
        language = GemmaModel(
            GemmaConfig(
                vocab_size=model_config.vocab_size,
                hidden_size=llm.width,
                intermediate_size=llm.mlp_dim,
                num_hidden_layers=llm.depth,
                num_attention_heads=llm.num_heads,
                num_key_value_heads=llm.num_kv_heads,
                head_dim=llm.head_dim,
                max_position_embeddings=8192,
                attn_implementation="sdpa",
            )
        )
        projector = torch.nn.Linear(s.width, llm.width)
    modules = torch.nn.ModuleList([vision, projector, language]).to(device)  # fp32 masters
    for tower in (vision, language):
        # transformers >= 5 renamed it; the old name warns.
        getattr(tower, "activation_checkpointing_enable", tower.gradient_checkpointing_enable)()
    num_params = sum(p.numel() for p in modules.parameters())
    optimizer = torch.optim.AdamW(
        modules.parameters(), lr=5e-5, weight_decay=1e-10, fused=device == "cuda"
    )
    batch = fake_batch(model_config, args.batch, args.prompt_tokens)
    images = torch.from_numpy(batch["images"]).to(device)
    images = images.reshape(-1, *images.shape[2:]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    tokens = torch.from_numpy(batch["tokens"]).long().to(device)
    mask = torch.from_numpy(batch["token_mask"]).to(device)

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            image_tokens = projector(vision(pixel_values=images).last_hidden_state)
            image_tokens = image_tokens.reshape(args.batch, -1, llm.width)
            text = language.embed_tokens(tokens)
            embeds = torch.cat([image_tokens.to(text.dtype), text], dim=1)
            attention = torch.cat(
                [torch.ones(image_tokens.shape[:2], dtype=mask.dtype, device=device), mask], 1
            )
            hidden = language(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
            loss = hidden.float().square().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    return dict(params=num_params, step_s=seconds, compile_s=0.0, loss=float(loss))


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="paper")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--side", choices=("both", "jax", "torch"), default="both")
    parser.add_argument("--remat", default="nothing_saveable", help="jax.checkpoint_policies")
    args = parser.parse_args()
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)

    import jax

    on_gpu = jax.default_backend() == "gpu"
    model_config = benchmark_model_config(args.preset, args.remat)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), preset {args.preset}")
    print(f"batch {args.batch}, {args.steps} timed steps after {args.warmup} warm-up")

    peaks = {"jax": jax_peak(args.matmul)}
    rows = []
    if args.side in ("both", "jax"):
        result = run_jax(model_config, args)
        flops = step_flops(model_config, args.batch, with_expert=True)
        rows.append(("jax pi0.5 (ours, + action expert)", result, flops))
    if args.side in ("both", "torch"):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        peaks["torch"] = torch_peak(args.matmul, device)
        result = run_torch(model_config, args, device)
        flops = step_flops(model_config, args.batch, with_expert=False)
        rows.append(("torch peer (SigLIP + Gemma, no expert)", result, flops))
    peak = max(peaks.values())
    measured = ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in peaks.items())
    print(f"bf16 matmul peak (measured): {measured}")
    columns = ("params", "step s", "ex/s", "TFLOP/step", "TFLOP/s", "MFU", "compile s")
    widths = (9, 8, 8, 10, 8, 6, 9)
    print(f"{'side':42s} " + " ".join(f"{c:>{w}s}" for c, w in zip(columns, widths)))
    for name, result, flops in rows:
        total = sum(flops.values())
        achieved = total / result["step_s"]
        print(
            f"{name:42s} {result['params'] / 1e6:8.1f}M {result['step_s']:8.4f} "
            f"{args.batch / result['step_s']:8.2f} {total / 1e12:10.4f} {achieved / 1e12:8.3f} "
            f"{100 * achieved / peak:5.1f}% {result['compile_s']:9.1f}"
        )
    for name, result, flops in rows:
        parts = ", ".join(f"{k} {v / sum(flops.values()):.0%}" for k, v in flops.items())
        print(f"  {name}: loss {result['loss']:.4g}; FLOPs split: {parts}")
    if len(rows) == 2:
        ratio = rows[1][1]["step_s"] / rows[0][1]["step_s"]
        print(f"ours / peer examples/s: {ratio:.2f}x")
    if not on_gpu:
        print("(CPU: a smoke test of both code paths; the MFU figures are meaningless here)")


if __name__ == "__main__":
    main()
