"""The GPU benchmark suite: every hot path at paper size on one GPU, beside its PyTorch peer,
in one command under 8 minutes of device time, one table at the end.

    timeout 560 bash benchmarks/gpu_suite.sh                  # one GPU, paper size
    bash benchmarks/gpu_suite.sh --preset=tiny                # CPU smoke test (minutes)
    bash benchmarks/gpu_suite.sh --parts=imagine,reward_label # only these parts
    python benchmarks/gpu_suite.py --append_results=DIR       # DIR's figures -> RESULTS.md

(benchmarks/README.md has the exact device command.) Each part runs in its own subprocess with
its own time cap, so a part that runs out of time or memory is reported as such in the table
and the suite goes on; a part whose program failed says how. A part writes its JSON as soon as
it is done (the sampler after each rollout count) into `--work`, and after every part the
driver rewrites, under `--out` (default: `$OUT` when set, else `benchmarks/gpu_suite_results`),
`suite.json` (every part's status and figures), `table.md` and `logs.txt` (each part's log
tail), so a suite stopped from outside (`timeout 560`: SIGTERM) leaves everything measured so
far there, with `results_section.md`, the RESULTS.md section, at the end. Four files: a lease
returns at most eight from $OUT. On a GPU at paper size the section is also appended to
`--results` (benchmarks/RESULTS.md).

Parts (paper size; the analytic FLOPs and the peers are each script's, see their docstrings):
- policy_step: pi0.5 train step, batch 32, examples/s and MFU; peer transformers SigLIP +
  Gemma (no action expert). Goals: >= 50 % MFU, >= 1.3x the peer.
- world_model_step: the SVD UNet train step, 8 frames of 72x40 latents; peer diffusers' UNet.
  Goals: >= 40 % MFU, >= 2x the peer.
- world_model_sample: seconds per chunk per rollout at 1, 4, 16 and 64 rollouts (CFG 2, 11
  frames, bf16); peer diffusers in a PyTorch Euler loop at 1 and 4 (it crashes at 16 on an
  H100: shared/research/device_measurements.md). To fit the budget both sides run
  `--sample_steps` Euler steps (default 5) and the table scales to the paper's 50: the
  sampler is a scan over identical steps, so a chunk's time is linear in them (the few
  per-chunk operations outside the scan, the action encoder and the noise draw, get counted 10
  times: a slight overestimate).
- reward_label: 16-frame episodes scored per second, batch 16; peer transformers' Qwen3-VL.
  Goal: >= 2x.
- imagine: pi0.5 and the world model in the closed loop (`vlaw.rollout.imagine.imagine_batch`),
  8 rollouts, 50 Euler steps: imagined frames/s and the hours of the paper's budget (500
  rollouts x 5 tasks x 20 chunks) on 1 and 8 GPUs.

MFU everywhere = analytic model FLOPs / step time / the best bf16 matmul rate measured in this
run (every part measures its own; the table uses the largest). On a CPU everything runs at tiny
size and the figures only prove the code paths.

Batch sizes and remat come from `benchmarks/memory_plan.py` (XLA's memory analysis at paper
size; see benchmarks/README.md). Caps (seconds, paper) are `CAPS`; `--budget_s` (default 470)
bounds the whole suite: a part gets min(its cap, what is left), and one that cannot get 30 s
is skipped as "not run: suite budget".
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# What each part does, per preset. Paper: the sizes, steps cut to fit 8 minutes.
SETTINGS = {
    "paper": dict(
        policy_batch=32,
        policy_steps=5,
        policy_warmup=2,
        wm_batch=16,
        wm_frames=8,
        wm_steps=5,
        sample_rollouts=(1, 4, 16, 64),
        sample_peer_rollouts=(1, 4),
        sample_steps=5,
        sample_iters=1,
        reward_batch=16,
        reward_iters=5,
        imagine_rollouts=8,
        imagine_interactions=2,
    ),
    "tiny": dict(
        policy_batch=4,
        policy_steps=2,
        policy_warmup=1,
        wm_batch=2,
        wm_frames=8,
        wm_steps=2,
        sample_rollouts=(1, 2),
        sample_peer_rollouts=(1,),
        sample_steps=2,
        sample_iters=1,
        reward_batch=2,
        reward_iters=1,
        imagine_rollouts=2,
        imagine_interactions=2,
    ),
}
# Per-part time caps in seconds, compile included (tiny: a shared 2-core CPU is slow).
CAPS = {
    # Guesses (no GPU was at hand to time compiles): generous for the JAX sides, whose compile
    # of a 3.4B-parameter train step is most of their time. They add up to more than the
    # budget, so a slow first command leaves the last parts to a second (README.md).
    "paper": {
        "policy_step.jax": 140,
        "policy_step.torch": 50,
        "world_model_step.jax": 70,
        "world_model_step.torch": 35,
        "world_model_sample.jax": 90,
        "world_model_sample.torch": 30,
        "reward_label.both": 60,
        "imagine.jax": 150,
    },
    "tiny": dict.fromkeys(
        (
            "policy_step.jax",
            "policy_step.torch",
            "world_model_step.jax",
            "world_model_step.torch",
            "world_model_sample.jax",
            "world_model_sample.torch",
            "reward_label.both",
            "imagine.jax",
        ),
        300,
    ),
}
PART_ORDER = tuple(CAPS["paper"])
# The figures each part's JSON holds (what the table reads; tests check them).
RESULT_KEYS = {
    "policy_step": ("device", "peak_flops", "batch", "step_s", "samples_per_s", "flops_per_step"),
    "world_model_step": (
        "device",
        "peak_flops",
        "batch",
        "step_s",
        "samples_per_s",
        "flops_per_step",
    ),
    "world_model_sample": ("device", "peak_flops", "euler_steps", "timed_steps", "rows"),
    "reward_label": ("device", "peak_flops", "batch", "ours_s", "theirs_s", "episodes_per_s"),
    "imagine": (
        "device",
        "rollouts",
        "interaction_s",
        "imagined_frames_per_s",
        "paper_hours_1_gpu",
        "paper_hours_8_gpu",
    ),
}
BUDGET_S = {"paper": 470, "tiny": 3600}
MIN_PART_S = 30
LOG_TAIL = 6000  # characters of each part's log kept in logs.txt
PAPER_EULER_STEPS = 50


# --------------------------------------------------------------------------------------------
# Workers: one part in this (child) process, figures returned as a dict.


def _torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_device_name(device: str) -> str:
    import torch

    return f"{torch.cuda.get_device_name(0)} (cuda)" if device == "cuda" else "cpu (torch)"


def _jax_device() -> str:
    import jax

    return f"{jax.devices()[0].device_kind} ({jax.default_backend()})"


def policy_step_worker(side: str, preset: str, s: dict, write) -> dict:
    import policy_step

    model_config = policy_step.benchmark_model_config(preset)
    args = argparse.Namespace(
        batch=s["policy_batch"],
        steps=s["policy_steps"],
        warmup=s["policy_warmup"],
        prompt_tokens=policy_step.PRESETS[preset]["prompt_tokens"],
    )
    matmul = policy_step.PRESETS[preset]["matmul"]
    if side == "jax":
        peak, device = policy_step.jax_peak(matmul), _jax_device()
        result = policy_step.run_jax(model_config, args)
    else:
        torch_device = _torch_device()
        peak, device = (
            policy_step.torch_peak(matmul, torch_device),
            _torch_device_name(torch_device),
        )
        result = policy_step.run_torch(model_config, args, torch_device)
    flops = policy_step.step_flops(model_config, args.batch, with_expert=side == "jax")
    return dict(
        result,
        device=device,
        peak_flops=peak,
        batch=args.batch,
        samples_per_s=args.batch / result["step_s"],
        flops_per_step=sum(flops.values()),
    )


def world_model_step_worker(side: str, preset: str, s: dict, write) -> dict:
    import world_model_step
    from _common_world_model import unet_forward_flops

    batch, frames, steps = s["wm_batch"], s["wm_frames"], s["wm_steps"]
    height, width = world_model_step.latent_size(preset)
    if side == "jax":
        import jax
        from _common_world_model import matmul_peak

        on_gpu = jax.default_backend() == "gpu"
        cfg = world_model_step.benchmark_unet_config(preset, on_gpu)
        peak, device = matmul_peak(on_gpu), _jax_device()
        step_s, _ = world_model_step.bench_jax(cfg, batch, frames, height, width, steps)
    else:
        import policy_step

        device = _torch_device()
        cfg = world_model_step.benchmark_unet_config(preset, device == "cuda")
        peak = policy_step.torch_peak(8192 if device == "cuda" else 512, device)
        step_s = world_model_step.bench_torch(
            cfg, batch, frames, height, width, steps, device == "cuda"
        )
        if step_s is None:
            raise RuntimeError("diffusers or torch is not installed")
        device = _torch_device_name(device)
    return dict(
        device=device,
        peak_flops=peak,
        batch=batch,
        frames=frames,
        compute=cfg.dtype,
        remat=cfg.remat_policy,
        step_s=step_s,
        samples_per_s=batch / step_s,
        flops_per_step=3.0 * unet_forward_flops(cfg, batch, frames, height, width),
    )


def world_model_sample_worker(side: str, preset: str, s: dict, write) -> dict:
    """Writes its JSON after every rollout count (a timeout keeps the ones done)."""
    import dataclasses as dc

    import world_model_sample as wms
    from _common_world_model import unet_forward_flops

    from vlaw.models.world_model import ctrl_world as cw

    full = cw.CtrlWorldConfig.preset(preset)
    euler = PAPER_EULER_STEPS if preset == "paper" else full.num_steps
    timed_steps = min(s["sample_steps"], euler)
    cfg = dc.replace(full, num_steps=timed_steps)
    height, width = cfg.num_views * cfg.view_latent_shape[0], cfg.view_latent_shape[1]
    guidance = 2 if cfg.max_guidance > 1.0 else 1
    forward = unet_forward_flops(cfg.unet, guidance, cfg.num_frames, height, width)
    out = dict(
        euler_steps=euler,
        timed_steps=timed_steps,
        guidance=guidance,
        frames=cfg.num_frames,
        flops_per_chunk_per_rollout=forward * euler,
        rows={},
    )
    if side == "jax":
        import flax.linen as nn
        import jax
        from _common_world_model import matmul_peak

        from vlaw.train import optim

        on_gpu = jax.default_backend() == "gpu"
        compute = "bfloat16" if on_gpu else "float32"
        cfg = dc.replace(cfg, unet=dc.replace(cfg.unet, dtype=compute))
        model = cw.CtrlWorld(cfg)
        key = jax.random.PRNGKey(0)
        params = optim.cast_floating(nn.unbox(cw.init_params(model, key)), compute)
        out.update(device=_jax_device(), peak_flops=matmul_peak(on_gpu), compute=compute)

        def bench(n):
            return wms.bench_jax(model, params, n, s["sample_iters"])

        rollouts = s["sample_rollouts"]
    else:
        import policy_step

        device = _torch_device()
        peak = policy_step.torch_peak(8192 if device == "cuda" else 512, device)
        compute = "bf16" if device == "cuda" else "fp32"
        out.update(device=_torch_device_name(device), peak_flops=peak, compute=compute)
        torch_bench, _ = wms.torch_sampler(cfg, device)

        def bench(n):
            return torch_bench(n, s["sample_iters"])

        rollouts = s["sample_peer_rollouts"]
    for n in rollouts:
        timing = bench(n)
        row = dataclasses.asdict(timing)
        if timing.chunk_s is not None:
            row["chunk_s"] = timing.chunk_s * euler / timed_steps  # scaled to the paper's steps
            row["timed_chunk_s"] = timing.chunk_s
            row["per_rollout_s"] = row["chunk_s"] / n
        out["rows"][str(n)] = row
        write(out)  # partial results survive a later timeout
    return out


def reward_label_worker(side: str, preset: str, s: dict, write) -> dict:
    import policy_step
    import reward_label

    args = argparse.Namespace(
        preset=preset,
        batch=s["reward_batch"],
        iters=s["reward_iters"],
        frames=16,
        height=180,
        width=320,
        tokenizer_path="",
    )
    device = _torch_device()
    peak = policy_step.torch_peak(8192 if device == "cuda" else 512, device)
    result = reward_label.measure(args)
    return dict(
        result,
        device=_jax_device(),
        peak_flops=peak,
        episodes_per_s=result["batch"] / result["ours_s"],
        peer_episodes_per_s=result["batch"] / result["theirs_s"],
        end_to_end_episodes_per_s=result["batch"] / result["ours_end_to_end_s"],
    )


def imagine_worker(side: str, preset: str, s: dict, write) -> dict:
    import imagine

    result = imagine.measure(preset, s["imagine_rollouts"], s["imagine_interactions"])
    return dict(result, device=_jax_device())


WORKERS = {
    "policy_step": policy_step_worker,
    "world_model_step": world_model_step_worker,
    "world_model_sample": world_model_sample_worker,
    "reward_label": reward_label_worker,
    "imagine": imagine_worker,
}


def write_json(path: str, data: dict) -> None:
    """Atomically (a reader never sees half a file)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


def run_worker(key: str, preset: str, path: str, settings: dict) -> None:
    part, side = key.split(".")
    start = time.perf_counter()

    def write(data: dict) -> None:
        write_json(path, dict(data, part=part, side=side, preset=preset, partial=True))

    result = WORKERS[part](side, preset, settings, write)
    result = dict(result, part=part, side=side, preset=preset, partial=False)
    result["versions"] = {  # of what this part imported
        name: getattr(sys.modules[name], "__version__", "?")
        for name in ("jax", "jaxlib", "flax", "torch", "transformers", "diffusers")
        if name in sys.modules
    }
    result["wall_s"] = time.perf_counter() - start
    write_json(path, result)


# --------------------------------------------------------------------------------------------
# Driver: parts as subprocesses, each under a time cap.


@dataclasses.dataclass
class Outcome:
    key: str
    status: str  # ok | timeout | out of memory | failed | not run
    seconds: float = 0.0
    cap_s: float = 0.0
    detail: str = ""
    result: dict | None = None


class Stopped(Exception):
    """The suite was told to stop (SIGTERM from `timeout`, SIGINT)."""


def _child_env(key: str, preset: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    side = key.split(".")[1]
    if side == "torch":
        env["JAX_PLATFORMS"] = "cpu"  # JAX imported by the scripts must leave the GPU alone
    elif side == "both":
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"  # torch holds its model on the GPU too
    else:
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.95")  # alone on the GPU
    if preset == "paper":
        # A rerun on the same machine (the second command of a lease) reuses compilations.
        cache = env.get("VLAW_JAX_CACHE", os.path.join(ROOT, ".cache", "jax"))
        env.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
    return env


def _classify(returncode: int, log_path: str) -> tuple[str, str]:
    with open(log_path, errors="replace") as f:
        tail = f.read()[-20000:]
    lowered = tail.lower()
    if "resource_exhausted" in lowered or "out of memory" in lowered:
        return "out of memory", ""
    lines = [line for line in tail.strip().splitlines() if line.strip()]
    last = lines[-1][:160] if lines else ""
    return "failed", f"exit {returncode}: {last}"


def run_part(key: str, preset: str, work_dir: str, cap_s: float, settings: dict) -> Outcome:
    """Runs one part as a subprocess; its JSON and log go to `work_dir`."""
    json_path = os.path.join(work_dir, f"{key}.json")
    log_path = os.path.join(work_dir, f"{key}.log")
    if os.path.exists(json_path):
        os.remove(json_path)  # a previous run's figures must not pass for this one's
    command = [
        sys.executable,
        os.path.abspath(__file__),
        f"--worker={key}",
        f"--preset={preset}",
        f"--json={json_path}",
        f"--settings={json.dumps(settings)}",
    ]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        # Its own process group, so a timeout ends the part and everything it started.
        child = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_child_env(key, preset),
            cwd=ROOT,
            start_new_session=True,
        )
        try:
            returncode = child.wait(timeout=cap_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        except BaseException:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        if timed_out:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    seconds = time.perf_counter() - start
    result = None
    if os.path.exists(json_path):
        with open(json_path) as f:
            result = json.load(f)
    if timed_out:
        return Outcome(key, "timeout", seconds, cap_s, f"after {cap_s:.0f} s", result)
    if returncode == 0 and result is not None and not result.get("partial"):
        return Outcome(key, "ok", seconds, cap_s, "", result)
    status, detail = _classify(returncode, log_path)
    return Outcome(key, status, seconds, cap_s, detail, result)


# --------------------------------------------------------------------------------------------
# The table.


def _peak(outcomes: dict[str, Outcome]) -> float | None:
    peaks = [o.result.get("peak_flops") for o in outcomes.values() if o.result]
    peaks = [p for p in peaks if p]
    return max(peaks) if peaks else None


def _fmt(value, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _status(outcome: Outcome | None) -> str:
    if outcome is None:
        return "not run"
    if outcome.status == "ok":
        return f"ok ({outcome.seconds:.0f} s)"
    detail = f": {outcome.detail}" if outcome.detail else ""
    return f"**{outcome.status}**{detail} ({outcome.seconds:.0f} s)"


def _goal(value, goal: float, unit: str) -> str:
    if value is None:
        return f"goal >= {goal:g}{unit}: -"
    met = "met" if value >= goal else "not met"
    return f"goal >= {goal:g}{unit}: {met}"


def table_rows(outcomes: dict[str, Outcome]) -> list[list[str]]:
    """[part, side, status, figure, MFU, vs peer, goal] per row."""
    peak = _peak(outcomes)
    rows = []

    def result(key):
        outcome = outcomes.get(key)
        return outcome.result if outcome is not None and outcome.result else None

    def mfu(flops, seconds):
        if peak is None or flops is None or not seconds:
            return None
        return flops / seconds / peak

    # Train steps: samples/s, MFU, ours over the peer.
    for part, mfu_goal, speed_goal in (("policy_step", 0.5, 1.3), ("world_model_step", 0.4, 2.0)):
        ours, peer = result(f"{part}.jax"), result(f"{part}.torch")
        ratio = None
        if ours and peer and ours.get("step_s") and peer.get("step_s"):
            ratio = peer["step_s"] / ours["step_s"]
        for side, r in (("jax", ours), ("torch", peer)):
            figure, efficiency = "-", None
            if r and r.get("step_s"):
                figure = f"{r['samples_per_s']:.3g} samples/s (batch {r['batch']})"
                efficiency = mfu(r["flops_per_step"], r["step_s"])
            goal = ""
            if side == "jax":
                percent = None if efficiency is None else 100 * efficiency
                goal = f"{_goal(percent, 100 * mfu_goal, ' % MFU')}; "
                goal += _goal(ratio, speed_goal, "x")
            rows.append(
                [
                    part,
                    side,
                    _status(outcomes.get(f"{part}.{side}")),
                    figure,
                    _fmt(None if efficiency is None else 100 * efficiency, ".1f"),
                    _fmt(ratio, ".2f") + "x" if side == "jax" and ratio else "-",
                    goal,
                ]
            )
    # Sampling: s per chunk per rollout at each rollout count.
    ours, peer = result("world_model_sample.jax"), result("world_model_sample.torch")
    counts = sorted({int(n) for r in (ours, peer) if r for n in r.get("rows", {})})
    if not counts:
        counts = [None]
    for side, r, key in (("jax", ours, "world_model_sample.jax"), ("torch", peer, None)):
        key = key or "world_model_sample.torch"
        for n in counts:
            row = (r or {}).get("rows", {}).get(str(n)) if n is not None else None
            figure, efficiency, ratio = "-", None, None
            if row and row.get("chunk_s"):
                figure = (
                    f"{row['per_rollout_s']:.3g} s/chunk/rollout ({n} rollouts, "
                    f"{r['euler_steps']} steps timed as {r['timed_steps']})"
                )
                efficiency = mfu(r["flops_per_chunk_per_rollout"] * n, row["chunk_s"])
                peer_row = (peer or {}).get("rows", {}).get(str(n))
                if side == "jax" and peer_row and peer_row.get("chunk_s"):
                    ratio = peer_row["chunk_s"] / row["chunk_s"]
            elif row and row.get("failure"):
                figure = f"failed: {row['failure']}"
            elif r and n is not None:
                figure = "not run at this count"
            rows.append(
                [
                    "world_model_sample",
                    f"{side} x{n}" if n else side,
                    _status(outcomes.get(key)),
                    figure,
                    _fmt(None if efficiency is None else 100 * efficiency, ".1f"),
                    f"{ratio:.2f}x" if ratio else "-",
                    "",
                ]
            )
    # Reward labelling: one process, both sides.
    r = result("reward_label.both")
    status = _status(outcomes.get("reward_label.both"))
    ratio = r["theirs_s"] / r["ours_s"] if r and r.get("ours_s") and r.get("theirs_s") else None
    ours_figure = f"{r['episodes_per_s']:.3g} episodes/s (batch {r['batch']})" if ratio else "-"
    peer_figure = f"{r['peer_episodes_per_s']:.3g} episodes/s" if ratio else "-"
    versus = f"{ratio:.2f}x" if ratio else "-"
    rows.append(["reward_label", "jax", status, ours_figure, "-", versus, _goal(ratio, 2.0, "x")])
    rows.append(["reward_label", "torch", status, peer_figure, "-", "-", ""])
    # Imagination.
    r = result("imagine.jax")
    figure = "-"
    if r and r.get("interaction_s"):
        figure = (
            f"{r['imagined_frames_per_s']:.3g} frames/s ({r['rollouts']} rollouts, "
            f"{r['interaction_s']:.3g} s/chunk, policy {r['policy_s']:.3g} s); paper budget "
            f"{r['paper_hours_1_gpu']:.3g} h on 1 GPU, {r['paper_hours_8_gpu']:.3g} h on 8"
        )
    rows.append(["imagine", "jax", _status(outcomes.get("imagine.jax")), figure, "-", "-", ""])
    return rows


def render_table(outcomes: dict[str, Outcome], header: dict) -> str:
    peak = _peak(outcomes)
    lines = [
        f"device: {header.get('device', '-')}; preset {header['preset']}; "
        f"bf16 matmul peak measured {_fmt(None if peak is None else peak / 1e12, '.1f')} TFLOP/s "
        f"(MFU against it); {header['date']}; commit {header['commit']}",
        "",
        "| part | side | status | figure | MFU % | vs peer | goal |",
        "|---|---|---|---|---:|---:|---|",
    ]
    parts = {key.split(".")[0] for key in outcomes}
    for row in table_rows(outcomes):
        if row[0] not in parts:
            continue  # not asked for (--parts)
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def git_commit() -> str:
    if os.environ.get("VLAW_COMMIT"):
        return os.environ["VLAW_COMMIT"]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (sha + ("+uncommitted" if dirty else "")) if sha else "unknown (no git)"


def summarise(outcomes: dict[str, Outcome], header: dict, out_dir: str, work_dir: str) -> str:
    """Writes the suite's three files to `out_dir` (suite.json with every part's figures,
    table.md, logs.txt with the end of each part's log): few files, as a device lease returns
    only a handful from $OUT. Returns the table."""
    for outcome in outcomes.values():
        if outcome.result and outcome.result.get("device") and header.get("device") in (None, "-"):
            header["device"] = outcome.result["device"]
    table = render_table(outcomes, header)
    summary = dict(header, parts={k: dataclasses.asdict(o) for k, o in outcomes.items()})
    write_json(os.path.join(out_dir, "suite.json"), summary)
    with open(os.path.join(out_dir, "table.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out_dir, "logs.txt"), "w") as f:
        for key in outcomes:
            log_path = os.path.join(work_dir, f"{key}.log")
            if os.path.exists(log_path):
                with open(log_path, errors="replace") as log:
                    f.write(f"===== {key} (last {LOG_TAIL} characters)\n{log.read()[-LOG_TAIL:]}\n")
    return table


def results_section(summary: dict) -> str:
    """The RESULTS.md section for a suite's `suite.json`."""
    outcomes = {k: Outcome(**v) for k, v in summary["parts"].items()}
    header = {k: v for k, v in summary.items() if k != "parts"}
    return (
        f"## GPU suite at {header['preset']} size: {header.get('device', '-')}\n\n"
        f"`timeout 560 bash benchmarks/gpu_suite.sh` (benchmarks/gpu_suite.py; the parts and "
        f"their settings are in its docstring). Device: {header.get('device', '-')}. Date: "
        f"{header['date']}. Commit: {header['commit']}. Suite wall time: "
        f"{header.get('wall_s', 0):.0f} s.\n\n" + render_table(outcomes, header) + "\n"
    )


def append_results(summary: dict, path: str, *, allow_cpu: bool = False) -> None:
    """Appends the section to RESULTS.md; refuses figures not taken on a GPU at paper size
    (a smoke run says nothing about performance) unless `allow_cpu` (tests)."""
    device = str(summary.get("device", ""))
    on_gpu = ("(gpu)" in device or "(cuda)" in device) and summary.get("preset") == "paper"
    if not (on_gpu or allow_cpu):
        raise ValueError(
            f"not appending to {path}: these figures are from {summary.get('device')!r} at "
            f"preset {summary.get('preset')!r}, not a GPU at paper size"
        )
    with open(path, "a") as f:
        f.write("\n" + results_section(summary))


def run_suite(args) -> int:
    preset = args.preset
    out_dir = os.path.abspath(args.out)
    work_dir = os.path.abspath(args.work or tempfile.mkdtemp(prefix="vlaw_gpu_suite_"))
    os.makedirs(out_dir, exist_ok=True)
    os.makedirs(work_dir, exist_ok=True)
    keys = [k for k in PART_ORDER if not args.parts or k.split(".")[0] in args.parts]
    if args.parts:
        unknown = set(args.parts) - {k.split(".")[0] for k in PART_ORDER}
        if unknown:
            raise SystemExit(f"unknown parts {sorted(unknown)}; choose from {sorted(WORKERS)}")
    budget = args.budget_s or BUDGET_S[preset]
    caps = dict(CAPS[preset])
    for item in args.cap or []:
        name, seconds = item.split("=")
        caps[name] = float(seconds)
    settings = dict(SETTINGS[preset])
    for item in args.set or []:
        name, value = item.split("=", 1)
        if name not in settings:
            raise SystemExit(f"unknown setting {name!r}; choose from {sorted(settings)}")
        settings[name] = json.loads(f"[{value}]") if "," in value else json.loads(value)
    header = dict(
        preset=preset,
        settings=settings,
        date=datetime.date.today().isoformat(),
        commit=git_commit(),
        device="-",
        budget_s=budget,
        out=out_dir,
        work=work_dir,
    )
    outcomes: dict[str, Outcome] = {}
    start = time.perf_counter()

    def stop(signum, frame):
        raise Stopped(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped, current, part_start = None, None, start
    try:
        for key in keys:
            current, part_start = key, time.perf_counter()
            left = budget - (time.perf_counter() - start)
            if left < MIN_PART_S:
                outcomes[key] = Outcome(key, "not run", detail="suite budget spent")
                continue
            cap = min(caps[key], left)
            print(f"[suite] {key}: cap {cap:.0f} s ({left:.0f} s of budget left)", flush=True)
            outcomes[key] = run_part(key, preset, work_dir, cap, settings)
            print(f"[suite] {key}: {_status(outcomes[key])}", flush=True)
            header["wall_s"] = time.perf_counter() - start
            summarise(outcomes, header, out_dir, work_dir)
    except Stopped as signal_name:
        stopped = str(signal_name)
        if current is not None and current not in outcomes:
            # The part in flight: its child group was killed; whatever JSON it wrote stays.
            partial = os.path.join(work_dir, f"{current}.json")
            result = None
            if os.path.exists(partial):
                with open(partial) as f:
                    result = json.load(f)
            seconds = time.perf_counter() - part_start
            outcomes[current] = Outcome(current, "stopped", seconds, 0.0, stopped, result)
        for key in keys:
            outcomes.setdefault(key, Outcome(key, "not run", detail=f"suite stopped ({stopped})"))
    header["wall_s"] = time.perf_counter() - start
    table = summarise(outcomes, header, out_dir, work_dir)
    print()
    print(table, flush=True)
    print(f"\n[suite] {header['wall_s']:.0f} s; suite.json, table.md, logs.txt in {out_dir}")
    with open(os.path.join(out_dir, "suite.json")) as f:
        summary = json.load(f)
    with open(os.path.join(out_dir, "results_section.md"), "w") as f:
        f.write(results_section(summary))
    if args.results:
        try:
            append_results(summary, args.results)
            print(f"[suite] appended to {args.results}")
        except ValueError as error:
            print(f"[suite] {error}")
    return 124 if stopped else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(SETTINGS), default="paper")
    parser.add_argument("--parts", type=lambda s: s.split(","), help="comma list (default all)")
    parser.add_argument(
        "--out", default=os.environ.get("OUT") or os.path.join(HERE, "gpu_suite_results")
    )
    parser.add_argument("--work", help="each part's JSON and log (default: a new temp dir)")
    parser.add_argument("--budget_s", type=float, help="the whole suite's time (default 470)")
    parser.add_argument("--cap", action="append", help="KEY=SECONDS, e.g. imagine.jax=200")
    parser.add_argument(
        "--set", action="append", help="SETTING=VALUE over SETTINGS, e.g. policy_batch=16"
    )
    parser.add_argument(
        "--results",
        default=os.path.join(HERE, "RESULTS.md"),
        help="RESULTS.md the section is appended to, only for a GPU at paper size ('' = none; "
        "on a lent device the tree does not come back: results_section.md in --out does)",
    )
    parser.add_argument("--append_results", metavar="DIR", help="append DIR/suite.json, exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.worker, args.preset, args.json, json.loads(args.settings))
        return
    if args.append_results:
        with open(os.path.join(args.append_results, "suite.json")) as f:
            summary = json.load(f)
        append_results(summary, args.results)
        print(f"appended to {args.results}")
        return
    sys.exit(run_suite(args))


if __name__ == "__main__":
    main()
