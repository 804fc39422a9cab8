"""Weighted mixtures of RLDS sources: the co-training objective of Eq. 2,
L = L_real + lambda * L_DROID.

Each example is drawn from source i with probability w_i / sum(w). With weights (1, lambda) the
expected per-example loss is (L_real + lambda * L_DROID) / (1 + lambda): Eq. 2 up to a constant
factor that the learning rate absorbs. Sampling (rather than weighting per-source losses) keeps
every batch the same shape and spends compute in proportion to each term's weight, as openpi's
RLDS mixtures do.
"""

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from vlaw.data.tensorflow_cpu import import_tensorflow


@dataclasses.dataclass(frozen=True)
class Source:
    """One mixture component: RLDS dataset directories read as one pool, and its weight."""

    dataset_dirs: tuple[str, ...]
    weight: float = 1.0
    name: str = ""

    def __post_init__(self):
        if isinstance(self.dataset_dirs, str | os.PathLike):
            object.__setattr__(self, "dataset_dirs", (os.fspath(self.dataset_dirs),))
        else:
            object.__setattr__(self, "dataset_dirs", tuple(os.fspath(d) for d in self.dataset_dirs))
        if not self.dataset_dirs:
            raise ValueError(f"source {self.name!r}: no dataset directories")
        if not (self.weight > 0 and np.isfinite(self.weight)):
            raise ValueError(f"source {self.name!r}: weight must be positive, got {self.weight}")


def as_sources(sources: str | os.PathLike | Sequence[Any]) -> list[Source]:
    """A dir, a list of dirs (one source of weight 1) or a list of Sources -> list[Source]."""
    if isinstance(sources, str | os.PathLike):
        return [Source((os.fspath(sources),))]
    sources = list(sources)
    if not sources:
        raise ValueError("no data sources given")
    if all(isinstance(s, Source) for s in sources):
        return sources
    if any(isinstance(s, Source) for s in sources):
        raise TypeError("mix Source objects and plain directories in separate lists")
    return [Source(tuple(os.fspath(s) for s in sources))]


def real_and_droid_sources(
    real_dataset_dirs: Sequence[str], droid_path: str, droid_weight: float
) -> list[Source]:
    """D_real (weight 1) plus, when `droid_path` is set, DROID (weight lambda = `droid_weight`),
    as Eq. 2 co-trains the world model."""
    sources = [Source(tuple(real_dataset_dirs), 1.0, "real")]
    if droid_path:
        sources.append(Source((droid_path,), float(droid_weight), "droid"))
    return sources


def normalized_weights(weights: Sequence[float]) -> np.ndarray:
    weights = np.asarray(weights, np.float64)
    if weights.ndim != 1 or len(weights) == 0 or np.any(weights <= 0):
        raise ValueError(f"mixture weights must be positive, got {weights.tolist()}")
    return weights / weights.sum()


def sample_mixture(datasets: Sequence[Any], weights: Sequence[float], seed: int):
    """Interleaves infinite tf.data datasets, drawing each element from dataset i with
    probability weights[i] / sum(weights). Deterministic given `seed`."""
    tf = import_tensorflow()
    if len(datasets) != len(weights):
        raise ValueError(f"{len(datasets)} datasets but {len(weights)} weights")
    probabilities = normalized_weights(weights)
    if len(datasets) == 1:
        return datasets[0]
    return tf.data.Dataset.sample_from_datasets(
        list(datasets),
        weights=probabilities.astype(np.float32).tolist(),
        seed=seed,
        stop_on_empty_dataset=True,
    )
