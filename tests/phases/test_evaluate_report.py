"""`--phase=evaluate` writes the report at `tiny`: iteration 0 (no world model: the station's
success and the policy's loss curve) and iteration 1 (action replay, event confusion, two
policies compared in imagination, rollout grids), with random tiny weights saved through the
runtime modules' public savers (training costs minutes of compilation; these tests are about
what evaluate does with models, not about training them). Every linked file exists and headless
Chromium renders every image."""

import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import numpy as np
import pytest

from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.agents import policy as policy_lib
from vlaw.agents import reward as reward_agent
from vlaw.agents import world_model as wm
from vlaw.config import experiment_config
from vlaw.models.policy import pi05
from vlaw.phases import train_policy
from vlaw.train import checkpoints

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # ~2.5 min on 2 cores: two evaluations and their compilations


def _random_params(abstract, seed: int):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda a: (0.05 * rng.standard_normal(a.shape)).astype(a.dtype), abstract)


def _write_policy(config, workdir: str, iteration: int) -> None:
    spec, directory, _ = train_policy.prepare(config, workdir, iteration)
    abstract = nn.unbox(pi05.abstract_params(policy_lib.model_config_from_spec(spec)))["params"]
    params = _random_params(abstract, 1 + iteration)
    policy_lib.save_policy(directory, params, spec=spec, step=1, ckpt_config=config.ckpt)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, write_random_world_model):
    workdir = str(tmp_path_factory.mktemp("evaluate_report"))
    config = experiment_config(("scoop",), "tiny")
    config.reward.progress = False
    pipeline.run_phase("collect", config, workdir, iteration=0)
    for iteration in (0, 1):
        _write_policy(config, workdir, iteration)
    write_random_world_model(config, workdir, 1)
    # A reward model of random tiny weights, imported as `init_from` (zero-shot decisions).
    reward_dir = os.path.join(workdir, "pretrained_reward")
    params = nn.unbox(
        reward_agent.init_fn_for(reward_agent.model_config(config))(jax.random.key(3))
    )
    checkpoints.save_params(reward_dir, 0, params, config.ckpt)
    pipeline.run_phase("evaluate", config, workdir, iteration=0)
    command = [
        sys.executable,
        "launch.py",
        "--config=experiments/scoop.py:tiny",
        f"--workdir={workdir}",
        "--phase=evaluate",
        "--iteration=1",
        f"--config.reward.train.init_from={reward_dir}",
    ]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_evaluate_writes_reports_whose_links_all_resolve(evaluated, linked_paths):
    reports = pathlib.Path(evaluated) / "reports"
    pages = [reports / "index.html", *(reports / f"iter_{i:02d}" / "report.html" for i in (0, 1))]
    for page in pages:
        links = linked_paths(str(page))
        assert links, page
        for link in links:
            assert ":" not in link, f"{page} links outside the run: {link}"
            assert os.path.isfile(link), f"{page} links to a missing {link}"
    index = (reports / "index.html").read_text()
    assert "iter_00/report.html" in index and "iter_01/report.html" in index
    assert "no trained world model" in (reports / "iter_00" / "report.html").read_text()
    analysis = json.loads((reports / "iter_01" / "world_model.json").read_text())
    replay = analysis["replay"]
    assert replay["summary"]["num_clips"] == 2 and np.isfinite(replay["summary"]["psnr"])
    assert replay["summary"]["ssim"] is None  # 8x16 frames at tiny: the report says why
    assert any("SSIM not computed" in n for n in replay["notes"])
    assert any("LPIPS not computed" in n for n in replay["notes"])
    counts = analysis["confusion"]["counts"]
    assert sum(counts[k] for k in ("tp", "fn", "tn", "fp")) == 2
    ranking = analysis["ranking"]
    assert [p["name"] for p in ranking["policies"]] == ["base", "iteration 1"]
    assert ranking["rollouts_per_policy"] == 2 and len(ranking["grids"]) == 1
    assert set(ranking["pairs"]) == {"concordant", "discordant", "tied"}


def test_chromium_renders_the_evaluate_report(evaluated, render_html):
    page = pathlib.Path(evaluated) / "reports" / "iter_01" / "report.html"
    screenshot, widths = render_html(str(page))
    # The chart, 2 replay strips, 2 confusion strips, a grid (no loss curves: nothing trained).
    assert len(widths) == 6, widths
    assert all(width > 0 for _, width in widths), widths
    assert screenshot.std() > 5, "blank screenshot"


def test_replay_benchmark_scores_models_alike_on_the_same_clips(evaluated):
    """benchmarks/world_model_replay.py: every model on the same clips with the same noise, so
    one model entered twice scores the same; both checks report against their baselines."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import world_model_replay

    config = experiment_config(("scoop",), "tiny")
    config.reward.progress = False
    config.evaluate.report_clips = 0
    directory = workdir_lib.checkpoint_dir(evaluated, "world_model", 1)
    # Another model (other random weights): it must score otherwise on the same clips.
    other = os.path.join(evaluated, "other_world_model")
    spec = wm.read_spec(directory)
    params = _random_params(wm.abstract_params(config, spec), 7)
    wm.save_world_model(other, params, spec=spec, step=1, ckpt_config=config.ckpt)
    rows = world_model_replay.score_models(
        config,
        {"a": directory, "b": directory, "other": other},
        workdir_lib.evaluation_dir(evaluated, 1),
        os.path.join(evaluated, "pretrained_reward"),
        seed=0,
    )
    assert [r["name"] for r in rows] == ["a", "b", "other"]
    first, second, third = rows
    assert first["replay"]["num_clips"] == 2 and np.isfinite(first["replay"]["psnr_copy_start"])
    assert first["replay"] == second["replay"] and first["confusion"] == second["confusion"]
    assert third["replay"]["psnr"] != first["replay"]["psnr"]
    assert third["replay"]["psnr_copy_start"] == first["replay"]["psnr_copy_start"]
    assert sum(first["confusion"][k] for k in ("tp", "fn", "tn", "fp")) == 2
