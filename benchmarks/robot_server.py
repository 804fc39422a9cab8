"""Policy server under load on loopback: request latency percentiles beside the model's step.

  python benchmarks/robot_server.py                          # tiny random-weight policy, CPU
  python benchmarks/robot_server.py --workdir=W --iteration=N   # a trained policy of a run

Serves the policy with `vlaw.robot.server.PolicyServer` (loaded and compiled first) and drives
it from `--clients` concurrent `vlaw.robot.client.PolicyClient`s on 127.0.0.1, each sending
`--requests` sequential DROID requests as openpi's stock client sends them (two 224x224 views,
joint and gripper positions, a prompt). Reports the round-trip latency percentiles, the
server-side inference time and, measured first, the model's own step (the policy called
directly on one observation). The same load against a policy that returns zeros isolates what
the wire and the server add. Without --workdir a tiny policy with random weights is made in a
temp dir (collect's iteration-0 demonstrations in the simulator, then train_policy's layout),
as tests/phases do: the step time is the model's, not a trained one's behaviour.
"""

import argparse
import os
import tempfile
import threading
import time

import numpy as np

from vlaw.robot.client import PolicyClient
from vlaw.robot.server import PolicyServer, warm_up
from vlaw.rollout.station import Observation


def _tiny_workdir() -> str:
    import flax.linen as nn
    import jax

    from vlaw import pipeline
    from vlaw.agents import policy as policy_lib
    from vlaw.config import experiment_config
    from vlaw.models.policy import pi05
    from vlaw.phases import train_policy

    workdir = tempfile.mkdtemp(prefix="robot_server_bench_")
    config = experiment_config(("stack",), "tiny")
    pipeline.run_phase("collect", config, workdir, iteration=0)
    spec, directory, _ = train_policy.prepare(config, workdir, 0)
    abstract = nn.unbox(pi05.abstract_params(policy_lib.model_config_from_spec(spec)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: (0.05 * rng.standard_normal(a.shape)).astype(a.dtype), abstract)
    policy_lib.save_policy(directory, params, spec=spec, step=1, ckpt_config=config.ckpt)
    return workdir


def _request(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "observation/exterior_image_1_left": rng.integers(0, 255, (224, 224, 3), np.uint8),
        "observation/wrist_image_left": rng.integers(0, 255, (224, 224, 3), np.uint8),
        "observation/joint_position": rng.uniform(-1, 1, 7),
        "observation/gripper_position": rng.uniform(0, 1, 1),
        "prompt": "stack the red cube on the blue cube",
    }


def _load(server: PolicyServer, clients: int, requests: int) -> dict:
    """Round trips (ms) and server-side inference (ms) of `clients` x `requests` requests."""
    latencies, infer_ms, errors = [], [], []
    lock = threading.Lock()

    def client(index: int) -> None:
        try:
            with PolicyClient(server.uri) as connection:
                for i in range(requests):
                    request = _request(1000 * index + i)
                    started = time.perf_counter()
                    reply = connection.infer(request)
                    elapsed = 1000 * (time.perf_counter() - started)
                    with lock:
                        latencies.append(elapsed)
                        infer_ms.append(reply["server_timing"]["infer_ms"])
        except Exception as error:  # reported, not hidden: a benchmark with errors is void
            errors.append(repr(error))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[:3]}")
    p = np.percentile(latencies, [50, 90, 99])
    return {
        "requests": len(latencies),
        "p50": p[0],
        "p90": p[1],
        "p99": p[2],
        "max": max(latencies),
        "infer_p50": float(np.median(infer_ms)),
        "throughput": len(latencies) / wall,
    }


def _step_time(policy, size: int, calls: int) -> list[float]:
    observation = Observation(
        images={
            name: np.zeros((size, size, 3), np.uint8)
            for name in ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
        },
        joint_position=np.zeros(7),
        gripper_position=np.zeros(1),
        cartesian_position=np.zeros(6),
        instruction="stack the red cube on the blue cube",
    )
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        policy([observation])
        times.append(1000 * (time.perf_counter() - started))
    return times


class ZeroPolicy:
    def __call__(self, observations, **unused):
        return np.zeros((len(observations), 15, 8), np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="")
    parser.add_argument("--iteration", type=int, default=0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=25)
    parser.add_argument("--step_calls", type=int, default=20)
    args = parser.parse_args()

    from vlaw import workdir as workdir_lib
    from vlaw.agents import policy as policy_lib

    workdir = args.workdir or _tiny_workdir()
    policy = policy_lib.load_policy(workdir_lib.checkpoint_dir(workdir, "policy", args.iteration))
    size = int(policy.config.image_size)
    compile_s = warm_up(policy, (size, size))
    step = _step_time(policy, size, args.step_calls)
    print(f"policy {policy.checkpoint}: image {size}, compile {compile_s:.1f} s")
    print(
        f"model step (direct call, 1 observation): median {np.median(step):.1f} ms, "
        f"p90 {np.percentile(step, 90):.1f} ms over {len(step)} calls"
    )
    print(
        "| policy | clients x requests | p50 ms | p90 ms | p99 ms | max ms | server infer p50 ms |"
        " requests/s |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, served in (("zeros (wire only)", ZeroPolicy()), ("tiny pi0.5", policy)):
        for clients in (1, args.clients):
            server = PolicyServer(served, image_size=(size, size), port=0).start_in_thread()
            try:
                r = _load(server, clients, args.requests)
            finally:
                server.stop()
            print(
                f"| {name} | {clients} x {args.requests} | {r['p50']:.1f} | {r['p90']:.1f} | "
                f"{r['p99']:.1f} | {r['max']:.1f} | {r['infer_p50']:.1f} | {r['throughput']:.1f} |"
            )
    print(f"cpu cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
