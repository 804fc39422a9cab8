"""Algorithm 1 as phases over a workdir, each resumable and marked done in state.json.

A phase is a function `(config, workdir, iteration) -> dict` (its summary), one module per
phase in `vlaw/phases/`, registered in `PHASES` by module path in Algorithm 1's order, so that
importing the pipeline stays cheap and a phase's heavy dependencies load only when it runs. A
phase that has not landed is absent here: never a stub. The run directory's layout, and which
data, weights and seeds each phase uses: `vlaw.workdir`.
"""

import importlib
import json
import os
import time

import ml_collections
from absl import logging

from vlaw import multihost
from vlaw import workdir as workdir_lib

# name -> "module:function". Ordered as Algorithm 1 runs them.
PHASES: dict[str, str] = {
    "collect": "vlaw.phases.collect:collect_phase",
    "train_world_model": "vlaw.phases.train_world_model:train_world_model_phase",
    "train_reward": "vlaw.phases.train_reward:train_reward_phase",
    "imagine": "vlaw.phases.imagine:imagine_phase",
    "label": "vlaw.phases.label:label_phase",
    "train_policy": "vlaw.phases.train_policy:train_policy_phase",
    "evaluate": "vlaw.phases.evaluate:evaluate_phase",
    "train_dsrl": "vlaw.phases.train_dsrl:train_dsrl_phase",  # method "dsrl" (a baseline)
}
LOOP = "loop"  # all of Algorithm 1 (`run_loop`): what a bare launch.py runs
PHASE_NAMES = (*PHASES, LOOP)


def load_state(workdir: str) -> dict:
    """state.json: {"iter_NN": {phase: summary}} of the phases done so far ({} when none)."""
    return workdir_lib.read_json(os.path.join(workdir, "state.json"), default={})


def _save_state(workdir: str, state: dict) -> None:
    workdir_lib.write_json(os.path.join(workdir, "state.json"), state)


def adopt_phases(workdir: str, source: str, iteration: int, names) -> None:
    """Marks phases `names` of `iteration` done in `workdir` with the summaries they have in
    the run directory `source`, whose artifacts of them are already in `workdir` (a study's
    methods share one warm start, `vlaw.study`); each summary notes where it was computed."""
    key = f"iter_{iteration:02d}"
    done = load_state(source).get(key, {})
    missing = [name for name in names if name not in done]
    if missing:
        raise ValueError(f"{source}: phases {missing} of {key} are not done; nothing to adopt")
    with workdir_lib.locked(workdir):
        state = load_state(workdir)
        adopted = {name: {**done[name], "computed_in": source} for name in names}
        state.setdefault(key, {}).update(adopted)
        _save_state(workdir, state)


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the resolved config to workdir/config.json (and returns the path); in a
    multi-host job the chief alone writes it (the others hold the same config)."""
    path = os.path.join(workdir, "config.json")
    if multihost.is_chief():
        workdir_lib.write_json(path, json.loads(config.to_json_best_effort()))
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
    with workdir_lib.locked(workdir, process_index=multihost.process_index()):
        return _run_phase_locked(name, config, workdir, iteration, force)


def _run_phase_locked(name, config, workdir: str, iteration: int, force: bool) -> dict:
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
    if multihost.is_chief():  # one writer of state.json per job; the chief's summary is whole
        state = load_state(workdir)  # re-read: a phase may run for hours
        state.setdefault(key, {})[name] = summary
        _save_state(workdir, state)
    logging.info("phase %s of %s done: %s", name, key, summary)
    return summary


def run_loop(config: ml_collections.ConfigDict, workdir: str, force: bool = False) -> str:
    """Algorithm 1 for `loop.iterations` iterations (`vlaw.phases.loop.schedule`), each phase
    skipped when state.json marks it done (`force`: rerun them all). Returns, and prints, the
    success table of the base policy and every iteration."""
    from vlaw.phases import loop  # the evaluation table's imports load with the loop only

    with workdir_lib.locked(workdir, process_index=multihost.process_index()):
        for iteration, name in loop.schedule(config):
            run_phase(name, config, workdir, iteration, force)
    table = loop.results_table(config, workdir)
    logging.info("VLAW in %s:\n%s", workdir, table)
    print(f"\nVLAW success rates ({workdir}; 95 % Wilson intervals):\n{table}", flush=True)
    return table
