"""Normalization statistics (mean/std and q01/q99), computed streaming and stored in openpi's
norm_stats.json layout: {"norm_stats": {"state": {"mean", "std", "q01", "q99"}, "actions": ...}}.

Mean and std are exact (Chan et al.'s parallel update in float64; std is the population std,
ddof=0, as openpi's RunningStats). Quantiles come from per-dimension histograms of `num_bins`
bins over the running [min, max]; when a batch widens the range, the counts are re-spread onto
the new bins assuming a uniform density inside each old bin (openpi's compute_norm_stats does
the same kind of re-binning). Accuracy: without range changes a quantile is within one bin
width, (max - min) / num_bins, of numpy's `np.quantile`; each range extension may move
mass by at most one (old) bin width more. With the default 5000 bins that is 0.02-0.1 % of the
range, far below what normalization cares about.
"""

import dataclasses
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from vlaw.data import droid, rlds_read


@dataclasses.dataclass
class NormStats:
    """Per-dimension statistics of one key, vectors of shape (D,)."""

    mean: np.ndarray
    std: np.ndarray
    q01: np.ndarray | None = None
    q99: np.ndarray | None = None

    def to_json(self) -> dict[str, Any]:
        as_list = lambda v: None if v is None else np.asarray(v, np.float64).tolist()
        return {k: as_list(getattr(self, k)) for k in ("mean", "std", "q01", "q99")}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "NormStats":
        as_array = lambda v: None if v is None else np.asarray(v, np.float32)
        return cls(
            mean=as_array(data["mean"]),
            std=as_array(data["std"]),
            q01=as_array(data.get("q01")),
            q99=as_array(data.get("q99")),
        )


class RunningStats:
    """Streaming statistics of vectors: `update(batch)` with (..., D) arrays, then `get()`."""

    def __init__(self, num_bins: int = 5000):
        self.num_bins = num_bins
        self.count = 0
        self._mean: np.ndarray | None = None
        self._sum_sq_dev: np.ndarray | None = None  # M2 of Chan et al.
        self._low: np.ndarray | None = None
        self._high: np.ndarray | None = None
        self._histogram: np.ndarray | None = None  # (D, num_bins) counts

    def update(self, batch: np.ndarray) -> None:
        values = np.asarray(batch, np.float64)
        values = values.reshape(-1, values.shape[-1])
        if values.shape[0] == 0:
            return
        if not np.all(np.isfinite(values)):
            raise ValueError("norm stats: non-finite values in the batch")
        dim = values.shape[1]
        if self._mean is None:
            self._mean = np.zeros(dim)
            self._sum_sq_dev = np.zeros(dim)
            self._low, self._high = values.min(0), values.max(0)
            self._histogram = np.zeros((dim, self.num_bins))
        elif dim != self._mean.shape[0]:
            raise ValueError(f"norm stats: got dimension {dim}, expected {self._mean.shape[0]}")
        # Chan et al.: merge (count, mean, M2) of the batch into the running totals.
        batch_count = values.shape[0]
        batch_mean = values.mean(0)
        batch_sum_sq_dev = ((values - batch_mean) ** 2).sum(0)
        total = self.count + batch_count
        delta = batch_mean - self._mean
        self._mean = self._mean + delta * (batch_count / total)
        self._sum_sq_dev = (
            self._sum_sq_dev + batch_sum_sq_dev + delta**2 * (self.count * batch_count / total)
        )
        self.count = total
        self._extend_range(values.min(0), values.max(0))
        self._add_to_histogram(values)

    def _edges(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        # A constant dimension gets a tiny positive width so that every value has a bin.
        high = np.where(high > low, high, low + 1e-12 + 1e-9 * np.abs(low))
        return np.linspace(low, high, self.num_bins + 1, axis=1)  # (D, num_bins + 1)

    def _extend_range(self, batch_low: np.ndarray, batch_high: np.ndarray) -> None:
        new_low = np.minimum(self._low, batch_low)
        new_high = np.maximum(self._high, batch_high)
        if np.array_equal(new_low, self._low) and np.array_equal(new_high, self._high):
            return
        old_edges = self._edges(self._low, self._high)
        new_edges = self._edges(new_low, new_high)
        for d in range(self._histogram.shape[0]):
            # Cumulative counts are piecewise linear between old edges (uniform within a bin);
            # reading them at the new edges re-spreads the mass onto the new bins.
            cumulative = np.concatenate([[0.0], np.cumsum(self._histogram[d])])
            self._histogram[d] = np.diff(np.interp(new_edges[d], old_edges[d], cumulative))
        self._low, self._high = new_low, new_high

    def _add_to_histogram(self, values: np.ndarray) -> None:
        edges = self._edges(self._low, self._high)
        low, width = edges[:, 0], edges[:, -1] - edges[:, 0]
        bins = np.floor((values - low) / width * self.num_bins).astype(np.int64)
        bins = np.clip(bins, 0, self.num_bins - 1)
        dim = values.shape[1]
        flat = (bins + np.arange(dim) * self.num_bins).ravel()
        self._histogram += np.bincount(flat, minlength=dim * self.num_bins).reshape(dim, -1)

    def _quantile(self, q: float) -> np.ndarray:
        """numpy's default (linear) quantile, read off the histograms.

        numpy interpolates between the order statistics s_k and s_k+1 around rank q * (n - 1).
        The k-th order statistic (0-based) sits where k + 1/2 of the mass lies below it; each
        is located within a bin, and the interpolation between them is then done as numpy does
        (which keeps sparse data right: there the gap between order statistics exceeds a bin).
        """
        edges = self._edges(self._low, self._high)
        rank = q * (self.count - 1)
        lower = np.floor(rank)
        fraction = rank - lower
        upper = min(lower + 1, self.count - 1)
        out = np.empty(self._histogram.shape[0])
        for d in range(self._histogram.shape[0]):
            cumulative = np.concatenate([[0.0], np.cumsum(self._histogram[d])])
            below, above = np.interp([lower + 0.5, upper + 0.5], cumulative, edges[d])
            out[d] = below + fraction * (above - below)
        return np.clip(out, self._low, self._high)

    def get(self) -> NormStats:
        if self.count == 0:
            raise ValueError("norm stats: no data was added")
        return NormStats(
            mean=self._mean.astype(np.float32),
            std=np.sqrt(self._sum_sq_dev / self.count).astype(np.float32),
            q01=self._quantile(0.01).astype(np.float32),
            q99=self._quantile(0.99).astype(np.float32),
        )


def save_norm_stats(path: str, stats: dict[str, NormStats]) -> None:
    """Writes openpi's norm_stats.json (atomically: temp file, then rename; local paths)."""
    payload = {"norm_stats": {key: value.to_json() for key, value in stats.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temp_path = f"{path}.tmp-{os.getpid()}"
    with open(temp_path, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(temp_path, path)


def load_norm_stats(path: str) -> dict[str, NormStats]:
    """Reads a norm_stats.json written by openpi or by `save_norm_stats`."""
    with open(path) as f:
        payload = json.load(f)
    if "norm_stats" not in payload:
        raise ValueError(f"{path}: no 'norm_stats' key (not openpi's norm_stats.json layout)")
    return {key: NormStats.from_json(value) for key, value in payload["norm_stats"].items()}


def compute_norm_stats(
    dataset_dirs: str | Sequence[str],
    *,
    only_successes: bool = False,
    max_episodes: int | None = None,
    skip_corrupt: bool = False,
    num_bins: int = 5000,
) -> dict[str, NormStats]:
    """Statistics of pi0.5-DROID's `state` (joint_position ++ gripper) and `actions`
    (joint_velocity ++ gripper_position) over every step of the given RLDS datasets.

    Images are never decoded. Each step counts once (openpi accumulates over action chunks,
    which counts the repeated final actions of each episode a few more times; the difference
    is negligible for long episodes).
    """
    state_stats, action_stats = RunningStats(num_bins), RunningStats(num_bins)
    arrays = _policy_arrays(dataset_dirs, skip_corrupt, only_successes)
    for state, actions in itertools.islice(arrays, max_episodes):
        state_stats.update(state)
        action_stats.update(actions)
    return {"state": state_stats.get(), "actions": action_stats.get()}


def _policy_arrays(
    dataset_dirs: str | Sequence[str], skip_corrupt: bool, only_successes: bool
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(state (T, 8), actions (T, 8)) per episode, straight from the undecoded records."""
    dirs = [dataset_dirs] if isinstance(dataset_dirs, str) else list(dataset_dirs)
    for dataset_dir in dirs:
        layout = rlds_read.open_dataset(dataset_dir)
        for raw in rlds_read.iter_raw_episodes(layout, skip_corrupt=skip_corrupt):
            if only_successes and not rlds_read.metadata_from_raw(raw).success:
                continue
            steps = {path.removeprefix(rlds_read.STEPS): value for path, value in raw.items()}
            yield droid.policy_state(steps), droid.policy_actions(steps)
