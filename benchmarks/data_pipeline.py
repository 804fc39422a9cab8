"""RLDS data-pipeline throughput: examples per second for each window type.

Writes a synthetic dataset in DROID's schema (default 20 episodes x 100 steps at 64x64; with
--droid also 4 x 60 at DROID's 180x320), then measures on this machine:
- baseline: plain `tfds.builder_from_directory(...).as_dataset` iterating every step with its
  three images decoded (what a reader without vlaw gets);
- raw read: vlaw's record parser alone (no image decoding);
- the three window pipelines, steady state after warm-up.
The ratio column compares decoded images per second with the baseline's, since a world-model
example decodes 33 images, a policy example 3 and a reward example 16.

Run: python benchmarks/data_pipeline.py [--droid] [--seconds 4]
"""

import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from vlaw.data import (
    policy_windows,
    reward_windows,
    rlds_read,
    rlds_write,
    synthetic,
    world_model_windows,
)  # noqa: E402
from vlaw.data.tensorflow_cpu import import_tensorflow, import_tfds  # noqa: E402

HOST = {"process_index": 0, "process_count": 1}


def _timed(step, seconds: float, min_calls: int = 3) -> tuple[int, float]:
    """Calls `step` (returning a count) until `seconds` passed; returns (count, elapsed)."""
    count, start = 0, time.perf_counter()
    calls = 0
    while calls < min_calls or time.perf_counter() - start < seconds:
        count += step()
        calls += 1
    return count, time.perf_counter() - start


def _baseline_steps_per_second(dataset_dir: str, seconds: float, batch_size: int) -> float:
    """Plain TFDS at its best: episodes -> steps flattened inside the tf.data graph, images
    decoded by TFDS, batched, iterated as numpy (steady state, after warm-up)."""
    tf = import_tensorflow()
    tfds = import_tfds()
    steps = (
        tfds.builder_from_directory(dataset_dir)
        .as_dataset(split="train")
        .repeat()
        .flat_map(lambda episode: episode["steps"])
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    batches = iter(tfds.as_numpy(steps))
    for _ in range(3):
        next(batches)
    count, elapsed = _timed(lambda: len(next(batches)["is_first"]), seconds)
    return count / elapsed


def _raw_episodes_per_second(dataset_dir: str, seconds: float) -> float:
    layout = rlds_read.open_dataset(dataset_dir)
    episodes, elapsed = _timed(
        lambda: sum(1 for _ in rlds_read.iter_raw_episodes(layout)), seconds, min_calls=1
    )
    return episodes / elapsed


def _pipeline_examples_per_second(batches, seconds: float) -> float:
    for _ in range(3):  # warm-up: threads, tracing, shuffle buffer fill
        next(batches)
    batch_length = lambda batch: len(next(iter(batch.values())))
    examples, elapsed = _timed(lambda: batch_length(next(batches)), seconds)
    return examples / elapsed


def benchmark(dataset_dir: str, label: str, seconds: float, batch_size: int) -> list[tuple]:
    rows = []
    baseline = _baseline_steps_per_second(dataset_dir, seconds, batch_size)
    rows.append((label, "baseline: plain tfds as_dataset, steps", baseline, 3, 1.0))
    raw = _raw_episodes_per_second(dataset_dir, seconds)
    rows.append((label, "vlaw raw records (no decode), episodes", raw, 0, float("nan")))
    pipelines = {
        "world_model (6 hist + 1 + 4 fut, 3 views)": (
            lambda: world_model_windows.world_model_batches(
                dataset_dir, batch_size=batch_size, shuffle_buffer=1000, **HOST
            ),
            33,
        ),
        "policy (3 views, horizon 15)": (
            lambda: policy_windows.policy_batches(
                dataset_dir, batch_size=batch_size, shuffle_buffer=1000, **HOST
            ),
            3,
        ),
        "reward (16 frames)": (
            lambda: reward_windows.reward_batches(
                dataset_dir, batch_size=max(1, batch_size // 4), shuffle_buffer=16, **HOST
            ),
            16,
        ),
    }
    for name, (make, images_per_example) in pipelines.items():
        batches = make()
        rate = _pipeline_examples_per_second(batches, seconds)
        batches.close()
        ratio = rate * images_per_example / (baseline * 3)
        rows.append((label, name, rate, images_per_example, ratio))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--image", type=int, default=64, help="square image side")
    parser.add_argument("--droid", action="store_true", help="also 4 x 60 steps at 180x320")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="vlaw_data_bench_")
    import_tfds()  # keep TensorFlow's start-up out of the writer's timing
    try:
        configs = [(f"{args.image}x{args.image}", args.episodes, args.steps, (args.image,) * 2)]
        if args.droid:
            configs.append(("180x320", 4, 60, (180, 320)))
        rows, writes = [], []
        for label, num_episodes, num_steps, (height, width) in configs:
            dataset_dir = os.path.join(workdir, label)
            # Made before the clock starts: the writer's rate should not include them.
            episodes = [
                synthetic.synthetic_episode(i, num_steps, (height, width, 3), success=i % 2 == 0)
                for i in range(num_episodes)
            ]
            start = time.perf_counter()
            summary = rlds_write.write_episodes(dataset_dir, episodes, episodes_per_shard=4)
            elapsed = time.perf_counter() - start
            writes.append((label, summary["num_steps"] / elapsed, num_episodes, num_steps))
            rows += benchmark(dataset_dir, label, args.seconds, args.batch_size)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print("\n| images | writer | steps/s |")
    print("|---|---|---:|")
    for label, rate, num_episodes, num_steps in writes:
        print(f"| {label} | write_episodes ({num_episodes} x {num_steps} steps) | {rate:,.0f} |")
    print("\n| images | pipeline | examples/s | images/example | decoded images/s vs baseline |")
    print("|---|---|---:|---:|---:|")
    for label, name, rate, images, ratio in rows:
        ratio_text = "-" if ratio != ratio else f"{ratio:.2f}x"
        print(f"| {label} | {name} | {rate:,.0f} | {images} | {ratio_text} |")


if __name__ == "__main__":
    main()
