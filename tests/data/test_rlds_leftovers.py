"""What a writer killed outright leaves behind is cleared by the next write of that dataset."""

import os

from vlaw.data import rlds_read, rlds_write
from vlaw.data.synthetic import synthetic_episodes


def test_a_dead_writers_temp_directory_is_cleared(tmp_path):
    dataset = tmp_path / "real"
    stale = tmp_path / ".real.tmp-0123abcd"  # as write_episodes names its temp sibling
    stale.mkdir()
    (stale / "half_written.tfrecord").write_bytes(b"\x00" * 10)
    other = tmp_path / ".demos.tmp-0123abcd"  # another dataset's: not ours to touch
    other.mkdir()
    rlds_write.write_episodes(str(dataset), synthetic_episodes(2, num_steps=3), name="vlaw_real")
    assert not stale.exists() and other.exists()
    assert sorted(os.listdir(tmp_path)) == [".demos.tmp-0123abcd", "real"]
    assert rlds_read.count_episodes(str(dataset)) == 2
