"""Algorithm 1 end to end: what the `loop` runs, in order, and the table it ends with.

    iteration 0 (warm start):  collect (demonstrations) -> train_policy (the base policy)
                               -> evaluate (the base policy)
    iteration k = 1 ... N:     collect (K real rollouts of policy k-1) -> train_world_model
                               (D_real, + lambda DROID, Eq. 2) -> train_reward (k = 1, or every
                               k with `loop.retrain_reward`) -> imagine (N per task) -> label
                               (Eq. 3) -> train_policy (Eq. 4) -> evaluate

N = `loop.iterations`. `config.method` picks the iteration's phases: "vlaw" (above) or a
baseline of `vlaw.baselines` ("filtered_bc": collect, train_policy, evaluate; "dsrl":
train_dsrl, evaluate). Iteration k here is the paper's iteration k: the first round of online
rollouts is iteration 1, and iteration 0 is §5.1's base policy (pi0.5 fine-tuned on the
demonstrations). `vlaw.pipeline.run_loop` runs this schedule phase by phase; each phase is
resumable and marked done in state.json, so killing the loop at any moment and running the
same command again finishes the run without redoing a finished phase.
"""

import os

import ml_collections

from vlaw import workdir as workdir_lib
from vlaw.baselines import dsrl, filtered_bc
from vlaw.data.atomic_json import read_json
from vlaw.eval.success import success_table
from vlaw.phases.evaluate import METRICS_FILE

WARM_START = ("collect", "train_policy", "evaluate")
ITERATION = (
    "collect",
    "train_world_model",
    "train_reward",
    "imagine",
    "label",
    "train_policy",
    "evaluate",
)


METHODS = {"vlaw": ITERATION, "filtered_bc": filtered_bc.ITERATION, "dsrl": dsrl.ITERATION}


def schedule(config: ml_collections.ConfigDict) -> list[tuple[int, str]]:
    """(iteration, phase) in the order the loop runs them, for `config.method`."""
    if config.method not in METHODS:
        raise ValueError(f"method={config.method!r}; choose one of {sorted(METHODS)}")
    plan = [(0, phase) for phase in WARM_START]
    for iteration in range(1, int(config.loop.iterations) + 1):
        plan += [(iteration, phase) for phase in METHODS[config.method]]
    return plan


def results_table(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Success per task with 95 % intervals: the base policy, then each iteration evaluated so
    far (from reports/iter_NN/metrics.json)."""
    rows = []
    for iteration in range(int(config.loop.iterations) + 1):
        path = workdir_lib.report_file(workdir, iteration, METRICS_FILE)
        if os.path.exists(path):
            metrics = read_json(path)
            rows.append((metrics["policy"], metrics["tasks"]))
    if not rows:
        return "no policy evaluated yet"
    return success_table(rows, list(config.tasks))
