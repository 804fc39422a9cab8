"""How a multi-host job shares `imagine`'s batches (`imagine_plan.process_share`); the plan
itself and two real processes imagining it: tests/phases/test_imagine.py."""

import pytest

from vlaw.rollout.imagine_plan import process_share


def test_every_unstaged_batch_goes_to_exactly_one_process():
    for todo in ([0, 1, 2, 3, 4, 5, 6], [1, 2, 5], []):
        for count in (1, 2, 3, 8):
            shares = [process_share(todo, p, count) for p in range(count)]
            assert sorted(k for share in shares for k in share) == todo
            fresh = [process_share(list(range(7)), p, count) for p in range(count)]
            assert max(map(len, fresh)) - min(map(len, fresh)) <= 1  # balanced to +-1


def test_a_share_is_by_batch_index_not_by_what_others_staged():
    """Process 1 keeps its batches whatever process 0 has staged when it looks (the two may
    look at different moments), and a one-process job does everything."""
    assert process_share([0, 1, 2, 3, 4], 1, 2) == [1, 3]
    assert process_share([1, 3, 4], 1, 2) == [1, 3]  # 0 and 2 staged by process 0
    assert process_share([1, 3, 4], 0, 2) == [4]
    assert process_share([2, 5], 0, 1) == [2, 5]


def test_an_index_outside_the_job_is_refused():
    for index, count in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="process_index"):
            process_share([0, 1], index, count)
