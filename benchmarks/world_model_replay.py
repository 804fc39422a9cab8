"""World models side by side on the same held-out episodes: Table 1's action replay and event
confusion, each against its baseline (issue 13, item 4).

  python benchmarks/world_model_replay.py --episodes=runs/scoop_sim/iter_01/evaluate \\
      --reward=runs/scoop_sim/checkpoints/reward/iter_01 \\
      --world_model=loop=runs/scoop_sim/checkpoints/world_model/iter_01 \\
      --world_model=pretrained=runs/world_model_pretrain/checkpoints/world_model/iter_00

Every model is scored by `evaluate`'s own checks (`vlaw.phases.evaluate_report`) on the same
clips with the same noise:
- action replay: `--clips` clips of `--seconds` each, the recorded actions fed chunk by chunk;
  PSNR and SSIM of `evaluate.camera` against the recording, beside copying the start frame
  (what a model that draws nothing must beat);
- event confusion: `--clips` whole episodes replayed from their first frame, the reward model's
  P(yes) > alpha on the imagined video against the episode's recorded success (on the simulated
  station, the true outcome of those actions); kappa is the agreement beyond chance (0: none).
The config must be the one the models and the reward model were trained under (the preset's
architecture; `experiment_config(tasks, preset)`).
"""

import argparse
import json
import os
import tempfile
import time

import jax

from vlaw.agents import reward as reward_agent
from vlaw.agents import world_model as wm
from vlaw.config import experiment_config
from vlaw.phases import evaluate_report


def score_models(config, world_models: dict, episodes: str, reward_dir: str, seed: int) -> list:
    """One row per world model: the replay summary and the confusion counts."""
    scorer = reward_agent.load_reward_scorer(config, reward_dir) if reward_dir else None
    # The same keys for every model: the comparison sees the models, not the noise.
    replay_rng, confusion_rng = jax.random.split(jax.random.PRNGKey(seed))
    rows = []
    with tempfile.TemporaryDirectory() as figures_dir:
        for name, directory in world_models.items():
            world = wm.load_world_model(config, directory)
            start = time.time()
            replay = evaluate_report.action_replay_check(
                config, world, episodes, figures_dir, replay_rng
            )
            confusion = evaluate_report.event_confusion_check(
                config, world, scorer, episodes, figures_dir, confusion_rng
            )
            rows.append(
                {
                    "name": name,
                    "directory": directory,
                    "replay": replay.get("summary", replay),
                    "confusion": confusion.get("counts", confusion),
                    "seconds": time.time() - start,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", required=True, help="held-out RLDS episodes (evaluate's)")
    parser.add_argument(
        "--world_model",
        action="append",
        required=True,
        help="NAME=checkpoint dir (repeat for each model)",
    )
    parser.add_argument("--reward", default="", help="reward checkpoint dir for the confusion")
    parser.add_argument("--tasks", default="scoop", help="comma-separated, as the run's config")
    parser.add_argument("--preset", default="sim")
    parser.add_argument("--clips", type=int, default=16, help="replay and confusion clips")
    parser.add_argument("--seconds", type=float, default=5.0, help="replay length (Table 1: 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="", help="also write the rows here")
    args = parser.parse_args()

    world_models = {}
    for entry in args.world_model:
        name, sep, directory = entry.partition("=")
        if not sep or not name or not directory:
            parser.error(f"--world_model takes NAME=DIR, got {entry!r}")
        if not os.path.isdir(directory):
            parser.error(f"--world_model {name}: no directory {directory}")
        world_models[name] = directory
    config = experiment_config(tuple(args.tasks.split(",")), args.preset)
    config.evaluate.replay_clips = config.evaluate.confusion_clips = args.clips
    config.evaluate.replay_seconds = args.seconds
    config.evaluate.report_clips = 0
    rows = score_models(config, world_models, args.episodes, args.reward, args.seed)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)

    def fmt(value, digits=2):
        return "-" if value is None else f"{value:.{digits}f}"

    print(f"{args.episodes}, {args.clips} clips, {jax.devices()[0].platform}")
    print(
        f"| world model | PSNR {args.seconds:g} s | copy | SSIM | copy | TP | FN | FP | TN "
        "| accuracy | kappa | s |"
    )
    print("|" + "---|" * 12)
    for r in rows:
        s, c = r["replay"], r["confusion"]
        counts = [str(c.get(k, "-")) for k in ("tp", "fn", "fp", "tn")]
        print(
            f"| {r['name']} | {fmt(s.get('psnr'))} | {fmt(s.get('psnr_copy_start'))} | "
            f"{fmt(s.get('ssim'), 3)} | {fmt(s.get('ssim_copy_start'), 3)} | "
            + " | ".join(counts)
            + f" | {fmt(c.get('accuracy'))} | {fmt(c.get('kappa'))} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
