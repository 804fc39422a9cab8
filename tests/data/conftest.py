"""Small RLDS datasets shared by the data tests (written once per test session)."""

import functools

import pytest

from vlaw.data import rlds_write, synthetic

IMAGE_SHAPE = (32, 48, 3)


@pytest.fixture(scope="session")
def make_episodes():
    """synthetic_episodes at the tests' small image shape."""
    return functools.partial(synthetic.synthetic_episodes, image_shape=IMAGE_SHAPE)


@pytest.fixture(scope="session")
def vlaw_episodes(make_episodes):
    """6 episodes of 9, 12 or 15 steps; successes at even indices."""
    return make_episodes(6)


@pytest.fixture(scope="session")
def vlaw_dataset(tmp_path_factory, vlaw_episodes):
    """`vlaw_episodes` written in 3 shards of 2."""
    dataset_dir = tmp_path_factory.mktemp("rlds") / "real"
    rlds_write.write_episodes(str(dataset_dir), vlaw_episodes, episodes_per_shard=2)
    return str(dataset_dir)
