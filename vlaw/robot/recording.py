"""Operator-labelled episodes on the real DROID station, recorded one at a time.

    record_on_station(config, dataset_dir, specs, source, iteration, name, policy)

is `vlaw.rollout.episodes.record_dataset` for `config.station = "droid"`: each spec becomes one
episode of `robot.max_steps` steps (or fewer, when the watchdog or the operator's Ctrl+C stops
the arm), which the operator then marks success, failure or discard. A kept episode is written
to the staging directory at once and atomically (temp file, rename), so a crash or a killed
write loses at most the episode in progress; a discarded one is run again. A rerun counts the
staged episodes toward the K asked for and runs only the rest; once all exist the RLDS dataset
is written in one go and the staging removed, as in simulation.
"""

import contextlib
import glob
import os
import shutil
from collections.abc import Iterator, Sequence

import numpy as np
from absl import logging

from vlaw.data import rlds_write
from vlaw.data.episode import Episode
from vlaw.robot import limits as limits_lib
from vlaw.robot.droid import (
    DroidStation,
    KeyboardStop,
    Operator,
    StationStopped,
    TerminalOperator,
    Verdict,
    open_robot_env,
)
from vlaw.robot.server import warm_up
from vlaw.rollout.episodes import (
    SuccessTally,
    check_staging_plan,
    load_staged_episode,
    record_dataset,
    save_staged_episode,
    staging_dir,
)
from vlaw.rollout.station import EpisodeRecorder, TaskSpec, episode_id


@contextlib.contextmanager
def droid_station(config, operator: Operator | None = None) -> Iterator[DroidStation]:
    """The station `config.robot` describes, Ctrl+C as its stop while it is open."""
    robot = config.robot
    env = open_robot_env()
    with KeyboardStop() as stop:
        yield DroidStation(
            env,
            cameras=dict(robot.cameras),
            image_size=(int(config.data.image_height), int(config.data.image_width)),
            limits=limits_lib.panda_limits(robot.workspace_min, robot.workspace_max),
            operator=operator or TerminalOperator(),
            watchdog_s=float(robot.watchdog_s),
            stop=stop,
        )


def run_episode(
    station: DroidStation,
    policy,
    spec: TaskSpec,
    *,
    max_steps: int,
    open_loop_steps: int,
    source: str,
    iteration: int,
    policy_checkpoint: str,
) -> tuple[EpisodeRecorder, str]:
    """One episode: (its recorder, why it was stopped early or ''). Each policy call executes
    `open_loop_steps` actions of its chunk. Any other failure holds the arm and propagates."""
    observation = station.reset(spec)
    recorder = EpisodeRecorder(
        observation.instruction,
        spec.task,
        source=source,
        iteration=iteration,
        policy_checkpoint=policy_checkpoint,
        episode_id=episode_id(source, iteration, spec),
    )
    steps, call = 0, 0
    try:
        while steps < max_steps:
            chunk = np.asarray(policy([observation], episode_calls=[(spec.seed, call)]))[0]
            call += 1
            length = min(open_loop_steps, chunk.shape[0], max_steps - steps)
            recorder.add(station.act(chunk[:length]))
            steps += length
            observation = station.observe()
    except StationStopped as stopped:
        recorder.add(station.partial_records)
        return recorder, str(stopped)
    except BaseException:
        station.hold("error")
        raise
    return recorder, ""


def _labelled_episodes(
    station: DroidStation, policy, todo: Sequence[TaskSpec], config, source: str, iteration: int
) -> Iterator[Episode]:
    """One kept episode per spec, each asked of the operator until not discarded."""
    for spec in todo:
        while True:
            recorder, stopped = run_episode(
                station,
                policy,
                spec,
                max_steps=int(config.robot.max_steps),
                open_loop_steps=int(config.policy.open_loop_steps),
                source=source,
                iteration=iteration,
                policy_checkpoint=policy.checkpoint,
            )
            verdict = station.verdict()
            if verdict is not Verdict.DISCARD and recorder.num_steps > 0:
                break
            logging.info("episode %s discarded; running it again", recorder.episode_id)
        if station.clip_counts:
            logging.info("commands clipped so far, by limit: %s", station.clip_counts)
        yield recorder.finish(verdict is Verdict.SUCCESS)


def record_on_station(
    config,
    dataset_dir: str,
    specs: list[TaskSpec],
    source: str,
    iteration: int,
    name: str,
    policy,
    station: DroidStation | None = None,
) -> dict:
    """Runs `specs` on the real station into one RLDS dataset (see the module docstring).
    `station` None: the one `config.robot` describes, opened here."""
    staging = staging_dir(dataset_dir)
    plan = {
        "episode_ids": [episode_id(source, iteration, spec) for spec in specs],
        "actor": policy.checkpoint,
        "station": "droid",
        "max_steps": int(config.robot.max_steps),
        "open_loop_steps": int(config.policy.open_loop_steps),
        "image_size": [int(config.data.image_height), int(config.data.image_width)],
    }
    check_staging_plan(staging, plan)
    done = {
        os.path.basename(path)[: -len(".npz")] for path in glob.glob(os.path.join(staging, "*.npz"))
    }
    todo = [spec for spec in specs if episode_id(source, iteration, spec) not in done]
    logging.info(
        "%s on the DROID station: %d of %d episodes already recorded",
        source,
        len(specs) - len(todo),
        len(specs),
    )
    if todo:
        image_size = (int(config.data.image_height), int(config.data.image_width))
        # Compiled before the arm moves: the first chunk must beat the watchdog too.
        seconds = warm_up(policy, image_size, episode_calls=[(0, 0)])
        logging.info("policy compiled in %.1f s", seconds)
        with contextlib.ExitStack() as stack:
            if station is None:
                station = stack.enter_context(droid_station(config))
            for episode in _labelled_episodes(station, policy, todo, config, source, iteration):
                save_staged_episode(staging, episode)
                logging.info(
                    "recorded %s (success %s)",
                    episode.metadata.episode_id,
                    episode.metadata.success,
                )
    staged = [os.path.join(staging, f"{eid}.npz") for eid in plan["episode_ids"]]
    tally = SuccessTally()
    summary = rlds_write.write_episodes(
        dataset_dir,
        tally.watch(load_staged_episode(path) for path in staged),
        name=name,
        episodes_per_shard=config.data.episodes_per_shard,
        progress=True,
    )
    shutil.rmtree(staging, ignore_errors=True)
    return {
        "dataset_dir": summary["dataset_dir"],
        "num_episodes": summary["num_episodes"],
        "resumed_episodes": len(specs) - len(todo),
        "success_rate": tally.rates(),
    }


def station_recorder(config):
    """The recorder of `config.station`: `record_dataset` (simulator workers) for "sim",
    `record_on_station` (the real DROID station, operator labels) for "droid"; same signature."""
    if config.station == "droid":
        return record_on_station
    if config.station != "sim":
        raise ValueError(f"config.station is {config.station!r}; choose 'sim' or 'droid'")
    if not config.sim.enabled:
        raise ValueError(
            "config.station='sim' needs config.sim.enabled=True; set config.station='droid' to "
            "use the real DROID station"
        )
    return record_dataset
