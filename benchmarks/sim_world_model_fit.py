"""A run's world model on windows it trained on and on windows it never saw: does it fail to
fit its training data (capacity, optimisation, conditioning) or fail to generalise? (issue 13,
item 4)

  python benchmarks/sim_world_model_fit.py --workdir=runs/scoop_sim --iteration=1
  python benchmarks/sim_world_model_fit.py --workdir=... --tasks=scoop --preset=tiny  # smoke

The run must have used `experiment_config(tasks, preset)` unchanged (the default first command
does). Windows: `--windows` spread evenly over the episodes the model trained on (its
datasets less its held-out episodes), and as many over episodes no trainer read (the iteration's
`evaluate` episodes, else the phase's held-out one). Each set is scored with the preset's sampler
and with the denoiser's one-step estimate from sigma_max (the model's mean prediction, what it
would regress to), as PSNR over every predicted pixel and over the pixels that move by more
than `prediction.MOVING_THRESHOLD` grey levels, beside copying the current frame. The last
column is the prediction's mean squared error on moving pixels over the copy's: below 1 means
the model moves the scene towards the truth.
"""

import argparse
import dataclasses
import os
import time

import jax
import numpy as np

from vlaw import workdir as workdir_lib
from vlaw.agents import world_model as wm
from vlaw.config import experiment_config
from vlaw.data import rlds_read
from vlaw.eval import images, prediction


def spread_episodes(
    dataset_dirs, count: int, exclude=()
) -> list[tuple[str, list[tuple[str, int]]]]:
    """Up to `count` episodes spread evenly over the datasets, as (dataset dir, episodes)."""
    excluded = {(str(p), int(i)) for p, i in exclude}
    pool = []
    for directory in dataset_dirs:
        layout = rlds_read.open_dataset(directory)
        for path, length in zip(layout.shard_paths, layout.shard_lengths, strict=True):
            pool += [(directory, (str(path), i)) for i in range(length)]
    pool = [entry for entry in pool if entry[1] not in excluded]
    if not pool:
        return []
    picks = np.unique(np.linspace(0, len(pool) - 1, min(count, len(pool))).round().astype(int))
    by_dir: dict[str, list] = {}
    for k in picks:
        directory, episode = pool[k]
        by_dir.setdefault(directory, []).append(episode)
    return list(by_dir.items())


def windows_of(config, groups, num_windows: int, image_size) -> dict:
    """`num_windows` windows over the (dataset dir, episodes) groups, one per episode or more."""
    per_group = max(1, -(-num_windows // max(1, len(groups))))
    parts = [
        prediction.evaluation_windows(config, episodes, directory, per_group, image_size)
        for directory, episodes in groups
    ]
    return {
        "frames": np.concatenate([p["frames"] for p in parts])[:num_windows],
        "poses": np.concatenate([p["poses"] for p in parts])[:num_windows],
        "instructions": sum((p["instructions"] for p in parts), [])[:num_windows],
    }


def score(trained, model_cfg, windows_, seed: int) -> dict:
    """The phase's own check (`prediction.evaluate_prediction`) with `model_cfg`'s sampler, plus
    the moving pixels' MSE ratio (prediction over copy) from their two PSNRs."""
    model = dataclasses.replace(trained.model, config=model_cfg)
    start = time.time()
    m = prediction.evaluate_prediction(
        model, trained.vae, trained.params, windows_, trained.text, seed
    )
    moving, copy_moving = m["psnr_prediction_moving"], m["psnr_copy_moving"]
    return {
        "all": m["psnr_prediction"],
        "copy_all": m["psnr_copy_current_frame"],
        "moving": moving,
        "copy_moving": copy_moving,
        "mse_ratio": None if moving is None else 10 ** ((copy_moving - moving) / 10),
        "seconds": time.time() - start,
    }


def figure(trained, samplers: dict, windows_: dict, seed: int, count: int = 4) -> np.ndarray:
    """A picture of `count` windows, one row each: the current frame, the truth at the chunk's
    last frame, then each sampler's prediction of it; the three cameras stacked, enlarged 2x."""
    windows_ = {k: v[:count] for k, v in windows_.items()}
    predictions = [
        prediction.predict_windows(
            dataclasses.replace(trained.model, config=model_cfg),
            trained.vae,
            trained.params,
            windows_,
            trained.text,
            seed,
        )
        for model_cfg in samplers.values()
    ]

    def stacked(views):  # (V, H, W, 3) -> (V*H, W, 3), enlarged
        return images.enlarge(np.concatenate(list(views), axis=0), 2 * len(views) * views.shape[1])

    first = predictions[0]  # current frame and truth are the same for every sampler
    rows = []
    for n in range(len(windows_["instructions"])):
        row = [stacked(first["current"][n, 0]), stacked(first["truth"][n, -1])]
        row += [stacked(p["predicted"][n, -1]) for p in predictions]
        rows.append(row)
    return images.tile(rows)


def fit_rows(
    config,
    workdir: str,
    iteration: int,
    num_windows: int,
    seed: int = 0,
    figure_path: str | None = None,
) -> list[dict]:
    """One row per (window set, sampler) for the world model of `iteration` in `workdir`;
    with `figure_path`, also `figure` of the trained-on windows written there as a PNG."""
    directory = workdir_lib.checkpoint_dir(workdir, "world_model", iteration)
    trained = wm.load_world_model(config, directory)
    spec, image_size = trained.spec, trained.pixel_size
    heldout = [tuple(e) for e in spec["heldout_episodes"]]
    unseen_dir = workdir_lib.evaluation_dir(workdir, iteration)
    if os.path.isdir(unseen_dir):
        unseen = spread_episodes([unseen_dir], num_windows)
    else:  # no evaluate yet: the phase's held-out episode
        newest = workdir_lib.newest_real_dir(workdir, iteration)
        unseen = [(newest, heldout)] if heldout and newest else []
    sets = {
        "trained on": spread_episodes(spec["dataset_dirs"], num_windows, exclude=heldout),
        "never seen": unseen,
    }
    preset = trained.model.config
    samplers = {
        f"preset: {preset.num_steps} steps to sigma {preset.sigma_min:g}": preset,
        "mean: 1 step from sigma_max": dataclasses.replace(preset, num_steps=1, max_guidance=1.0),
    }
    rows = []
    for set_name, groups in sets.items():
        if not groups:
            continue
        windows_ = windows_of(config, groups, num_windows, image_size)
        if figure_path and set_name == "trained on":
            images.write_png(figure_path, figure(trained, samplers, windows_, seed))
        for sampler_name, model_cfg in samplers.items():
            rows.append(
                {
                    "windows": set_name,
                    "n": len(windows_["instructions"]),
                    "sampler": sampler_name,
                    **score(trained, model_cfg, windows_, seed),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--iteration", type=int, default=1)
    parser.add_argument("--tasks", default="scoop", help="comma-separated, as the run's config")
    parser.add_argument("--preset", default="sim")
    parser.add_argument("--windows", type=int, default=24, help="windows per set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--figure",
        default="",
        help="PNG path: 4 trained-on windows, current frame, truth, each sampler's prediction",
    )
    args = parser.parse_args()

    config = experiment_config(tuple(args.tasks.split(",")), args.preset)
    rows = fit_rows(
        config, args.workdir, args.iteration, args.windows, args.seed, args.figure or None
    )

    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    print(
        f"world model of iteration {args.iteration} in {args.workdir}, {jax.devices()[0].platform}"
    )
    print(
        "| windows | n | sampler | PSNR all | copy all | PSNR moving | copy moving "
        "| MSE moving / copy's | s |"
    )
    print("|" + "---|" * 9)
    for r in rows:
        print(
            f"| {r['windows']} | {r['n']} | {r['sampler']} | {fmt(r['all'])} | "
            f"{fmt(r['copy_all'])} | {fmt(r['moving'])} | {fmt(r['copy_moving'])} | "
            f"{fmt(r['mse_ratio'], 3)} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
