"""Ground truth for imagined episodes: the simulator replays recorded actions from a reset."""

import json
import os

import numpy as np
import pytest

from vlaw import pipeline
from vlaw import workdir as workdir_lib
from vlaw.config import experiment_config
from vlaw.data import rlds_read
from vlaw.rollout import imagine_plan, replay


def test_replay_is_required_where_synthetic_labels_count_as_known():
    config = experiment_config(("scoop",), "tiny")
    assert "synthetic" in config.reward.known_label_sources and replay.replay_enabled(config)
    config.loop.imagine_sim_replay = False
    with pytest.raises(ValueError, match="known_label_sources lists 'synthetic'"):
        replay.replay_enabled(config)
    config.reward.known_label_sources = ("real",)
    assert not replay.replay_enabled(config)


def test_simulator_replay_reproduces_a_demonstrations_outcome(tmp_path):
    """A noiseless expert's scoop, replayed from its seed's reset, succeeds again; standing
    still from the same reset fails; an outcome already staged is kept, not replayed."""
    config = experiment_config(("scoop",), "sim")
    config.sim.num_workers = config.sim.stations_per_worker = 1
    config.loop.warmstart_demos_per_task = config.loop.real_rollouts_per_task = 1
    config.sim.expert_noise = 0.0
    config.seed = 1  # a layout the noiseless expert scoops (seed 0's first one it misses)
    pipeline.run_phase("collect", config, str(tmp_path), iteration=0)
    demo = next(rlds_read.read_episodes(os.path.join(tmp_path, "demos")))
    assert demo.metadata.success, "the noiseless expert should succeed at scoop"
    (start,) = imagine_plan.start_states(
        config.tasks, workdir_lib.imagine_start_dirs(str(tmp_path), 1)
    )["scoop"]  # iteration 1: demos
    assert start.episode_id == demo.metadata.episode_id
    actions = demo.policy_actions()
    still = np.concatenate(
        [np.zeros_like(actions[:, :7]), actions[:1, 7:].repeat(len(actions), 0)], 1
    )
    spec = start.station_spec()
    staging = tmp_path / "staging"
    staging.mkdir()
    outcomes_file = staging / replay.OUTCOMES_FILE
    outcomes_file.write_text(json.dumps({"replayed-before": True}))
    specs = {"expert": spec, "still": spec, "replayed-before": spec}
    chosen = {"expert": actions, "still": still}
    labels = replay.replayed_labels(config, str(staging), specs, chosen.__getitem__, progress=False)
    assert labels == {"expert": True, "still": False, "replayed-before": True}
    assert json.loads(outcomes_file.read_text()) == labels
