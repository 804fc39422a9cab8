"""vlaw.workdir: the run directory's one owner (paths, datasets per phase, model starts, seeds,
atomic JSON with named errors, one process per run directory)."""

import os
import signal
import subprocess
import sys

import pytest

from vlaw import pipeline
from vlaw import workdir as workdir_lib


def test_seeds_are_the_first_releases_and_distinct_per_phase_and_iteration():
    # The numbers runs made before the layout moved (SeedSequence([seed, 4, it]) >> 1, ...).
    import numpy as np

    expected = int(np.random.SeedSequence([0, 4, 1]).generate_state(1)[0] >> 1)
    assert workdir_lib.phase_seed(0, "train_policy", 1) == expected
    seeds = {
        workdir_lib.phase_seed(0, phase, it)
        for phase in ("train_policy", "train_world_model", "imagine", "evaluate")
        for it in range(3)
    }
    assert len(seeds) == 12
    assert workdir_lib.phase_seed(5, "train_reward", 3) == 5
    with pytest.raises(ValueError, match="no seed stream"):
        workdir_lib.phase_seed(0, "dream", 0)


def test_model_start_prefers_the_previous_iteration_then_init_from(tmp_path):
    workdir = str(tmp_path)
    trained = set()

    def start(iteration, init_from=""):
        return workdir_lib.model_start(
            workdir, "policy", iteration, init_from, is_trained=trained.__contains__
        )

    assert start(0) == workdir_lib.Start("scratch")
    assert start(1, str(tmp_path)) == workdir_lib.Start("init_from", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="policy.train.init_from="):
        start(1, str(tmp_path / "typo"))
    trained.add(workdir_lib.checkpoint_dir(workdir, "policy", 0))
    assert start(1, str(tmp_path)).kind == "previous_iteration"


def test_datasets_each_phase_reads(tmp_path):
    workdir = str(tmp_path)
    for path in ("demos", "iter_01/real", "iter_01/synthetic", "iter_02/real"):
        os.makedirs(os.path.join(workdir, path))
    join = lambda *p: os.path.join(workdir, *p)  # noqa: E731
    assert workdir_lib.policy_training_dirs(workdir, 2) == [
        join("demos"),
        join("iter_01", "real"),
        join("iter_01", "synthetic"),
        join("iter_02", "real"),
    ]
    assert workdir_lib.world_model_training_dirs(workdir, 1) == [
        join("demos"),
        join("iter_01", "real"),
    ]
    assert workdir_lib.reward_training_dirs(workdir, 2, include_demos=False) == [
        join("iter_01", "real"),
        join("iter_02", "real"),
    ]
    with pytest.raises(FileNotFoundError, match="collect phase of iteration 3"):
        workdir_lib.reward_training_dirs(workdir, 3, include_demos=True)


def test_a_corrupt_state_file_is_named(tmp_path):
    (tmp_path / "state.json").write_text('{"iter_00": {"collect"')
    with pytest.raises(workdir_lib.JsonFileError, match="state.json is not valid JSON"):
        pipeline.load_state(str(tmp_path))


_HOLD = """
import sys, time
from vlaw import workdir
with workdir.locked(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_second_process_is_refused_at_once_and_a_dead_holder_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        # Refused at once (a blocking wait would hang this test for the holder's 600 s).
        with (
            pytest.raises(workdir_lib.WorkdirLockedError, match=f'"pid": {holder.pid}'),
            workdir_lib.locked(str(tmp_path)),
        ):
            pass
        with pytest.raises(workdir_lib.WorkdirLockedError, match=str(holder.pid)):
            pipeline.run_phase("collect", None, str(tmp_path))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel released the dead holder's lock: the stale file is taken over.
    with workdir_lib.locked(str(tmp_path)), workdir_lib.locked(str(tmp_path)):  # re-entrant
        assert str(os.getpid()) in (tmp_path / workdir_lib.LOCK_FILE).read_text()


def test_only_process_0_of_a_multi_host_job_takes_the_lock(tmp_path):
    """The other processes of the job run under the chief's lock (they would be refused, or
    deadlock at the phase's barriers); another job is still refused."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with workdir_lib.locked(str(tmp_path), process_index=1):
            assert str(holder.pid) in (tmp_path / workdir_lib.LOCK_FILE).read_text()
        with (
            pytest.raises(workdir_lib.WorkdirLockedError),
            workdir_lib.locked(str(tmp_path), process_index=0),
        ):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
