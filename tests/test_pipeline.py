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
