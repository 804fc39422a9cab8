"""Confusion matrices of a binary success decision against known labels (paper Table 1's
event confusion, Table 3's reward-model precision)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlaw.agents.reward import EpisodeScores


def confusion(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    """Counts and rates of a binary decision against known labels (success = positive); a
    rate with an empty denominator is None (state.json stays plain JSON)."""
    predicted, actual = np.asarray(predicted, bool), np.asarray(actual, bool)
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    tn = int(np.sum(~predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    n = tp + fp + tn + fn
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": (tp + tn) / n if n else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }


def confusion_report(
    scores: EpisodeScores, alpha: float, *, known_sources: Sequence[str]
) -> dict[str, Any]:
    """Confusion matrices at P(yes) > alpha and at P(yes) > P(no), over the episodes whose
    source carries a trusted success label."""
    known = np.isin(scores.source, list(known_sources))
    actual = scores.success[known]
    return {
        "num_known": int(known.sum()),
        "alpha": confusion(scores.p_yes[known] > alpha, actual),
        "argmax": confusion(scores.p_yes[known] > scores.p_no[known], actual),
    }
