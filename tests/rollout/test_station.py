"""Episode ids: `episode_id` and its inverse `parse_episode_id`."""

import pytest

from vlaw.rollout.station import TaskSpec, episode_id, parse_episode_id


def test_episode_ids_parse_back_to_their_source_iteration_and_reset():
    for source, iteration, spec in (
        ("demo", 0, TaskSpec("scoop", 0)),
        ("real", 12, TaskSpec("open_book", 4294967295)),
    ):
        assert parse_episode_id(episode_id(source, iteration, spec)) == (source, iteration, spec)


@pytest.mark.parametrize(
    "bad_id",
    [
        "synthetic-01-scoop-0000-from-demo-00-scoop-7",  # an imagined episode's id
        "real-01-scoop",  # no seed
        "real-01-scoop-seven",
        "",
    ],
)
def test_ids_of_another_form_are_named_in_the_error(bad_id):
    with pytest.raises(ValueError, match=f"episode id {bad_id!r} is not of the form"):
        parse_episode_id(bad_id)
