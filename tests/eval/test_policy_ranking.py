"""The world model as a policy evaluator: Pearson and Spearman against scipy (ties included),
pair agreement, and when a ranking counts as preserved."""

import numpy as np
import pytest
from scipy import stats

from vlaw.eval import policy_ranking as ranking


def test_correlations_match_scipy_with_ties():
    station = [0.1, 0.4, 0.4, 0.8, 0.55]
    imagined = [0.2, 0.3, 0.5, 0.9, 0.5]
    assert ranking.pearson(station, imagined) == pytest.approx(
        stats.pearsonr(station, imagined).statistic
    )
    assert ranking.spearman(station, imagined) == pytest.approx(
        stats.spearmanr(station, imagined).statistic
    )
    np.testing.assert_array_equal(ranking.average_ranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2])


def test_undefined_correlations_are_none():
    assert ranking.pearson([0.5], [0.2]) is None
    assert ranking.pearson([0.5, 0.5], [0.2, 0.3]) is None  # a constant series
    assert ranking.spearman([0.1, 0.2], [0.3, 0.3]) is None


def test_ranking_preserved_needs_every_pair_in_the_same_order():
    names = ["base", "iteration 1", "iteration 2"]
    kept = ranking.ranking_report(names, [0.2, 0.4, 0.6], [0.1, 0.5, 0.55])
    assert kept["ranking_preserved"]
    assert kept["pairs"] == {"concordant": 3, "discordant": 0, "tied": 0}
    assert kept["spearman"] == pytest.approx(1.0)
    assert kept["policies"][1] == {
        "name": "iteration 1",
        "station_success_rate": 0.4,
        "imagined_success_rate": 0.5,
    }
    swapped = ranking.ranking_report(names, [0.2, 0.4, 0.6], [0.1, 0.6, 0.5])
    assert not swapped["ranking_preserved"]
    assert swapped["pairs"] == {"concordant": 2, "discordant": 1, "tied": 0}
    # A tie in imagination where the station separates two policies is not a preserved order.
    tied = ranking.ranking_report(names, [0.2, 0.4, 0.6], [0.1, 0.5, 0.5])
    assert not tied["ranking_preserved"] and tied["pairs"]["tied"] == 1
    both_tied = ranking.ranking_report(names[:2], [0.0, 0.0], [0.0, 0.0])
    assert both_tied["ranking_preserved"] and both_tied["pearson"] is None
    with pytest.raises(ValueError, match="3 names"):
        ranking.ranking_report(names, [0.1], [0.2])
