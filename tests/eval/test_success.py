"""Wilson intervals (checked against published values) and the success table."""

import pytest

from vlaw.eval.success import format_rate, success_table, task_success, wilson_interval


def test_wilson_interval_matches_reference_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 .. 0.3662; 15/148 -> 0.0624 .. 0.1605.
    assert wilson_interval(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson_interval(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.16 < high < 0.17  # inside [0, 1] even at a rate of 0
    assert wilson_interval(20, 20)[1] == 1.0
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_table_formats_each_task_with_its_interval():
    figures = task_success(8, 20)
    assert figures["success_rate"] == 0.4
    assert format_rate(figures) == "0.40 [0.22, 0.61] (8/20)"
    table = success_table([("base", {"scoop": figures})], ["scoop"]).splitlines()
    assert table[0].split() == ["policy", "scoop"] and table[2].startswith("base")
