"""Every shipped experiment config loads under every preset, and bad input is named."""

import importlib.util
import pathlib

import pytest

from vlaw import config as vlaw_config

ALL_EXPERIMENTS = sorted((pathlib.Path(__file__).parent.parent / "experiments").glob("*.py"))
# experiments/world_model_pretrain.py is a recipe for the sim world model, not a VLAW run.
PRETRAIN = "world_model_pretrain"
EXPERIMENTS = [p for p in ALL_EXPERIMENTS if p.stem != PRETRAIN]


def _load(path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_six_experiments_exist():
    names = {p.stem for p in EXPERIMENTS}
    assert names == {"scoop", "stack", "open_book", "erase", "draw", "multitask"}
    assert {p.stem for p in ALL_EXPERIMENTS} == names | {PRETRAIN}


def test_world_model_pretrain_recipe_has_tiny_and_sim_only():
    module = _load(next(p for p in ALL_EXPERIMENTS if p.stem == PRETRAIN))
    sim = module.get_config("sim")
    assert sim.tasks == tuple(vlaw_config.experiment_config(("scoop",), "sim").study.tasks)
    assert sim.loop.warmstart_demos_per_task == module.SIM_DEMOS_PER_TASK
    assert sim.world_model.train.steps == module.SIM_STEPS
    assert sim.world_model.train.compute_dtype == "float32"
    assert sim.world_model.train.remat_policy == "none"
    assert module.get_config("tiny").world_model.train.steps == 4
    for preset in (None, "paper"):
        with pytest.raises(ValueError, match="Ctrl-World's released checkpoint"):
            module.get_config(preset)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
@pytest.mark.parametrize("preset", [None, *vlaw_config.PRESETS])
def test_config_loads(path, preset):
    config = _load(path).get_config(preset)
    assert config.preset == (preset or "paper")
    assert set(config.tasks) <= set(vlaw_config.TASKS)
    config.lock()
    with pytest.raises(AttributeError):
        config.policy.no_such_field = 1


def test_paper_preset_has_published_hyperparameters():
    config = vlaw_config.experiment_config(("scoop",), "paper")
    assert config.loop.real_rollouts_per_task == 50
    assert config.loop.synthetic_rollouts_per_task == 500
    assert config.loop.iterations == 2
    assert config.loop.warmstart_demos_per_task == 25
    assert config.world_model.train.steps == 50_000
    assert (config.reward.train.steps, config.reward.train.batch_size) == (200, 128)
    assert (config.policy.train.steps, config.policy.train.batch_size) == (2_000, 256)
    assert config.reward.alpha == 0.8
    assert config.reward.num_frames == 16


def test_bad_preset_and_task_are_named():
    with pytest.raises(ValueError, match="huge"):
        vlaw_config.experiment_config(("scoop",), "huge")
    with pytest.raises(ValueError, match="juggle"):
        vlaw_config.experiment_config(("juggle",), "sim")
