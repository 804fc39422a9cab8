"""experiments/world_model_pretrain.py end to end at tiny: its two commands make a world model,
and another run's world model fine-tunes from it through `world_model.train.init_from`."""

import importlib.util
import pathlib

import numpy as np
import pytest

from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.agents import world_model as wm
from vlaw.config import experiment_config

RECIPE = pathlib.Path(__file__).parents[2] / "experiments" / "world_model_pretrain.py"


def _recipe_config(preset):
    spec = importlib.util.spec_from_file_location("world_model_pretrain", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(preset)


@pytest.mark.slow  # two tiny world models compiled and trained: ~4 min on 2 shared CPU cores
def test_a_run_fine_tunes_the_pretrained_world_model(tmp_path):
    pretrain_dir = str(tmp_path / "world_model_pretrain")
    recipe = _recipe_config("tiny")
    recipe.world_model.eval_windows = 0
    recipe.mesh.tensor = 4  # 8 fake devices: data=2 carries the tiny batch of 2
    pipeline.run_phase("collect", recipe, pretrain_dir, iteration=0)
    summary = pipeline.run_phase("train_world_model", recipe, pretrain_dir, iteration=0)
    assert summary["step"] == 4 and summary["dataset_dirs"] == [workdir_lib.demos_dir(pretrain_dir)]
    pretrained = workdir_lib.checkpoint_dir(pretrain_dir, "world_model", 0)
    source_spec = wm.read_spec(pretrained)

    run_dir = str(tmp_path / "scoop_tiny")
    config = experiment_config(("scoop",), "tiny")
    config.world_model.train.init_from = pretrained
    # What a fresh start would take differs from the pre-trained model's: other demonstrations
    # (another seed, so another pixel scale and residual scale) and other pose inputs.
    config.seed = 1
    config.world_model.pose_normalization = "droid"
    config.world_model.eval_windows = 0
    config.mesh.tensor = 4
    pipeline.run_phase("collect", config, run_dir, iteration=0)
    summary = pipeline.run_phase("train_world_model", config, run_dir, iteration=0)
    assert summary["init"] == "vlaw" and summary["step"] == 4
    assert np.isfinite(summary["final_loss"])
    spec = wm.read_spec(workdir_lib.checkpoint_dir(run_dir, "world_model", 0))
    for key in ("vae", "scaling_factor", "residual_scale", "pose_normalization", "pose_maps"):
        assert spec[key] == source_spec[key], key
    assert spec["init"]["path"] == pretrained
