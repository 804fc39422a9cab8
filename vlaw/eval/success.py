"""Success rates with Wilson 95 % intervals, and the table that compares policies per task.

The Wilson score interval (Wilson 1927) rather than the normal approximation: at the episode
counts a robot study affords (20-50 per task) and rates near 0 or 1, p ± 1.96 sqrt(p(1-p)/n)
leaves [0, 1] or collapses to a point, while Wilson's stays inside and keeps its coverage.
"""

import math
from collections.abc import Mapping, Sequence

Z_95 = 1.959963984540054  # the standard normal's 97.5 % quantile


def wilson_interval(successes: int, episodes: int, z: float = Z_95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval of `successes` out of `episodes`."""
    if episodes <= 0:
        raise ValueError(f"an interval needs episodes; got {episodes}")
    if not 0 <= successes <= episodes:
        raise ValueError(f"{successes} successes out of {episodes} episodes")
    p = successes / episodes
    denominator = 1.0 + z * z / episodes
    centre = (p + z * z / (2 * episodes)) / denominator
    half = z * math.sqrt(p * (1 - p) / episodes + z * z / (4 * episodes * episodes)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def task_success(successes: int, episodes: int) -> dict:
    """One task's figures as `evaluate` writes them to metrics.json."""
    low, high = wilson_interval(successes, episodes)
    return {
        "episodes": episodes,
        "successes": successes,
        "success_rate": successes / episodes,
        "ci95_low": low,
        "ci95_high": high,
    }


def format_rate(figures: Mapping) -> str:
    """ "0.40 [0.20, 0.64] (8/20)": the rate, its 95 % interval and the counts."""
    return (
        f"{figures['success_rate']:.2f} [{figures['ci95_low']:.2f}, {figures['ci95_high']:.2f}]"
        f" ({figures['successes']}/{figures['episodes']})"
    )


def success_table(rows: Sequence[tuple[str, Mapping[str, Mapping]]], tasks: Sequence[str]) -> str:
    """A plain-text table: one row per (name, {task: task_success(...)}), one column per task.
    A task a row lacks shows "-"."""
    header = ["policy", *tasks]
    body = [
        [name, *(format_rate(per_task[t]) if t in per_task else "-" for t in tasks)]
        for name, per_task in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])
