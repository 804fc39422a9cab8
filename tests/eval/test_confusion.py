"""The confusion rates: counts, and the chance-aware rates that accuracy lacks on unbalanced
labels (Table 1's event confusion has a quarter or fewer successes)."""

import numpy as np
import pytest

from vlaw.eval.confusion import confusion


def _decisions(tp: int, fn: int, fp: int, tn: int) -> tuple[np.ndarray, np.ndarray]:
    predicted = [True] * tp + [False] * fn + [True] * fp + [False] * tn
    actual = [True] * (tp + fn) + [False] * (fp + tn)
    return np.array(predicted), np.array(actual)


def test_rates_of_a_decision_that_beats_chance_a_little():
    counts = confusion(*_decisions(tp=1, fn=3, fp=1, tn=11))
    assert (counts["tp"], counts["fn"], counts["fp"], counts["tn"]) == (1, 3, 1, 11)
    assert counts["accuracy"] == pytest.approx(0.75)
    assert counts["precision"] == pytest.approx(0.5)
    assert counts["recall"] == pytest.approx(0.25)
    assert counts["balanced_accuracy"] == pytest.approx((0.25 + 11 / 12) / 2)
    # Chance agreement (2*4 + 14*12) / 16**2 = 0.6875; kappa = (0.75 - 0.6875) / 0.3125.
    assert counts["kappa"] == pytest.approx(0.2)


def test_always_failure_scores_chance_though_its_accuracy_is_high():
    counts = confusion(*_decisions(tp=0, fn=4, fp=0, tn=12))
    assert counts["accuracy"] == pytest.approx(0.75)
    assert counts["balanced_accuracy"] == pytest.approx(0.5)
    assert counts["kappa"] == pytest.approx(0.0)
    assert counts["precision"] is None


def test_perfect_and_inverted_decisions():
    assert confusion(*_decisions(tp=3, fn=0, fp=0, tn=5))["kappa"] == pytest.approx(1.0)
    inverted = confusion(*_decisions(tp=0, fn=3, fp=5, tn=0))
    assert inverted["kappa"] < 0
    assert inverted["balanced_accuracy"] == pytest.approx(0.0)


def test_undefined_rates_are_none():
    one_class = confusion(*_decisions(tp=4, fn=0, fp=0, tn=0))
    assert one_class["kappa"] is None and one_class["balanced_accuracy"] is None
    empty = confusion(np.zeros(0, bool), np.zeros(0, bool))
    assert empty["accuracy"] is None and empty["kappa"] is None
