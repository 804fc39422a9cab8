"""A study's figures: success per method, task and iteration over seeds (table and Figure 7's
bar chart), and the reward decision's confusion against known outcomes (Table 3).

Everything here is a function of plain records, so it is tested on numbers written by hand;
`vlaw.study` gathers the records from the run directories.

Two summaries of one (method, iteration, task) cell, because they answer different questions:
- pooled: every seed's evaluation episodes counted together, successes / episodes, with the
  Wilson 95 % interval of that binomial count. Its width reflects the episodes evaluated; it
  treats the seeds' policies as one policy, so it leaves out how much training varies.
- across seeds: the mean of the per-seed success rates, their sample standard deviation and
  range. With 3 seeds this is the honest measure of run-to-run variation, too few for an
  interval of its own.
"""

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from vlaw.eval.confusion import confusion
from vlaw.eval.success import wilson_interval

BASE = "base"  # the shared warm-start policy: iteration 0 of every method
# The reward model's plain yes/no answer from the stored P(yes) alone: P(yes) > 0.5 is
# P(yes) > P(no) where the two tokens take all the mass (the label phase's summary holds the
# exact P(yes) > P(no) matrix, computed while both were at hand).
ARGMAX_THRESHOLD = 0.5
TABLE_NOTE = (
    "Each cell: the success rate with all seeds' evaluation episodes pooled, its Wilson 95 % "
    "interval [low, high] and (successes/episodes); below it, the mean ± sample standard "
    "deviation of the per-seed success rates over n seeds."
)


def pool_seeds(per_seed: Mapping[int, tuple[int, int]]) -> dict:
    """{seed: (successes, episodes)} -> the pooled rate with its Wilson interval and the
    across-seed mean, sample standard deviation (None for one seed), min and max."""
    successes = sum(s for s, _ in per_seed.values())
    episodes = sum(n for _, n in per_seed.values())
    low, high = wilson_interval(successes, episodes)
    rates = np.array([s / n for s, n in per_seed.values()])
    return {
        "successes": successes,
        "episodes": episodes,
        "success_rate": successes / episodes,
        "ci95_low": low,
        "ci95_high": high,
        "num_seeds": len(rates),
        "seed_mean": float(rates.mean()),
        "seed_sd": float(rates.std(ddof=1)) if len(rates) > 1 else None,
        "seed_min": float(rates.min()),
        "seed_max": float(rates.max()),
        "per_seed": {
            str(seed): {"successes": s, "episodes": n} for seed, (s, n) in per_seed.items()
        },
    }


def aggregate(records: Iterable[Mapping], order: Sequence[str]) -> list[dict]:
    """Records {method, iteration, task, seed, successes, episodes} (one per evaluated policy
    and task) -> one row per (method, iteration, task) with `pool_seeds`'s figures, in
    `order` of methods, then iteration, then task as first seen."""
    cells: dict[tuple, dict[int, tuple[int, int]]] = {}
    for r in records:
        key = (r["method"], int(r["iteration"]), r["task"])
        if int(r["seed"]) in cells.setdefault(key, {}):
            raise ValueError(f"two records of {key} for seed {r['seed']}")
        cells[key][int(r["seed"])] = (int(r["successes"]), int(r["episodes"]))
    rank = {name: i for i, name in enumerate(order)}
    keys = sorted(cells, key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1]))
    return [
        {
            "method": m,
            "iteration": it,
            "label": row_label(m, it),
            "task": t,
            **pool_seeds(cells[m, it, t]),
        }
        for m, it, t in keys
    ]


def row_label(method: str, iteration: int) -> str:
    """Figure 7's names: "base", then "<method>-<iteration>" (the paper's "Ours-1")."""
    return BASE if method == BASE else f"{method}-{iteration}"


def _labels(rows: Sequence[Mapping]) -> list[str]:
    return list(dict.fromkeys(row["label"] for row in rows))


def _cell(row: Mapping) -> str:
    spread = f"{row['seed_mean']:.2f}"
    spread += f" ± {row['seed_sd']:.2f}" if row["seed_sd"] is not None else ""
    return (
        f"{row['success_rate']:.2f} [{row['ci95_low']:.2f}, {row['ci95_high']:.2f}] "
        f"({row['successes']}/{row['episodes']})<br>{spread} (n={row['num_seeds']})"
    )


def markdown_table(rows: Sequence[Mapping], tasks: Sequence[str], title: str) -> str:
    """One line per (method, iteration), one column per task; "-" where nothing is done."""
    by_key = {(row["label"], row["task"]): row for row in rows}
    lines = [f"## {title}", "", TABLE_NOTE, "", "| policy | " + " | ".join(tasks) + " |"]
    lines.append("|" + " --- |" * (len(tasks) + 1))
    for label in _labels(rows):
        cells = [_cell(by_key[label, t]) if (label, t) in by_key else "-" for t in tasks]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def decision_confusion(p_yes: np.ndarray, success: np.ndarray, threshold: float) -> dict:
    """The reward decision P(yes) > threshold against the known outcome (`confusion`)."""
    return confusion(np.asarray(p_yes) > threshold, np.asarray(success, bool))


def confusion_markdown(
    entries: Sequence[Mapping],
    title: str,
    note: str,
    extra: Sequence[tuple[str, str]] = (),
) -> str:
    """Rows {name, tp, fp, tn, fn, precision, recall, kappa, ...} as a markdown table (kappa:
    agreement beyond chance, `confusion.confusion`); `extra`: (column header, entry key) of
    further numeric columns."""

    def number(value) -> str:
        return "-" if value is None else f"{value:.2f}"

    headers = ["", "TP", "FN", "TN", "FP", "precision", "recall", "kappa", *(h for h, _ in extra)]
    lines = [f"## {title}", "", note, "", "| " + " | ".join(headers) + " |"]
    lines.append("|" + " --- |" * len(headers))
    for e in entries:
        cells = [e["name"], *(str(e[k]) for k in ("tp", "fn", "tn", "fp"))]
        keys = ("precision", "recall", "kappa", *(k for _, k in extra))
        cells += [number(e.get(k)) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Figure 7 as SVG, written here (no plotting library is a runtime dependency).

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3")
BASE_COLOUR = "#8c8c8c"
BAR, GAP, GROUP_GAP = 18, 3, 28  # px: bar width, between bars, between task groups
PLOT_HEIGHT, LEFT, TOP, BOTTOM = 220, 48, 40, 46  # px


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def bar_chart_svg(rows: Sequence[Mapping], tasks: Sequence[str], title: str) -> str:
    """Grouped bars as Figure 7: per task, the base policy then each method after each
    iteration (lighter: iteration 1), the pooled success rate with its Wilson 95 % interval as
    an error bar."""
    labels = _labels(rows)
    methods = list(dict.fromkeys(row["method"] for row in rows if row["method"] != BASE))
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(methods)}
    last_iteration = {m: max(r["iteration"] for r in rows if r["method"] == m) for m in methods}
    by_key = {(row["label"], row["task"]): row for row in rows}
    group_width = len(labels) * (BAR + GAP) - GAP
    width = LEFT + len(tasks) * (group_width + GROUP_GAP) + 160
    height = TOP + PLOT_HEIGHT + BOTTOM

    def y(rate: float) -> float:
        return TOP + PLOT_HEIGHT * (1.0 - rate)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{LEFT}" y="{TOP - 20}" font-size="13">{_escape(title)}</text>',
    ]
    for tick in np.linspace(0.0, 1.0, 6):
        parts.append(
            f'<line x1="{LEFT}" x2="{width - 160}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            'stroke="#e0e0e0"/>'
        )
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:.1f}</text>'
        )
    parts.append(
        f'<text x="12" y="{TOP + PLOT_HEIGHT / 2}" transform="rotate(-90 12 '
        f'{TOP + PLOT_HEIGHT / 2})" text-anchor="middle">success rate</text>'
    )
    for g, task in enumerate(tasks):
        x0 = LEFT + GROUP_GAP / 2 + g * (group_width + GROUP_GAP)
        for b, label in enumerate(labels):
            row = by_key.get((label, task))
            if row is None:
                continue
            x = x0 + b * (BAR + GAP)
            fill, opacity = _bar_style(row, colour, last_iteration)
            rate = row["success_rate"]
            parts.append(
                f'<rect x="{x:.1f}" y="{y(rate):.1f}" width="{BAR}" '
                f'height="{PLOT_HEIGHT * rate:.1f}" fill="{fill}" fill-opacity="{opacity}">'
                f"<title>{_escape(label)} {_escape(task)}: {rate:.2f} "
                f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}]</title></rect>"
            )
            mid = x + BAR / 2
            low, high = y(row["ci95_low"]), y(row["ci95_high"])
            parts.append(
                f'<path d="M{mid:.1f} {low:.1f}V{high:.1f}M{mid - 4:.1f} {low:.1f}h8'
                f'M{mid - 4:.1f} {high:.1f}h8" stroke="#222" fill="none"/>'
            )
        parts.append(
            f'<text x="{x0 + group_width / 2:.1f}" y="{TOP + PLOT_HEIGHT + 18}" '
            f'text-anchor="middle">{_escape(task)}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{width - 160}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#222"/>'
    )
    for i, label in enumerate(labels):
        row = next(r for r in rows if r["label"] == label)
        fill, opacity = _bar_style(row, colour, last_iteration)
        ly = TOP + i * 16
        parts.append(
            f'<rect x="{width - 150}" y="{ly}" width="12" height="12" fill="{fill}" '
            f'fill-opacity="{opacity}"/>'
        )
        parts.append(f'<text x="{width - 132}" y="{ly + 10}">{_escape(label)}</text>')
    note = "bars: pooled success over seeds; whiskers: Wilson 95 % interval"
    parts.append(f'<text x="{LEFT}" y="{height - 8}" fill="#555">{note}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _bar_style(row: Mapping, colour: Mapping, last_iteration: Mapping) -> tuple[str, float]:
    if row["method"] == BASE:
        return BASE_COLOUR, 1.0
    final = row["iteration"] == last_iteration[row["method"]]
    return colour[row["method"]], 1.0 if final else 0.55


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean of the finite values, or None (a check that did not run)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None
