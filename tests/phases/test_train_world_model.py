"""`train_world_model` on `experiment_config(("scoop",), "tiny")` data from `collect`, in process.

Default tests: the mesh guard, configuration, text embeddings, the start-point choice and the
data windows (one batch from a collected workdir). Slow tests: the whole phase (VAE, world
model, held-out PSNR check), a state.json no-op rerun, a fixed-batch loss check and iteration 1
starting from iteration 0's checkpoint.
"""

import json
import os
import struct

import jax
import numpy as np
import pytest

from vlaw import config as config_lib
from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.agents import world_model as wm
from vlaw.agents import world_model_codec as wm_codec
from vlaw.data import mixture, rlds_read
from vlaw.eval import prediction as wm_eval
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model.pose_maps import POSE_MAP_CHANNELS
from vlaw.phases.train_world_model import prepare, train_world_model_phase


def _tiny_config():
    config = config_lib.experiment_config(("scoop",), "tiny")
    # The VAE-first latent route; tests/train/test_world_model_quality.py runs the pixel default.
    config.world_model.space = "latent"
    # 8 fake devices: data=2 carries the batch of 2, tensor=4 shards the wide matrices.
    config.mesh.tensor = 4
    return config


@pytest.fixture(scope="module")
def collected(tmp_path_factory, record_real_rollouts):
    workdir = str(tmp_path_factory.mktemp("world_model"))
    config = _tiny_config()
    pipeline.run_phase("collect", config, workdir, iteration=0)
    record_real_rollouts(config, workdir, 0)
    return config, workdir


def test_mesh_guard_refuses_one_example_per_shard_with_fsdp_and_tensor(tmp_path):
    config = _tiny_config()
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
    config.world_model.train.batch_size = 4  # 1 example per (data, fsdp) shard
    with pytest.raises(ValueError, match="test_sharding_bug"):
        wm.check_mesh_batch(config, num_devices=8)
    # The phase refuses before it reads anything (the workdir is empty).
    with pytest.raises(ValueError, match="one example per shard"):
        train_world_model_phase(config, str(tmp_path), 0)
    config.world_model.train.batch_size = 8
    wm.check_mesh_batch(config, num_devices=8)
    config.world_model.train.batch_size = 4
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 4, 2, 1  # fsdp only: exact
    wm.check_mesh_batch(config, num_devices=8)


def test_model_config_follows_the_experiment():
    tiny = wm.model_config(_tiny_config(), scaling_factor=2.5)
    assert (tiny.num_history, tiny.num_future, len(tiny.history_idx)) == (6, 5, 6)
    assert tiny.vae.scaling_factor == 2.5 and tiny.unet.dtype == "float32"
    assert wm.pixel_size(tiny) == (8, 16)
    assert wm.pixel_size(wm.model_config(config_lib.experiment_config(("scoop",), "sim"))) == (
        64,
        64,
    )
    sim = config_lib.experiment_config(("scoop",), "sim")
    # 8x8-pixel cells: an 8x8 grid per 64x64 view, 3 * 64 values per cell on channels.
    assert wm.model_config(sim).view_latent_shape == (8, 8)
    assert wm.model_config(sim).unet.out_channels == 192
    sim.world_model.pixel_patch = 5
    with pytest.raises(ValueError, match="pixel_patch=5 does not divide the 64x64"):
        wm.model_config(sim)
    paper = wm.model_config(config_lib.experiment_config(("scoop",), "paper"))
    assert wm.pixel_size(paper) == (192, 320)  # Ctrl-World's 192x320 views
    # Poses: the sim station's wrapped workspace at sim, Ctrl-World's DROID bounds at paper, and
    # a trained model's own from its spec (older specs, without the key: DROID's).
    sim = config_lib.experiment_config(("scoop",), "sim")
    assert wm.model_config(sim).pose_angle_center is not None
    assert paper.pose_angle_center is None and paper.pose_low == cw.DROID_POSE_P01
    assert wm.model_config_from_spec(sim, {"scaling_factor": 1.0}).pose_angle_center is None
    from_spec = wm.model_config_from_spec(
        config_lib.experiment_config(("scoop",), "paper"),
        {"scaling_factor": 1.0, "pose_normalization": "sim"},
    )  # the spec wins over the config
    assert from_spec.pose_angle_center == cw.SIM_POSE_ANGLE_CENTER
    assert from_spec.pose_low == cw.SIM_POSE_LOW
    sim.world_model.sampler_sigma_min = 5.0
    assert wm.model_config(sim).sigma_min == 5.0 and paper.sigma_min == 0.002
    sim.world_model.sampler_sigma_min = 100.0
    with pytest.raises(ValueError, match="sampler_sigma_min=100.0 must lie in"):
        wm.model_config(sim)
    sim.world_model.sampler_sigma_min = 0.002
    sim.world_model.pose_normalization = "robot"
    with pytest.raises(ValueError, match="pose_normalization='robot'"):
        wm.model_config(sim)
    # Pose maps: off at paper (Ctrl-World's inputs), the sim station's cameras when asked, each
    # adding its channels to the UNet's input; a trained model's own choice from its spec.
    sim.world_model.pose_normalization = "sim"
    assert paper.view_cameras is None
    sim.world_model.pose_maps = "sim"
    with_maps = wm.model_config(sim)
    assert len(with_maps.view_cameras) == 3 and with_maps.view_cameras[2] is None
    assert with_maps.unet.in_channels == 2 * 192 + POSE_MAP_CHANNELS
    assert wm.model_config_from_spec(sim, {"scaling_factor": 1.0}).view_cameras is None
    sim.world_model.pose_maps = "zed"
    with pytest.raises(ValueError, match="pose_maps='zed'"):
        wm.model_config(sim)
    assert paper.unet.dtype == "bfloat16" and paper.unet.remat_policy == "nothing_saveable"


def test_seeded_text_embeddings_are_fixed_per_instruction_and_saved(tmp_path):
    path = str(tmp_path / "text.json")
    text = wm.TextEmbeddings(16, path=path)
    a = text(["scoop the beans", "stack the cups", "scoop the beans"])
    assert a.shape == (3, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a[0], a[2])
    assert not np.allclose(a[0], a[1])
    np.testing.assert_array_equal(a[0], wm.TextEmbeddings.seeded_vector("scoop the beans", 16))
    text.save()
    again = wm.TextEmbeddings(16, path=path)
    assert set(again.table) == {"scoop the beans", "stack the cups"}
    np.testing.assert_array_equal(again(["stack the cups"])[0], a[1])
    with open(path) as f:
        assert json.load(f)["kind"] == "seeded_random"


def test_start_point_previous_iteration_then_init_from_then_scratch(tmp_path):
    workdir = str(tmp_path)

    def start(iteration, init_from=""):
        found = workdir_lib.model_start(
            workdir, "world_model", iteration, init_from, is_trained=wm.is_trained
        )
        return wm.resolve_start_kind(found.kind, found.path), found.path

    assert start(0) == ("scratch", "")
    with pytest.raises(FileNotFoundError, match="train_world_model"):
        wm.load_world_model(_tiny_config(), workdir_lib.checkpoint_dir(workdir, "world_model", 0))
    released = tmp_path / "checkpoint-10000.pt"
    released.write_bytes(b"")
    assert start(1, str(released)) == ("ctrl_world", str(released))
    with pytest.raises(FileNotFoundError, match="init_from"):
        start(1, str(tmp_path / "missing.pt"))
    previous = workdir_lib.checkpoint_dir(workdir, "world_model", 0)
    os.makedirs(os.path.join(previous, "4"))
    with open(os.path.join(previous, wm.SPEC_FILE), "w") as f:
        json.dump({}, f)
    assert start(1, str(released)) == ("previous_iteration", previous)


def test_init_from_another_runs_world_model_keeps_its_codec_and_inputs(tmp_path):
    """A world model pre-trained in another run (init_from) is fine-tuned on the codec, residual
    scale and pose inputs it learned, not on this run's config or a scale measured afresh."""
    pretrained = str(tmp_path / "pretrain" / "checkpoints" / "world_model" / "iter_00")
    os.makedirs(os.path.join(pretrained, "500"))  # a committed step
    config = config_lib.experiment_config(("scoop",), "sim")
    config.world_model.train.init_from = pretrained
    # Checkpoints without world_model.json: not a world model's directory, named before any work.
    with pytest.raises(FileNotFoundError, match="checkpoints/world_model/iter_NN"):
        prepare(config, str(tmp_path / "run_no_spec"), 1, [], [], [], progress=False)
    with pytest.raises(FileNotFoundError, match="checkpoints/world_model/iter_NN"):
        wm.resolve_start_kind("init_from", pretrained)
    source_spec = {
        "vae": {"kind": "pixels", "path": "", "scaling_factor": 2.5},
        "scaling_factor": 2.5,
        "residual_scale": 3.25,
        "pose_normalization": "sim",
        "pose_maps": "sim",
    }
    wm.write_spec(pretrained, source_spec)
    config.world_model.pose_normalization = "droid"  # what a fresh start would take
    config.world_model.pose_maps = ""
    workdir = str(tmp_path / "run")
    # No data: with a vlaw start nothing is measured or trained before the UNet's fine-tune.
    spec = prepare(config, workdir, 1, [], [], [], progress=False)
    assert spec["init"] == {"kind": "vlaw", "path": pretrained}
    assert spec["vae"] == source_spec["vae"] and spec["scaling_factor"] == 2.5
    assert spec["residual_scale"] == 3.25
    assert spec["pose_normalization"] == "sim" and spec["pose_maps"] == "sim"
    assert wm.read_spec(workdir_lib.checkpoint_dir(workdir, "world_model", 1)) == spec
    # A pre-trained model in the other space is refused before anything is fine-tuned.
    config.world_model.space = "latent"
    with pytest.raises(ValueError, match="space"):
        prepare(config, str(tmp_path / "run_latent"), 1, [], [], [], progress=False)


def test_psnr():
    a = np.full((2, 4, 4, 3), 100, np.uint8)
    assert wm_eval.psnr(a, a) > 90
    b = a.astype(np.int32) + 10
    np.testing.assert_allclose(wm_eval.psnr(a, b), 10 * np.log10(255.0**2 / 100.0))


def test_psnr_where_it_moves_scores_only_the_pixels_that_change():
    current = np.full((1, 1, 4, 4, 3), 100, np.uint8)
    truth = np.repeat(current, 2, axis=1)  # two future frames; one pixel moves in the second
    truth[0, 1, 0, 0, 2] = 200
    prediction = truth.copy()
    prediction[0, 0] = 0  # wrong everywhere that holds still: not counted
    prediction[0, 1, 0, 0] = (100, 100, 190)  # off by 10 grey levels where it moves
    got = wm_eval.psnr_where_it_moves(prediction, truth, current)
    np.testing.assert_allclose(got, 10 * np.log10(255.0**2 / (100.0 / 3)))
    copied = np.broadcast_to(current, truth.shape)
    np.testing.assert_allclose(
        wm_eval.psnr_where_it_moves(copied, truth, current),
        10 * np.log10(255.0**2 / 3333.33),
        rtol=1e-4,
    )
    assert wm_eval.psnr_where_it_moves(current, current, current) is None


def test_windows_hold_out_the_newest_episode_and_carry_instructions(collected):
    config, workdir = collected
    dirs = workdir_lib.world_model_training_dirs(workdir, 0)
    assert dirs == [os.path.join(workdir, "demos"), os.path.join(workdir, "iter_00", "real")]
    layout = rlds_read.open_dataset(dirs[-1])
    heldout = wm.heldout_episodes(dirs[-1], 1)
    assert heldout == [(layout.shard_paths[-1], layout.shard_lengths[-1] - 1)]
    model_cfg = wm.model_config(config)
    size = wm.pixel_size(model_cfg)
    batches = wm.world_model_windows(
        config,
        mixture.real_and_droid_sources(dirs, config.data.droid_path, config.data.droid_weight),
        batch_size=2,
        seed=0,
        image_size=size,
        exclude=heldout,
    )
    try:
        batch = next(batches)
    finally:
        batches.close()
    assert batch["instruction"].shape == (2,)
    text = wm.TextEmbeddings(model_cfg.text_dim)
    host = wm.world_model_host_fn(text)(batch)
    assert host["frames"].shape == (2, 11, 3, *size, 3) and host["frames"].dtype == np.uint8
    assert host["poses"].shape == (2, 11, 7)
    assert host["text_embeds"].shape == (2, model_cfg.text_dim)
    assert wm_codec.vae_clips(batch)["clips"].shape == (6, 5, *size, 3)
    check = wm_eval.evaluation_windows(config, heldout, dirs[-1], 2, size)
    assert check["frames"].shape == (2, 11, 3, *size, 3)
    assert len(check["instructions"]) == 2


@pytest.fixture(scope="module")
def trained(collected):
    config, workdir = collected
    config.world_model.train.steps = 6
    config.world_model.train.learning_rate = 1e-3
    summary = pipeline.run_phase("train_world_model", config, workdir, iteration=0)
    return config, workdir, summary


@pytest.mark.slow  # VAE + world model compiles, sampler: ~4 min on 2 shared CPU cores
def test_phase_trains_checkpoints_and_reports_the_prediction_check(trained):
    config, workdir, summary = trained
    directory = workdir_lib.checkpoint_dir(workdir, "world_model", 0)
    assert sorted(int(d) for d in os.listdir(directory) if d.isdigit()) == [2, 4, 6]
    assert sorted(
        int(d) for d in os.listdir(workdir_lib.checkpoint_dir(workdir, "vae")) if d.isdigit()
    ) == [
        2,
        4,
    ]
    assert summary["step"] == 6 and summary["init"] == "scratch" and summary["vae"] == "trained"
    assert summary["nonfinite_count"] == 0 and np.isfinite(summary["final_loss"])
    assert summary["vae_scaling_factor"] > 0 and summary["eval_heldout"]
    for key in ("psnr_prediction", "psnr_copy_current_frame", "psnr_vae_reconstruction"):
        assert np.isfinite(summary[key]) and summary[key] > 0
    if summary["psnr_copy_moving"] is not None:  # tiny clips can hold still
        assert summary["psnr_copy_moving"] < summary["psnr_copy_current_frame"]
    with open(os.path.join(directory, wm.TEXT_FILE)) as f:
        vectors = json.load(f)["vectors"]  # the scoop task's instruction variants seen
    assert vectors
    for instruction, vector in vectors.items():
        np.testing.assert_allclose(vector, wm.TextEmbeddings.seeded_vector(instruction, 16))
    # state.json: a rerun is a no-op.
    mtime = os.path.getmtime(os.path.join(directory, "metrics.jsonl"))
    assert pipeline.run_phase("train_world_model", config, workdir, iteration=0) == summary
    assert os.path.getmtime(os.path.join(directory, "metrics.jsonl")) == mtime
    with open(os.path.join(workdir, "state.json")) as f:
        assert json.load(f)["iter_00"]["train_world_model"]["step"] == 6


@pytest.mark.slow
def test_training_lowers_the_loss_on_a_fixed_batch(trained):
    """The per-step loss is dominated by the sampled noise level at batch 2; the fair check is
    the same batch with the same noise keys, at the initial and at the trained weights."""
    config, workdir, _ = trained
    loaded = wm.load_world_model(config, workdir_lib.checkpoint_dir(workdir, "world_model", 0))
    model, vae, spec, size = loaded.model, loaded.vae, loaded.spec, loaded.pixel_size
    model_cfg = model.config
    assert model_cfg.vae.scaling_factor == spec["scaling_factor"]
    assert spec["pose_normalization"] == "sim"
    assert model_cfg.pose_angle_center == cw.SIM_POSE_ANGLE_CENTER
    seed = workdir_lib.phase_seed(config.seed, "train_world_model", 0)
    # The phase's own starting point (scratch UNet from its seed, the trained VAE).
    initial = wm.initial_params(spec, model, vae, size, seed)(None)
    trained_params = loaded.params
    dirs = workdir_lib.world_model_training_dirs(workdir, 0)
    sources = mixture.real_and_droid_sources(dirs, config.data.droid_path, config.data.droid_weight)
    batches = wm.world_model_windows(config, sources, batch_size=2, seed=7, image_size=size)
    try:
        batch = wm.world_model_host_fn(wm.TextEmbeddings(model_cfg.text_dim))(next(batches))
    finally:
        batches.close()
    loss_fn = jax.jit(wm.world_model_loss_fn(model, vae, "float32"))
    keys = jax.random.split(jax.random.key(3), 8)

    def mean_loss(params):
        return np.mean([float(loss_fn(params, batch, k)[0]) for k in keys])

    before, after = mean_loss(initial), mean_loss(trained_params)
    assert after < before, (before, after)


@pytest.mark.slow
def test_iteration_1_starts_from_iteration_0(trained, record_real_rollouts):
    config, workdir, _ = trained
    config.world_model.eval_windows = 0
    # A fine-tune reads its inputs as its start was trained on them, whatever the config says.
    config.world_model.pose_normalization = "droid"
    config.world_model.pose_maps = "sim"
    record_real_rollouts(config, workdir, 1)
    summary = pipeline.run_phase("train_world_model", config, workdir, iteration=1)
    assert summary["init"] == "previous_iteration" and summary["vae"] == "trained"
    spec = wm.read_spec(workdir_lib.checkpoint_dir(workdir, "world_model", 1))
    assert spec["pose_normalization"] == "sim" and spec["pose_maps"] == ""
    assert summary["dataset_dirs"][-1] == os.path.join(workdir, "iter_01", "real")
    assert summary["step"] == 6 and np.isfinite(summary["final_loss"])


@pytest.mark.slow
def test_fit_benchmark_scores_trained_and_unseen_windows(trained):
    """benchmarks/sim_world_model_fit.py on this run: both window sets with both samplers, finite
    PSNRs, and the error ratio on moving pixels consistent with their two PSNRs."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks"))
    import sim_world_model_fit

    config, workdir, _ = trained
    picture = os.path.join(workdir, "fit.png")
    rows = sim_world_model_fit.fit_rows(config, workdir, 0, num_windows=2, figure_path=picture)
    with open(picture, "rb") as f:
        png = f.read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # 2 windows in rows of 4 pictures (current, truth, 2 samplers), 3 views stacked, 2x, 4 px gaps
    h, w = wm.load_world_model(
        config, workdir_lib.checkpoint_dir(workdir, "world_model", 0)
    ).pixel_size
    assert struct.unpack(">II", png[16:24]) == (4 * 2 * w + 3 * 4, 2 * 2 * 3 * h + 4)
    assert [(r["windows"], r["sampler"].split(":")[0]) for r in rows] == [
        ("trained on", "preset"),
        ("trained on", "mean"),
        ("never seen", "preset"),
        ("never seen", "mean"),
    ]
    for preset, mean in (rows[:2], rows[2:]):  # one set's windows: the same copy, two samplers
        assert preset["copy_all"] == mean["copy_all"] and preset["all"] != mean["all"]
    for r in rows:
        assert r["n"] == 2 and np.isfinite(r["all"]) and np.isfinite(r["copy_all"])
        if r["moving"] is not None:
            expected = 10 ** ((r["copy_moving"] - r["moving"]) / 10)
            np.testing.assert_allclose(r["mse_ratio"], expected)
