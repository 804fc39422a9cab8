"""Throughput of the simulated DROID station, and the scripted experts' success rates.

  python benchmarks/sim.py                       # step/render table (one core)
  python benchmarks/sim.py --experts --episodes=20 --noise=0,0.3 --workers=2
  python benchmarks/sim.py --adversaries --episodes=20 --workers=2

Table: station-steps per second for a batch of B stations on one process (physics of 16
substeps + three cameras at HxW), rendering either with one `mujoco.Renderer.render()` call per
camera (the baseline) or all cameras of all stations tiled into one framebuffer with one
read-back (what vlaw.sim does), plus physics alone. The ratio column is tiled / per-camera.
It also writes a few rendered frames as PNG under --frames_dir for a person to look at.

Expert sweep: success rate of each task's scripted expert at each noise level over seeds
0..episodes-1 (fresh layouts), at `sim.max_steps` (150) steps, physics only, in processes, and
the mean episode length at each noise level.

Adversary sweep: how often each trivial policy and each task's adversarial script
(vlaw/sim/adversaries.py) is labelled a success over the same seeds and steps (should be 0).
"""

import argparse
import collections
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from vlaw.data import droid  # noqa: E402
from vlaw.rollout.station import TaskSpec  # noqa: E402
from vlaw.sim import adversaries  # noqa: E402
from vlaw.sim.expert import ScriptedExpert  # noqa: E402
from vlaw.sim.render import add_decorations  # noqa: E402
from vlaw.sim.station import SimStation, SimStationBatch  # noqa: E402
from vlaw.sim.tasks import TASKS  # noqa: E402


def _random_actions(rng: np.random.Generator, batch_size: int) -> np.ndarray:
    actions = rng.uniform(-0.3, 0.3, (batch_size, 8))
    actions[:, 7] = rng.uniform(0, 1, batch_size)
    return actions


def time_batch(task: str, batch_size: int, size: tuple[int, int], steps: int, mode: str) -> float:
    """Station-steps per second: mode is 'tiled', 'per_camera' or 'physics'."""
    batch = SimStationBatch([task] * batch_size, *size)
    batch.reset([TaskSpec(task, seed) for seed in range(batch_size)])
    rng = np.random.default_rng(0)
    renderers = []
    if mode == "per_camera":
        renderers = [mujoco.Renderer(s.model, *size) for s in batch.stations]
        for renderer in renderers:
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
    start = time.perf_counter()
    for _ in range(steps):
        actions = _random_actions(rng, batch_size)
        for b, station in enumerate(batch.stations):
            station.apply_action(actions[b])
        if mode == "tiled":
            batch.render()
        elif mode == "per_camera":
            for station, renderer in zip(batch.stations, renderers):
                decorations = station.task.decorations()  # ink, as the tiled path draws it
                for camera in droid.CAMERA_NAMES:
                    renderer.update_scene(station.data, camera)
                    add_decorations(renderer.scene, decorations)
                    renderer.render()
    elapsed = time.perf_counter() - start
    for renderer in renderers:
        renderer.close()
    batch.close()
    return batch_size * steps / elapsed


def throughput_table(args) -> None:
    size = (args.height, args.width)
    print(f"## station-steps/s, task={args.task}, {size[0]}x{size[1]}, one process")
    print("| batch | physics only | per-camera render() | tiled (vlaw) | tiled / per-camera |")
    print("|---|---|---|---|---|")
    for batch_size in args.batch_sizes:
        steps = max(20, args.steps // batch_size)
        physics = time_batch(args.task, batch_size, size, steps, "physics")
        per_camera = time_batch(args.task, batch_size, size, steps, "per_camera")
        tiled = time_batch(args.task, batch_size, size, steps, "tiled")
        print(
            f"| {batch_size} | {physics:.0f} | {per_camera:.0f} | {tiled:.0f} "
            f"| {tiled / per_camera:.2f}x |"
        )


def write_frames(frames_dir: str, size: tuple[int, int]) -> None:
    """One tiled image per task (rows: reset and after 20 expert steps; columns: cameras)."""
    from PIL import Image

    os.makedirs(frames_dir, exist_ok=True)
    for task in TASKS:
        batch = SimStationBatch([task], *size)
        batch.reset([TaskSpec(task, 0)])
        rows = [np.concatenate(list(batch.stations[0].images.values()), axis=1)]
        expert = ScriptedExpert(batch.stations[0], noise=0.0)
        for _ in range(20):
            action = expert.act()
            if action is None:
                break
            batch.step(action[None])
        rows.append(np.concatenate(list(batch.stations[0].images.values()), axis=1))
        Image.fromarray(np.concatenate(rows, axis=0)).save(os.path.join(frames_dir, f"{task}.png"))
        batch.close()
    print(f"frames written to {frames_dir}")


def _expert_episode(job: tuple[str, float, int, int]) -> tuple[str, float, bool, int]:
    """One scripted-expert episode without rendering (success does not depend on pixels)."""
    task, noise, seed, max_steps = job
    station = SimStation(task)
    station.reset(TaskSpec(task, seed))
    expert = ScriptedExpert(station, noise=noise, seed=seed)
    steps = 0
    while steps < max_steps:
        action = expert.act()
        if action is None:
            break
        station.apply_action(action)
        steps += 1
    return task, noise, station.label(), steps


def expert_sweep(args) -> None:
    import multiprocessing

    noises = [float(n) for n in args.noise.split(",")]
    jobs = [
        (task, noise, seed, args.max_steps)
        for task in args.tasks
        for noise in noises
        for seed in range(args.episodes)
    ]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(_expert_episode, jobs, chunksize=4)
    print(f"## scripted-expert success rate ({args.episodes} seeds, {args.max_steps} steps)")
    header = [f"success, noise {n:g}" for n in noises] + [
        f"mean steps, noise {n:g}" for n in noises
    ]
    print("| task | " + " | ".join(header) + " |")
    print("|---|" + "---:|" * len(header))
    for task in args.tasks:
        runs = {
            noise: [(ok, n) for t, x, ok, n in results if t == task and x == noise]
            for noise in noises
        }
        rates = [f"{np.mean([ok for ok, _ in runs[noise]]):.2f}" for noise in noises]
        steps = [f"{np.mean([n for _, n in runs[noise]]):.0f}" for noise in noises]
        print(f"| {task} | " + " | ".join(rates + steps) + " |")


def _adversary_episode(job: tuple[str, str, int, int]) -> tuple[str, str, bool]:
    task, name, seed, max_steps = job
    success, _ = adversaries.run_policy(SimStation(task), name, seed, max_steps)
    return task, name, success


def adversary_sweep(args) -> None:
    import multiprocessing

    jobs = [
        (task, name, seed, args.max_steps)
        for task in args.tasks
        for name in adversaries.policies_for(task)
        for seed in range(args.episodes)
    ]
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        results = pool.map(_adversary_episode, jobs, chunksize=4)
    wins = collections.Counter((task, name) for task, name, success in results if success)
    print(
        f"## successes of trivial and adversarial policies (of {args.episodes} seeds, "
        f"{args.max_steps} steps)"
    )
    print("| task | " + " | ".join(adversaries.TRIVIAL) + " | the task's shortcuts |")
    print("|---|" + "---:|" * len(adversaries.TRIVIAL) + "---|")
    for task in args.tasks:
        trivial = [str(wins[task, name]) for name in adversaries.TRIVIAL]
        shortcuts = [
            f"{name} {wins[task, name]}"
            for name in adversaries.policies_for(task)
            if name not in adversaries.TRIVIAL
        ]
        print(f"| {task} | " + " | ".join(trivial) + " | " + ", ".join(shortcuts) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="stack", choices=sorted(TASKS))
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=160, help="station-steps per measurement")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--frames_dir", default="/tmp/vlaw_sim_frames")
    parser.add_argument("--experts", action="store_true", help="run the expert sweep instead")
    parser.add_argument(
        "--adversaries", action="store_true", help="run the trivial/adversarial policy sweep"
    )
    parser.add_argument("--tasks", nargs="+", default=sorted(TASKS))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--noise", default="0,0.3")
    parser.add_argument("--max_steps", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.experts:
        expert_sweep(args)
    elif args.adversaries:
        adversary_sweep(args)
    else:
        throughput_table(args)
        write_frames(args.frames_dir, (args.height * 2, args.width * 2))


if __name__ == "__main__":
    main()
