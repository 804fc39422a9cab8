"""Algorithm 1 as phases over a workdir, each resumable and marked done in state.json.

A phase is a function `(config, workdir, iteration) -> dict` (its summary) registered in
`PHASES` by module path, so that importing the pipeline stays cheap and a phase's heavy
dependencies load only when it runs. A phase whose issue has not landed is absent here: never a
stub. Workdir layout (docs: shared ARCHITECTURE.md §3):

  workdir/config.json                the resolved configuration
  workdir/state.json                 {"iter_00": {"collect": {...summary...}}, ...}
  workdir/iter_NN/<phase outputs>    written atomically (temp dir, then rename)
"""

import importlib
import json
import os
import time

import ml_collections
from absl import logging

# name -> "module:function". Ordered as Algorithm 1 runs them.
PHASES: dict[str, str] = {
    "collect": "vlaw.rollout.real:collect_phase",
    "train_world_model": "vlaw.train.world_model:train_world_model_phase",
    "train_reward": "vlaw.train.reward:train_reward_phase",
    "imagine": "vlaw.rollout.imagine:imagine_phase",
    "label": "vlaw.rollout.label:label_phase",
    "train_policy": "vlaw.train.policy:train_policy_phase",
}


def default_phase() -> str:
    """The phase a bare `launch.py` runs: the whole loop once it exists, else `collect`.

    Every other phase needs an earlier phase's output in the workdir, so until the loop lands
    the default is the one phase that can start from an empty workdir.
    """
    return "loop" if "loop" in PHASES else "collect"


def iteration_dir(workdir: str, iteration: int) -> str:
    return os.path.join(workdir, f"iter_{iteration:02d}")


def load_state(workdir: str) -> dict:
    path = os.path.join(workdir, "state.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _save_state(workdir: str, state: dict) -> None:
    # Atomic: a crash mid-write never leaves a truncated state.json behind.
    tmp = os.path.join(workdir, f".state.json.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(workdir, "state.json"))


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config to workdir/config.json (and returns the path)."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "config.json")
    tmp = path + f".tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def run_phase(
    name: str,
    config: ml_collections.ConfigDict,
    workdir: str,
    iteration: int = 0,
    force: bool = False,
) -> dict:
    """Runs one phase of one iteration unless state.json says it is done (or `force`)."""
    if name not in PHASES:
        raise ValueError(f"unknown phase {name!r}; available: {sorted(PHASES)}")
    os.makedirs(workdir, exist_ok=True)
    key = f"iter_{iteration:02d}"
    state = load_state(workdir)
    if not force and name in state.get(key, {}):
        logging.info("phase %s of %s already done; --force to rerun", name, key)
        return state[key][name]
    module_name, function_name = PHASES[name].split(":")
    phase_fn = getattr(importlib.import_module(module_name), function_name)
    start = time.time()
    summary = dict(phase_fn(config, workdir, iteration))
    summary["seconds"] = round(time.time() - start, 2)
    state = load_state(workdir)  # re-read: a phase may run for hours
    state.setdefault(key, {})[name] = summary
    _save_state(workdir, state)
    logging.info("phase %s of %s done: %s", name, key, summary)
    return summary
