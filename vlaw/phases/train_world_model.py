"""Algorithm 1's world-model update: Ctrl-World on D_real (+ lambda * DROID), paper Eq. 1-2.

    train_world_model_phase(config, workdir, iteration)

Data. At iteration k the world model trains on the demonstrations and every
`iter_{0..k}/real` (`vlaw.workdir.world_model_training_dirs`), all of it, successes and
failures alike: a world model must predict what the robot's actions do, and failed rollouts
are exactly the states the policy visits (the paper's point in fine-tuning it on D_real;
`loop.world_model_online_rollouts=False` trains on the demonstrations alone, Table 1's
comparison). The
demos are real transitions of the same station and, at iteration 0, a good half of the data.
With `config.data.droid_path` set, windows are drawn from DROID with weight lambda =
`config.data.droid_weight` (Eq. 2 as a sampling mixture, `vlaw.data.mixture`). Windows are
Ctrl-World's (history every 4 or 8 frames, 15 % without history) at the model's pixel size
(tiny 8x16, sim 64x64, paper 192x320 as Ctrl-World). The last
`world_model.eval_holdout_episodes` episodes of the newest `iter_k/real` are held out of
training for the prediction check (`vlaw.eval.prediction`), whose figures join the summary.

Weights (`vlaw.workdir.model_start`, `vlaw.agents.world_model.initial_params`): resume (the
trainer restores the newest checkpoint of this iteration's directory with its data position);
else the previous iteration's checkpoint; else `world_model.train.init_from` (a vlaw run's
checkpoint directory, or Ctrl-World's released `checkpoint-10000.pt` converted by
`vlaw.convert.ctrl_world`); else a fresh UNet. A start from a vlaw checkpoint (either kind)
keeps the frame codec, residual scale and pose inputs it was trained with. With
`world_model.train.ema_decay` > 0 the check and imagination use the moving average of the
weights; the next iteration starts from the raw weights. The frame codec and its scales:
`vlaw.agents.world_model_codec`.
"""

from __future__ import annotations

import os
import time

import jax
import ml_collections
from absl import logging

from vlaw import workdir as workdir_lib
from vlaw.agents import world_model as wm
from vlaw.agents.world_model_codec import measure_residual_scale, prepare_vae
from vlaw.data import mixture, rlds_read
from vlaw.eval.prediction import evaluate_prediction, evaluation_windows
from vlaw.models.world_model import ctrl_world as cw
from vlaw.models.world_model.vae import TemporalVAE
from vlaw.train import trainer


def prepare(config, workdir, iteration, dataset_dirs, sources, exclude, *, progress) -> dict:
    """world_model.json of iteration `iteration`: start, frame codec and its scales, text
    embeddings. Written once per iteration, so a resumed run sees the setup it started with."""
    directory = workdir_lib.checkpoint_dir(workdir, "world_model", iteration)
    if os.path.exists(os.path.join(directory, wm.SPEC_FILE)):
        spec = wm.read_spec(directory)
        wm.check_space(config, spec, directory)
        return spec
    start = workdir_lib.model_start(
        workdir,
        "world_model",
        iteration,
        str(config.world_model.train.init_from or ""),
        is_trained=wm.is_trained,
    )
    init = {"kind": wm.resolve_start_kind(start.kind, start.path), "path": start.path}
    # A vlaw checkpoint (this run's previous iteration, or another run's world model through
    # init_from, e.g. one pre-trained on a large scripted corpus) was trained on its own codec
    # and inputs: its params carry that codec, and its UNet learned that residual scale and
    # pose scaling, so the fine-tune keeps them whatever this run's config or data say.
    fine_tune = init["kind"] in ("previous_iteration", "vlaw")
    if fine_tune:
        previous = wm.read_spec(init["path"])
        wm.check_space(config, previous, init["path"])
        vae_source = previous["vae"]  # the same frozen codec, carried in the params
    else:
        vae_source = prepare_vae(
            config,
            workdir_lib.checkpoint_dir(workdir, "vae"),
            sources,
            exclude,
            seed=workdir_lib.phase_seed(config.seed, "train_vae", 0),
            progress=progress,
        )
    base_scale = cw.CtrlWorldConfig.preset(config.world_model.variant).vae.scaling_factor
    scaling_factor = vae_source["scaling_factor"] or base_scale
    if fine_tune:
        residual_scale = previous.get("residual_scale", 0.0)
    elif config.world_model.diffuse_residuals:
        residual_scale = measure_residual_scale(
            config,
            vae_source,
            scaling_factor,
            sources,
            exclude,
            seed=workdir_lib.phase_seed(config.seed, "residual_scale", 0),
        )
    else:
        residual_scale = 0.0

    def model_input(key: str, before_the_key_existed: str) -> str:
        """A fine-tune keeps the inputs its start was trained on; else the config's."""
        if fine_tune:
            return previous.get(key, before_the_key_existed)
        return str(config.world_model[key])

    spec = {
        "variant": str(config.world_model.variant),
        "iteration": iteration,
        "init": init,
        "vae": vae_source,
        "scaling_factor": scaling_factor,
        "residual_scale": residual_scale,
        "pose_normalization": model_input("pose_normalization", "droid"),
        "pose_maps": model_input("pose_maps", ""),
        "text_embeddings": "clip" if config.world_model.clip_path else "seeded_random",
        "dataset_dirs": list(dataset_dirs),
        "droid_path": str(config.data.droid_path or ""),
        "droid_weight": float(config.data.droid_weight),
        "heldout_episodes": [list(e) for e in exclude],
        "ema_decay": float(config.world_model.train.ema_decay),
    }
    wm.write_spec(directory, spec)  # last: its presence means "prepared"
    return spec


def train_world_model_phase(
    config: ml_collections.ConfigDict,
    workdir: str,
    iteration: int,
    *,
    stop_at_step: int | None = None,
    progress: bool = True,
) -> dict:
    """Algorithm 1's world-model update (see the module docstring). Returns the summary.

    `stop_at_step` ends the call early with a checkpoint, as a preemption would; calling again
    resumes exactly.
    """
    wm.check_mesh_batch(config)
    w = config.world_model
    dataset_dirs = workdir_lib.world_model_training_dirs(
        workdir, iteration, online_rollouts=bool(config.loop.world_model_online_rollouts)
    )
    if not dataset_dirs:
        raise FileNotFoundError(
            f"train_world_model: no dataset under {workdir} (demos, iter_NN/real); run the "
            "collect phase first"
        )
    # The check's episodes come from the newest real rollouts even when the model trains on
    # the demonstrations alone (loop.world_model_online_rollouts): both variants are scored
    # on the states the policy actually visits.
    newest_real = workdir_lib.newest_real_dir(workdir, iteration)
    exclude = wm.heldout_episodes(newest_real, int(w.eval_holdout_episodes))
    sources = mixture.real_and_droid_sources(
        dataset_dirs, config.data.droid_path, config.data.droid_weight
    )
    spec = prepare(config, workdir, iteration, dataset_dirs, sources, exclude, progress=progress)
    directory = workdir_lib.checkpoint_dir(workdir, "world_model", iteration)

    model_cfg = wm.model_config_from_spec(config, spec)
    model = cw.CtrlWorld(model_cfg)
    vae = TemporalVAE(model_cfg.vae)
    image_size = wm.pixel_size(model_cfg)
    seed = workdir_lib.phase_seed(config.seed, "train_world_model", iteration)
    text = wm.TextEmbeddings(
        model_cfg.text_dim, str(w.clip_path or ""), os.path.join(directory, wm.TEXT_FILE)
    )
    batches = wm.world_model_windows(
        config,
        sources,
        batch_size=int(w.train.batch_size),
        seed=seed,
        image_size=image_size,
        exclude=exclude,
    )
    start = time.time()
    try:
        state = trainer.train(
            w.train,
            config.ckpt,
            config.mesh,
            workdir=directory,
            init_fn=wm.world_model_init_fn(model, vae, image_size),
            loss_fn=wm.world_model_loss_fn(model, vae, w.train.compute_dtype),
            batches=batches,
            host_fn=wm.world_model_host_fn(text),
            initial_params=wm.initial_params(spec, model, vae, image_size, seed),
            trainable=lambda path, leaf: path.startswith("world_model/"),
            seed=seed,
            progress=progress,
            stop_at_step=stop_at_step,
        )
    finally:
        batches.close()
    train_seconds = time.time() - start
    text.save()
    step = int(jax.device_get(state.step))
    losses = [entry["loss"] for entry in trainer.read_metrics(directory)]
    summary = {
        "checkpoint": directory,
        "step": step,
        "init": spec["init"]["kind"],
        "vae": spec["vae"]["kind"],
        "vae_scaling_factor": spec["scaling_factor"],
        "text_embeddings": spec["text_embeddings"],
        "dataset_dirs": dataset_dirs,
        "co_trained_with_droid": bool(config.data.droid_path),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "nonfinite_count": int(jax.device_get(state.nonfinite_count)),
        "train_seconds": round(train_seconds, 2),
        "heldout_episodes": len(exclude),
        # Unreadable records skipped (data.skip_corrupt), counted on every pass over the data.
        "skipped_corrupt_records": batches.read_report.num_skipped,
    }
    if spec["vae"].get("seconds") is not None:
        summary["vae_train_seconds"] = spec["vae"]["seconds"]
        summary["vae_final_mse"] = spec["vae"].get("final_mse")
    if stop_at_step is not None and step < int(w.train.steps):
        return summary
    if int(w.eval_windows) > 0:
        start = time.time()
        episodes = exclude or _last_episode(newest_real)
        eval_windows = evaluation_windows(
            config, episodes, newest_real, int(w.eval_windows), image_size
        )
        params = jax.device_get(state.params if state.ema_params is None else state.ema_params)
        # One device: the sampler's batch (N windows x 2 for guidance) is not the train batch.
        with jax.default_device(jax.devices()[0]):
            params = jax.device_put(params, jax.devices()[0])
            metrics = evaluate_prediction(model, vae, params, eval_windows, text, seed)
        summary.update(metrics)
        summary["eval_heldout"] = bool(exclude)
        summary["eval_seconds"] = round(time.time() - start, 2)
    logging.info("train_world_model: %s", summary)
    return summary


def _last_episode(dataset_dir: str) -> list[tuple[str, int]]:
    """The dataset's last episode (the check runs on training data when none was held out)."""
    layout = rlds_read.open_dataset(dataset_dir)
    return [(layout.shard_paths[-1], layout.shard_lengths[-1] - 1)]
