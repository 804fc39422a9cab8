"""The one owner of a run directory: where every artifact of every iteration lives, which
datasets each phase reads, where each model starts, the phases' seeds, and atomic JSON.

    workdir/
      config.json                      the resolved configuration (launch.py)
      state.json                       which phases of which iteration are done (pipeline)
      demos/                           warm-start demonstrations (RLDS), iteration 0
      iter_NN/real/                    `collect`'s rollouts of iteration NN >= 1 (RLDS)
      iter_NN/synthetic/               `imagine`'s rollouts, scored in place by `label`
      iter_NN/evaluate/                `evaluate`'s rollouts of iteration NN's policy
      iter_NN/reward_replays/          `train_reward`'s world-model replays of its episodes
      checkpoints/policy/iter_NN/      `train_policy` (orbax steps + policy.json, ...)
      checkpoints/world_model/iter_NN/ `train_world_model` (+ world_model.json, ...)
      checkpoints/vae/                 the tiny/sim VAE (latent space only), trained once
      checkpoints/reward/iter_NN/      `train_reward` (iteration 1; later ones reuse it)
      checkpoints/dsrl/iter_NN/        `train_dsrl` (method "dsrl": SAC state, replay, dsrl.json)
      assets/                          files a run makes once (the small policy tokenizer)
      reports/iter_NN/                 `evaluate`'s metrics, world-model checks, report.html
      reports/index.html               links every iteration's report

A study (`vlaw.study`) holds one such run directory per (task, seed, method):

    study_dir/
      runs/<task>/seed_<S>/base/       the warm start alone (iteration 0), computed once
      runs/<task>/seed_<S>/<method>/   a normal run directory; its iteration-0 artifacts
                                       (`warm_start_paths`) hard-linked from base/
      reports/study/                   table.md, table.json, the Figure 7 chart, ablations

Phases read and write the run directory through this module only, so "which data, which
weights, which seed for phase X at iteration k" has one answer, and its JSON files are written
atomically (`write_json`, `read_json`). Nothing here imports JAX.
"""

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np

# The run directory's JSON files are written and read through these (atomic, named errors).
from vlaw.data.atomic_json import JsonFileError, read_json, write_json  # noqa: F401
from vlaw.rollout.station import TaskSpec

DEMOS, REAL, SYNTHETIC, EVALUATE = "demos", "real", "synthetic", "evaluate"
REWARD_REPLAYS = "reward_replays"
MODELS = ("policy", "world_model", "reward", "vae", "dsrl")


# --------------------------------------------------------------------------------------------
# Paths.


def iteration_dir(workdir: str, iteration: int) -> str:
    return os.path.join(workdir, f"iter_{iteration:02d}")


def demos_dir(workdir: str) -> str:
    return os.path.join(workdir, DEMOS)


def real_dir(workdir: str, iteration: int) -> str:
    return os.path.join(iteration_dir(workdir, iteration), REAL)


def synthetic_dir(workdir: str, iteration: int) -> str:
    return os.path.join(iteration_dir(workdir, iteration), SYNTHETIC)


def reward_replays_dir(workdir: str, iteration: int) -> str:
    """`train_reward`'s replays of its training episodes in iteration NN's world model."""
    return os.path.join(iteration_dir(workdir, iteration), REWARD_REPLAYS)


def evaluation_dir(workdir: str, iteration: int) -> str:
    """`evaluate`'s episodes of iteration NN's policy (recorded, never trained on)."""
    return os.path.join(iteration_dir(workdir, iteration), EVALUATE)


def assets_dir(workdir: str) -> str:
    return os.path.join(workdir, "assets")


def reports_dir(workdir: str, iteration: int) -> str:
    return os.path.join(workdir, "reports", f"iter_{iteration:02d}")


def report_file(workdir: str, iteration: int, name: str) -> str:
    """A file of iteration NN's report (metrics.json, world_model.json, report.html, ...)."""
    return os.path.join(reports_dir(workdir, iteration), name)


def reports_index(workdir: str) -> str:
    """The run's page linking every iteration's report.html."""
    return os.path.join(workdir, "reports", "index.html")


def report_iterations(workdir: str) -> list[int]:
    """The iterations that have a reports/iter_NN directory, in order."""
    root = os.path.join(workdir, "reports")
    names = os.listdir(root) if os.path.isdir(root) else []
    return sorted(int(n[5:]) for n in names if n.startswith("iter_") and n[5:].isdigit())


def checkpoint_dir(workdir: str, model: str, iteration: int | None = None) -> str:
    """`checkpoints/<model>/iter_NN` for the per-iteration models (policy, world model, reward);
    `checkpoints/vae` for the tiny/sim VAE, which a run trains once."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; one of {MODELS}")
    base = os.path.join(workdir, "checkpoints", model)
    if model == "vae":
        return base
    if iteration is None:
        raise ValueError(f"the {model} has one checkpoint directory per iteration: pass it")
    return os.path.join(base, f"iter_{iteration:02d}")


# --------------------------------------------------------------------------------------------
# Which datasets each phase reads at iteration k.


def _existing(candidates: Sequence[str]) -> list[str]:
    return [d for d in candidates if os.path.isdir(d)]


def policy_training_dirs(workdir: str, iteration: int, *, real_rollouts: bool = True) -> list[str]:
    """D_real+ and D_syn+ so far (Eq. 4 weighs each episode): demos, then iter_00/real,
    iter_00/synthetic, ..., iter_k/synthetic; those that exist. `real_rollouts=False` leaves
    every iter_NN/real out (Figure 9's ablation: demos and synthetic data only)."""
    candidates = [demos_dir(workdir)]
    for i in range(iteration + 1):
        candidates += [real_dir(workdir, i)] if real_rollouts else []
        candidates += [synthetic_dir(workdir, i)]
    return _existing(candidates)


def world_model_training_dirs(
    workdir: str, iteration: int, *, online_rollouts: bool = True
) -> list[str]:
    """Every real transition so far, successes and failures alike: demos, then iter_00/real
    ... iter_k/real; those that exist. `online_rollouts=False`: the demos alone (Table 1's
    "expert rollout" world model)."""
    candidates = [demos_dir(workdir)]
    if online_rollouts:
        candidates += [real_dir(workdir, i) for i in range(iteration + 1)]
    return _existing(candidates)


def newest_real_dir(workdir: str, iteration: int) -> str | None:
    """The newest real dataset at iteration k (iter_k/real ... iter_00/real, else the demos),
    or None: where the world model's held-out check draws its episodes, whatever it trains on."""
    found = world_model_training_dirs(workdir, iteration)
    return found[-1] if found else None


def reward_training_dirs(workdir: str, iteration: int, *, include_demos: bool) -> list[str]:
    """D_real's labelled episodes so far (the iter_NN/real that exist up to k), demos first
    when `include_demos`. This iteration's real rollouts must exist."""
    if not os.path.isdir(real_dir(workdir, iteration)):
        raise FileNotFoundError(
            f"train_reward needs labelled episodes; {real_dir(workdir, iteration)} does not "
            f"exist (run the collect phase of iteration {iteration} first)"
        )
    candidates = [demos_dir(workdir)] if include_demos else []
    candidates += [real_dir(workdir, i) for i in range(iteration + 1)]
    return _existing(candidates)


def newest_checkpoint_dir(
    workdir: str, model: str, iteration: int, is_trained: Callable[[str], bool]
) -> str | None:
    """The newest trained per-iteration checkpoint directory of `model` at or before
    `iteration` (the reward model of iteration 1 labels every later iteration unless it was
    retrained), or None."""
    for i in range(iteration, -1, -1):
        directory = checkpoint_dir(workdir, model, i)
        if is_trained(directory):
            return directory
    return None


def imagine_start_dirs(workdir: str, iteration: int) -> list[str]:
    """Where imagined rollouts start, in order of preference: this iteration's real rollouts,
    else the demonstrations."""
    return [real_dir(workdir, iteration), demos_dir(workdir)]


# --------------------------------------------------------------------------------------------
# A study: runs of several methods sharing one warm start.

BASE_RUN = "base"  # the study's warm-start run (iteration 0 only), one per (task, seed)


def study_run_dir(study_dir: str, task: str, seed: int, name: str) -> str:
    """The run directory of one (task, seed, method) of a study; name BASE_RUN: the warm
    start they share."""
    return os.path.join(study_dir, "runs", task, f"seed_{seed}", name)


def study_reports_dir(study_dir: str) -> str:
    return os.path.join(study_dir, "reports", "study")


def warm_start_paths(workdir: str) -> list[str]:
    """Iteration 0's artifacts: the demonstrations, the base policy (with the assets its
    tokenizer came from) and its evaluation. Every method starts from them (`loop.WARM_START`)
    and no later phase writes into them."""
    return [
        demos_dir(workdir),
        assets_dir(workdir),
        checkpoint_dir(workdir, "policy", 0),
        iteration_dir(workdir, 0),
        reports_dir(workdir, 0),
    ]


def link_tree(source: str, destination: str) -> None:
    """`destination` as a copy of the directory `source` whose files are hard links (a copy
    where the filesystem refuses one): no extra space, and the copy outlives the source.
    Built beside `destination`, then renamed: it appears whole or not at all. Safe to share
    because the run directory's files are never rewritten in place (JSON and datasets are
    replaced by rename, checkpoints are new step directories)."""
    parent = os.path.dirname(destination)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.", dir=parent)
    target = os.path.join(staging, "tree")

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError as error:
            if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            shutil.copy2(src, dst)

    try:
        shutil.copytree(source, target, copy_function=link)
        os.rename(target, destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Where a model starts at iteration k.


@dataclasses.dataclass(frozen=True)
class Start:
    """Where a model's weights come from before its first step of an iteration.

    kind: "previous_iteration" (this run's checkpoint of iteration k - 1), "init_from" (the
    config's `<model>.train.init_from`: another vlaw run, or an external checkpoint its
    runtime module converts) or "scratch". Resuming an interrupted iteration is separate and
    always wins (the trainer restores the iteration's own newest checkpoint).
    """

    kind: str
    path: str = ""


def model_start(
    workdir: str,
    model: str,
    iteration: int,
    init_from: str,
    *,
    is_trained: Callable[[str], bool],
) -> Start:
    """The previous iteration's checkpoint of `model`, else `init_from`, else scratch.

    `is_trained(directory)` says whether a checkpoint directory holds a usable model (its
    runtime module knows: a committed step and the files the model is loaded with)."""
    if iteration > 0:
        previous = checkpoint_dir(workdir, model, iteration - 1)
        if is_trained(previous):
            return Start("previous_iteration", previous)
    if init_from:
        if not os.path.exists(init_from):
            raise FileNotFoundError(
                f"{model}.train.init_from={init_from!r} does not exist; fix the path or set it "
                "to '' to start from scratch"
            )
        return Start("init_from", os.path.abspath(init_from))
    return Start("scratch")


# --------------------------------------------------------------------------------------------
# Seeds: one named stream per phase, all in this table.

# phase -> the SeedSequence entropy after the run's seed; the iteration is appended. The
# numbers are those of the first release, so runs reproduce across the move to this module.
_SEED_STREAMS = {
    "train_policy": (4,),
    "train_world_model": (5, 2),
    "train_vae": (5, 1),  # iteration 0 only: the VAE is trained once
    "residual_scale": (5, 3),  # iteration 0 only: measured once, carried forward
    "imagine": (6,),
    "evaluate": (7,),  # the evaluated policy's sampling noise
    # evaluate's world-model checks: action replay, event confusion, policies in imagination
    "evaluate_world_model": (7, 1),
    "train_dsrl": (8, 1),  # method "dsrl": SAC initialisation, updates and replay sampling
    "dsrl_explore": (8, 2),  # method "dsrl": the noise its rollouts explore with
    "reward_replays": (9,),  # train_reward's world-model replays of its training episodes
}
# Layout seeds of station episodes, one stream per purpose (`episode_seed`).
EPISODE_STREAMS = {"demo": 1, "real": 2, "evaluate": 3}


def phase_seed(root_seed: int, phase: str, iteration: int) -> int:
    """A non-negative int32 seed for (run, phase, iteration): iterations draw different noise
    and data orders, phases never share a stream.

    `train_reward` uses the run's seed itself (it trains once, at iteration 0), and the policy
    that `collect` rolls out samples with seed + iteration."""
    if phase == "train_reward":
        return int(root_seed)
    if phase == "collect_policy":
        return int(root_seed) + iteration
    if phase not in _SEED_STREAMS:
        raise ValueError(f"no seed stream for phase {phase!r}")
    sequence = np.random.SeedSequence([int(root_seed), *_SEED_STREAMS[phase], iteration])
    return int(sequence.generate_state(1)[0] >> 1)


def task_specs(config, stream: str, iteration: int, per_task: int) -> list[TaskSpec]:
    """`per_task` station resets for each task of the run, seeded from `stream`."""
    return [
        TaskSpec(task, episode_seed(config.seed, stream, task, iteration, i))
        for task in config.tasks
        for i in range(per_task)
    ]


def episode_seed(root_seed: int, stream: str, task: str, iteration: int, index: int) -> int:
    """The station-reset seed of one episode: distinct per (stream, task, iteration, index),
    so demonstrations, rollouts and evaluation never share a layout."""
    task_key = sum(ord(c) * 31**i for i, c in enumerate(task)) % (2**31)
    entropy = [root_seed, EPISODE_STREAMS[stream], task_key, iteration, index]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


# --------------------------------------------------------------------------------------------
# One process at a time.

LOCK_FILE = ".lock"
_held: dict[str, list] = {}  # workdir -> [open lock file, depth]: re-entrant within a process


class WorkdirLockedError(RuntimeError):
    """Another process is running a phase in the same run directory."""


@contextlib.contextmanager
def locked(workdir: str, *, process_index: int = 0) -> Iterator[None]:
    """Holds `workdir`'s lock while a phase (or the loop) runs in it.

    An advisory `flock` on `<workdir>/.lock`, which also records the holder (pid, host, start):
    a second process fails at once with an error naming the holder, instead of doing the same
    work and colliding at the end. The kernel drops the lock when its process dies (even by
    SIGKILL), so a stale lock file is simply taken over. Re-entrant within one process (the
    loop holds it around its phases).

    `process_index`: this process's place in a multi-host job (`vlaw.multihost`), whose
    processes all run the same phases in one shared run directory. Only process 0 takes the
    lock; the others run under it. Were each to take it, the second would fail here (on one
    host, or across hosts where the shared filesystem honours flock), or wait for the first
    if it blocked, while the first waits for it at the phase's barriers: a deadlock. The lock
    keeps other jobs out; the processes of this one coordinate by barriers instead.
    """
    if process_index != 0:
        yield
        return
    key = os.path.abspath(workdir)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    os.makedirs(key, exist_ok=True)
    handle = open(os.path.join(key, LOCK_FILE), "a+")  # noqa: SIM115 (held past this block)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "an unknown process"
        handle.close()
        raise WorkdirLockedError(
            f"{key} is in use by {holder}; wait for it to finish or stop it (one process per "
            "run directory)"
        ) from None
    handle.seek(0)
    handle.truncate()
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.ctime()}
    handle.write(json.dumps(holder))
    handle.flush()
    _held[key] = [handle, 1]
    try:
        yield
    finally:
        del _held[key]
        handle.close()  # releases the flock
