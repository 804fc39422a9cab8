"""The GPU suite (benchmarks/gpu_suite.py) and its memory plan, on the CPU.

Default run (~25 s): the driver's own behaviour, with real subprocesses: a part past its cap
is killed and reported as a timeout, a part whose program fails is reported with its error, an
out-of-memory log is recognised, partial results (the sampler's finished rollout counts) reach
the table, the table has a row for every part, the RESULTS.md writer refuses CPU figures, and
the memory plan lowers every target at tiny. Slow: the whole suite at tiny size (every part's
real code path, both sides; about 10 minutes of CPU compilation).
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCHMARKS)

import gpu_suite  # noqa: E402  (benchmarks/ is not a package: its scripts import each other)


def _fake_results() -> dict[str, dict]:
    """One plausible JSON per part key, with the keys the table reads."""
    train = dict(device="H100 (gpu)", peak_flops=7e14, batch=32, step_s=1.0, samples_per_s=32)
    return {
        "policy_step.jax": dict(train, flops_per_step=4.46e14),
        "policy_step.torch": dict(train, step_s=1.5, samples_per_s=21.3, flops_per_step=4.4e14),
        "world_model_step.jax": dict(train, batch=8, samples_per_s=8, flops_per_step=2e14),
        "world_model_step.torch": dict(
            train, batch=8, step_s=2.0, samples_per_s=4, flops_per_step=2e14
        ),
        "world_model_sample.jax": dict(
            device="H100 (gpu)",
            peak_flops=7e14,
            euler_steps=50,
            timed_steps=5,
            flops_per_chunk_per_rollout=9.5e14,
            rows={
                "1": dict(chunk_s=4.0, per_rollout_s=4.0),
                "4": dict(chunk_s=12.0, per_rollout_s=3.0),
            },
        ),
        "world_model_sample.torch": dict(
            device="cuda",
            peak_flops=8e14,
            euler_steps=50,
            timed_steps=5,
            flops_per_chunk_per_rollout=9.5e14,
            rows={"1": dict(chunk_s=5.5, per_rollout_s=5.5)},
        ),
        "reward_label.both": dict(
            device="H100",
            peak_flops=7e14,
            batch=16,
            ours_s=0.5,
            theirs_s=1.5,
            episodes_per_s=32,
            peer_episodes_per_s=10.7,
        ),
        "imagine.jax": dict(
            device="H100 (gpu)",
            rollouts=8,
            interaction_s=25.0,
            policy_s=0.2,
            imagined_frames_per_s=1.28,
            paper_hours_1_gpu=45.0,
            paper_hours_8_gpu=5.6,
        ),
    }


def test_fake_results_cover_the_declared_keys():
    for key, result in _fake_results().items():
        missing = set(gpu_suite.RESULT_KEYS[key.split(".")[0]]) - set(result)
        assert not missing, (key, missing)


def test_table_has_every_part_and_shows_failures():
    results = _fake_results()
    outcomes = {k: gpu_suite.Outcome(k, "ok", 10.0, 100.0, "", r) for k, r in results.items()}
    # The sampler ran out of time after 1 and 4 rollouts: its rows stay, the status says so.
    outcomes["world_model_sample.jax"].status = "timeout"
    outcomes["world_model_sample.jax"].detail = "after 80 s"
    outcomes["reward_label.both"] = gpu_suite.Outcome("reward_label.both", "out of memory", 5.0)
    header = dict(preset="paper", date="2026-12-06", commit="abc1234", device="H100 (gpu)")
    table = gpu_suite.render_table(outcomes, header)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    parts = {row.split("|")[1].strip() for row in rows[1:]}
    assert parts == {
        "policy_step",
        "world_model_step",
        "world_model_sample",
        "reward_label",
        "imagine",
    }
    assert "1.50x" in table  # policy: 1.5 s over 1.0 s
    assert "**timeout**: after 80 s" in table and "3 s/chunk/rollout (4 rollouts" in table
    assert "**out of memory**" in table
    assert "45 h on 1 GPU, 5.6 h on 8" in table
    assert "800.0 TFLOP/s" in table  # the largest peak measured in the run


def test_driver_times_out_and_reports_failures(tmp_path):
    settings = dict(gpu_suite.SETTINGS["tiny"])
    # Python and JAX take longer than a second to import: killed at the cap, not waited for.
    slow = gpu_suite.run_part("world_model_step.jax", "tiny", str(tmp_path), 1.0, settings)
    assert slow.status == "timeout" and slow.seconds < 10
    # A worker that raises: "failed" with its error.
    broken = gpu_suite.run_part("policy_step.jax", "tiny", str(tmp_path), 60.0, {})
    assert broken.status == "failed" and "KeyError" in broken.detail
    log = tmp_path / "oom.log"
    log.write_text("jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory\n")
    assert gpu_suite._classify(1, str(log))[0] == "out of memory"


def test_suite_stopped_from_outside_leaves_its_table(tmp_path):
    """`timeout` sends SIGTERM: the part in flight is killed with its children, the table and
    suite.json are still written, and the exit status says so."""
    out = tmp_path / "out"
    suite = ["bash", "benchmarks/gpu_suite.sh", "--preset=tiny", f"--out={out}", "--results="]
    proc = _run(["timeout", "6", *suite, f"--work={tmp_path}", "--parts=policy_step"], 60)
    assert proc.returncode == 124, proc.stdout + proc.stderr
    summary = json.loads((out / "suite.json").read_text())
    assert summary["parts"]["policy_step.jax"]["status"] == "stopped"
    assert summary["parts"]["policy_step.torch"]["status"] == "not run"
    assert "| policy_step | jax | **stopped**: SIGTERM" in (out / "table.md").read_text()


def test_results_writer_refuses_cpu_figures(tmp_path):
    outcomes = {k: gpu_suite.Outcome(k, "ok", 1.0, 1.0, "", r) for k, r in _fake_results().items()}
    header = dict(preset="tiny", date="2026-12-06", commit="abc1234", device="cpu (cpu)")
    summary = dict(header, parts={k: vars(o) for k, o in outcomes.items()})
    results = tmp_path / "RESULTS.md"
    with pytest.raises(ValueError, match="not a GPU at paper size"):
        gpu_suite.append_results(summary, str(results))
    assert not results.exists()
    gpu_suite.append_results(
        dict(summary, device="NVIDIA H100 (gpu)", preset="paper"), str(results)
    )
    text = results.read_text()
    assert "## GPU suite at paper size: NVIDIA H100 (gpu)" in text and "abc1234" in text


def _run(args, timeout, env=None):
    return subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ, PYTHON=sys.executable, **(env or {})),
    )


@pytest.mark.slow
def test_whole_suite_at_tiny(tmp_path):
    """Every part, both sides, at tiny size on the CPU (about 10 minutes on 2 busy cores)."""
    out = tmp_path / "out"
    suite = ["bash", "benchmarks/gpu_suite.sh", "--preset=tiny", f"--out={out}", "--results="]
    proc = _run([*suite, f"--work={tmp_path}"], 3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "suite.json").read_text())
    for key in gpu_suite.PART_ORDER:
        outcome = summary["parts"][key]
        assert outcome["status"] == "ok", (
            key,
            outcome["detail"],
            (out / f"{key}.log").read_text()[-2000:],
        )
        missing = set(gpu_suite.RESULT_KEYS[key.split(".")[0]]) - set(outcome["result"])
        assert not missing, (key, missing)
    table = (out / "table.md").read_text()
    for part in gpu_suite.WORKERS:
        assert f"| {part} |" in table
    assert "failed" not in table and "timeout" not in table
    assert (out / "results_section.md").exists()
    # What comes back from a lease's $OUT: a handful of files.
    assert sorted(os.listdir(out)) == ["logs.txt", "results_section.md", "suite.json", "table.md"]


def test_memory_plan_at_tiny():
    """Every target lowered, with the analytic column (~10 s; compiling them all at tiny takes
    the CPU minutes: the UNet's bf16 train step alone ~3)."""
    plan = [sys.executable, "benchmarks/memory_plan.py", "--preset=tiny", "--mode=lower"]
    proc = _run(
        [*plan, "--sample_rollouts=1", "--wm_batches=2", "--policy_batch=2"],
        900,
        env={"JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for target in ("policy_step", "world_model_step", "world_model_sample"):
        assert f"| {target} |" in proc.stdout
