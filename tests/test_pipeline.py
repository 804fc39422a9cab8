"""The phase machinery: config.json written, state.json marks phases done, reruns are no-ops."""

import json
import sys
import types

import pytest

from vlaw import config as vlaw_config
from vlaw import pipeline


@pytest.fixture
def counting_phase(monkeypatch):
    calls = []
    module = types.ModuleType("vlaw_test_phase")

    def phase(config, workdir, iteration):
        calls.append((config.preset, iteration))
        return {"episodes": 3}

    module.phase = phase
    monkeypatch.setitem(sys.modules, "vlaw_test_phase", module)
    monkeypatch.setattr(pipeline, "PHASES", {"count": "vlaw_test_phase:phase"})
    return calls


def test_phase_runs_once_and_resumes(tmp_path, counting_phase):
    config = vlaw_config.experiment_config(("scoop",), "tiny")
    first = pipeline.run_phase("count", config, str(tmp_path), iteration=1)
    again = pipeline.run_phase("count", config, str(tmp_path), iteration=1)
    assert counting_phase == [("tiny", 1)]
    assert first["episodes"] == again["episodes"] == 3
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["iter_01"]["count"]["episodes"] == 3
    pipeline.run_phase("count", config, str(tmp_path), iteration=1, force=True)
    assert len(counting_phase) == 2


def test_a_preempted_phase_is_not_recorded_done(tmp_path, monkeypatch):
    """Training that SIGTERM stopped raises `Preempted`: the phase stays undone, so the rerun
    resumes it instead of skipping a partly trained model."""
    from vlaw.train import trainer

    module = types.ModuleType("vlaw_test_preempted")
    outcomes = [trainer.Preempted("stopped by SIGTERM after step 3 of 8"), {"step": 8}]

    def phase(config, workdir, iteration):
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    module.phase = phase
    monkeypatch.setitem(sys.modules, "vlaw_test_preempted", module)
    monkeypatch.setattr(pipeline, "PHASES", {"train": "vlaw_test_preempted:phase"})
    config = vlaw_config.experiment_config(("scoop",), "tiny")
    with pytest.raises(trainer.Preempted):
        pipeline.run_phase("train", config, str(tmp_path), iteration=0)
    assert "train" not in pipeline.load_state(str(tmp_path)).get("iter_00", {})
    assert pipeline.run_phase("train", config, str(tmp_path), iteration=0)["step"] == 8


def test_unknown_phase_is_named(tmp_path, counting_phase):
    config = vlaw_config.experiment_config(("scoop",), "tiny")
    with pytest.raises(ValueError, match="imagine"):
        pipeline.run_phase("imagine", config, str(tmp_path))


def test_resolved_config_written(tmp_path):
    config = vlaw_config.experiment_config(("draw",), "sim")
    path = pipeline.write_config(config, str(tmp_path))
    with open(path) as f:
        written = json.load(f)
    assert written["tasks"] == ["draw"]
    assert written["reward"]["alpha"] == 0.8
