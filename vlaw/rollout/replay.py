"""Ground truth for imagined episodes: their actions replayed in the simulator.

An imagined episode starts from the first step of a recorded one, and a recorded episode's id
ends in the seed of the station reset that produced it (`station.episode_id`). Resetting a
simulated station to that seed and executing the imagined 15 Hz actions open loop shows what
those actions do in the simulator; the station's label becomes the synthetic episode's
`success`, so `label` can report the reward model's confusion matrix on synthetic episodes too.
Without a simulator (`sim.enabled` False) or with `loop.imagine_sim_replay` False, synthetic
`success` stays False, and a config that would take it for ground truth is refused.

The simulator runs in `vlaw.sim.workers` processes (`task_pools`).
"""

import os
from collections.abc import Callable, Iterator, Sequence

import ml_collections
import numpy as np
from tqdm import tqdm

from vlaw.data.atomic_json import read_json, write_json
from vlaw.rollout.episodes import task_pools
from vlaw.rollout.station import TaskSpec

OUTCOMES_FILE = "replay.json"  # in the staging directory: episode id -> the simulator's label


def replay_enabled(config: ml_collections.ConfigDict) -> bool:
    """Whether imagine replays its episodes in the simulator; refuses a config under which
    `label` would take a made-up `success` for ground truth."""
    enabled = bool(config.sim.enabled and config.loop.imagine_sim_replay)
    if "synthetic" in tuple(config.reward.known_label_sources) and not enabled:
        raise ValueError(
            "reward.known_label_sources lists 'synthetic', but synthetic episodes carry a "
            "ground-truth success only when imagine replays them in the simulator "
            "(sim.enabled and loop.imagine_sim_replay); remove 'synthetic' from "
            "reward.known_label_sources or enable the replay"
        )
    return enabled


def replay_in_simulator(
    config: ml_collections.ConfigDict, specs: Sequence[TaskSpec], actions: Sequence[np.ndarray]
) -> Iterator[list[tuple[int, bool]]]:
    """Executes each 15 Hz action sequence (T, 8), one T for all, open loop from its spec's
    station reset; yields [(index into `specs`, the station's label)] per simulated batch."""
    for pool, task_specs in task_pools(config, list(specs)):
        indices = [i for i, spec in enumerate(specs) if spec.task == task_specs[0].task]
        for first in range(0, len(indices), pool.batch_size):
            part = indices[first : first + pool.batch_size]
            # A pool steps all its stations: pad with repeats of the first, labels dropped.
            padded = part + [part[0]] * (pool.batch_size - len(part))
            pool.reset([specs[i] for i in padded])
            pool.act(np.stack([actions[i] for i in padded]))
            yield list(zip(part, map(bool, pool.label())))


def replayed_labels(
    config: ml_collections.ConfigDict,
    staging: str,
    specs: dict[str, TaskSpec],
    load_actions: Callable[[str], np.ndarray],
    *,
    progress: bool = True,
) -> dict[str, bool]:
    """Episode id -> the simulator's label for every id of `specs` (id -> the reset of its
    start). Replays only the ids not yet in the staging directory's outcomes file, which is
    rewritten after every simulated batch, so an interrupted replay resumes.
    `load_actions(id)` gives an episode's actions."""
    path = os.path.join(staging, OUTCOMES_FILE)
    outcomes: dict[str, bool] = read_json(path, default={})
    todo = [episode for episode in specs if episode not in outcomes]
    actions = [load_actions(episode) for episode in todo]
    with tqdm(total=len(todo), desc="replay", unit="episode", disable=not progress) as bar:
        for results in replay_in_simulator(config, [specs[e] for e in todo], actions):
            outcomes.update((todo[i], label) for i, label in results)
            write_json(path, outcomes)
            bar.update(len(results))
    return outcomes
