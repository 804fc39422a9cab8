"""Throughput of the simulated DROID station, and the scripted experts' success rates.

  python benchmarks/sim.py                       # step/render table (one core)
  python benchmarks/sim.py --experts --episodes=20 --noise=0,0.3 --workers=2

Table: station-steps per second for a batch of B stations on one process (physics of 16
substeps + three cameras at HxW), rendering either with one `mujoco.Renderer.render()` call per
camera (the baseline) or all cameras of all stations tiled into one framebuffer with one
read-back (what vlaw.sim does), plus physics alone. The ratio column is tiled / per-camera.
It also writes a few rendered frames as PNG under --frames_dir for a person to look at.

Expert sweep: success rate of each task's scripted expert at each noise level over seeds
0..episodes-1 (fresh layouts), at `sim.max_steps` (150) steps, physics only, in processes.
"""

import argparse
import os
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from vlaw.data import droid  # noqa: E402
from vlaw.rollout.station import TaskSpec  # noqa: E402
from vlaw.sim.render import add_decorations  # noqa: E402
from vlaw.sim.station import SimStationBatch  # noqa: E402
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

    from vlaw.sim.expert import ScriptedExpert

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
    from vlaw.sim.expert import ScriptedExpert
    from vlaw.sim.station import SimStation

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
    print("| task | " + " | ".join(f"noise {n:g}" for n in noises) + " | mean steps |")
    print("|---|" + "---|" * (len(noises) + 1))
    for task in args.tasks:
        rates = [
            np.mean([ok for t, n, ok, _ in results if t == task and n == noise]) for noise in noises
        ]
        steps = np.mean([length for t, _, _, length in results if t == task])
        print(f"| {task} | " + " | ".join(f"{r:.2f}" for r in rates) + f" | {steps:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="stack", choices=sorted(TASKS))
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--steps", type=int, default=160, help="station-steps per measurement")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--frames_dir", default="/tmp/vlaw_sim_frames")
    parser.add_argument("--experts", action="store_true", help="run the expert sweep instead")
    parser.add_argument("--tasks", nargs="+", default=sorted(TASKS))
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--noise", default="0,0.3")
    parser.add_argument("--max_steps", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.experts:
        expert_sweep(args)
    else:
        throughput_table(args)
        write_frames(args.frames_dir, (args.height * 2, args.width * 2))


if __name__ == "__main__":
    main()
