"""The world model as a policy evaluator: does success in imagination rank policies as the
station does?

Each policy of a run (the base policy, every iteration's, a baseline's) is rolled out in the
world model from the same recorded start states (`evaluate`'s layouts), the reward model decides
each imagined rollout (P(yes) > alpha, Eq. 3), and the imagined success rates are compared with
the station's (`reports/iter_NN/metrics.json`): Pearson's r of the rates, Spearman's rho (Pearson
of average ranks, so ties share a rank), and whether every pair of policies is ordered the same
way. With few policies these are descriptive: three policies give three pairs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import numpy as np

from vlaw.data import droid
from vlaw.eval.action_replay import held_frames
from vlaw.rollout.imagine import imagine_frames
from vlaw.rollout.imagine_plan import StartState


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r; None with fewer than two points or a constant series (undefined)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks (as scipy.stats.rankdata's default)."""
    values = np.asarray(values, np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the average ranks."""
    if len(x) < 2:
        return None
    return pearson(average_ranks(x), average_ranks(y))


def pair_agreement(station: Sequence[float], imagined: Sequence[float]) -> dict[str, int]:
    """Pairs of policies the two orderings put the same way (concordant), the opposite way
    (discordant), or where either ties."""
    counts = {"concordant": 0, "discordant": 0, "tied": 0}
    for i, j in itertools.combinations(range(len(station)), 2):
        product = np.sign(station[i] - station[j]) * np.sign(imagined[i] - imagined[j])
        counts["concordant" if product > 0 else "discordant" if product < 0 else "tied"] += 1
    return counts


def ranking_report(
    names: Sequence[str], station: Sequence[float], imagined: Sequence[float]
) -> dict:
    """The comparison of the module docstring over policies `names` with their station and
    imagined success rates. "ranking_preserved": no pair ordered the opposite way and every
    tie on the station a tie in imagination (and the reverse)."""
    if not len(names) == len(station) == len(imagined):
        raise ValueError(f"{len(names)} names, {len(station)} and {len(imagined)} rates")
    pairs = pair_agreement(station, imagined)
    same_ties = all(
        (station[i] == station[j]) == (imagined[i] == imagined[j])
        for i, j in itertools.combinations(range(len(names)), 2)
    )
    return {
        "policies": [
            {"name": n, "station_success_rate": float(s), "imagined_success_rate": float(m)}
            for n, s, m in zip(names, station, imagined, strict=True)
        ],
        "pearson": pearson(station, imagined),
        "spearman": spearman(station, imagined),
        "pairs": pairs,
        "ranking_preserved": pairs["discordant"] == 0 and same_ties,
    }


def imagine_policy(
    world,
    policy,
    starts: Sequence[StartState],
    *,
    config,
    rng: jax.Array,
    batch_size: int,
) -> np.ndarray:
    """One imagined rollout per start (`loop.imagine_interactions` chunks), `batch_size` at a
    time, the last batch padded: their 5 Hz frames (N, 1 + K, V, H, W, 3) uint8, the recorded
    start first. Each batch's noise: `rng` folded with the batch's index."""
    frames = []
    for index, first in enumerate(range(0, len(starts), batch_size)):
        part = list(starts[first : first + batch_size])
        padded = part + [part[0]] * (batch_size - len(part))
        key = jax.random.fold_in(rng, index)
        imagined = imagine_frames(world, policy, padded, config=config, rng=key)
        frames.append(imagined.frames[: len(part)])
    return np.concatenate(frames)


def imagined_p_yes(scorer, frames: np.ndarray, starts: Sequence[StartState], config) -> np.ndarray:
    """The reward model's P(yes) for imagined 5 Hz frames (N, 1 + K, V, H, W, 3), watched as
    `label` watches imagined episodes: `reward.camera`, held at 15 Hz."""
    camera = droid.CAMERA_NAMES.index(config.reward.camera)
    stride = int(config.world_model.frame_stride)
    videos = [held_frames(f[0, camera], f[1:, camera], stride) for f in frames]
    return scorer.p_yes(videos, [s.instruction for s in starts])
