"""Confusion matrices of a binary success decision against known labels (paper Table 1's
event confusion, Table 3's reward-model precision)."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from vlaw.agents.reward import EpisodeScores


def confusion(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float | None]:
    """Counts and rates of a binary decision against known labels (success = positive); a
    rate with an empty denominator is None (state.json stays plain JSON).

    Accuracy flatters a decision on unbalanced labels (always "failure" scores 0.75 when a
    quarter succeed), so two chance-aware rates come with it: balanced accuracy (the mean of
    the recalls of success and failure; 0.5 is chance) and Cohen's kappa (agreement beyond
    what decisions at the same rates would reach by chance; 0 is chance, 1 perfect)."""
    predicted, actual = np.asarray(predicted, bool), np.asarray(actual, bool)
    tp = int(np.sum(predicted & actual))
    fp = int(np.sum(predicted & ~actual))
    tn = int(np.sum(~predicted & ~actual))
    fn = int(np.sum(~predicted & actual))
    n = tp + fp + tn + fn
    recall = tp / (tp + fn) if tp + fn else None
    specificity = tn / (tn + fp) if tn + fp else None
    chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2 if n else None
    return {
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": (tp + tn) / n if n else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": recall,
        "balanced_accuracy": (
            (recall + specificity) / 2 if recall is not None and specificity is not None else None
        ),
        # Chance agreement of 1 (every label and decision alike) leaves kappa undefined.
        "kappa": ((tp + tn) / n - chance) / (1 - chance) if n and chance < 1 else None,
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
