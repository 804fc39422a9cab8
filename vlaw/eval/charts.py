"""SVG charts of the report, written as text (matplotlib is not a dependency): grouped bars with
95 % intervals (paper Fig. 7: success per task and policy) and loss curves.

Each function returns a standalone `<svg>` document (no scripts, no external references) that a
browser shows as an `<img>`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

# Colour-blind-safe (Okabe-Ito), one per series in order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
FONT = 'font-family="sans-serif" font-size="12"'


def _svg(width: int, height: int, body: Sequence[str]) -> str:
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">',
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
            *body,
            "</svg>",
            "",
        ]
    )


def _text(x: float, y: float, text: str, anchor: str = "middle", extra: str = "") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {FONT} {extra}>'
        f"{html.escape(str(text))}</text>"
    )


def _legend(series: Sequence[str], x: float, y: float) -> list[str]:
    out = []
    for i, name in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        out.append(
            f'<rect x="{x:.1f}" y="{y + 16 * i:.1f}" width="10" height="10" fill="{colour}"/>'
        )
        out.append(_text(x + 14, y + 16 * i + 9, name, anchor="start"))
    return out


def success_bars(
    groups: Sequence[str],
    series: Sequence[str],
    values: Mapping[tuple[str, str], tuple[float, float, float]],
    title: str = "Success rate (95 % Wilson interval)",
) -> str:
    """Grouped bars: one group per task, one bar per policy (series), height the success rate
    and a whisker for its interval. values: (group, series) -> (rate, low, high); a missing
    pair leaves a gap."""
    bar, gap, left, top, plot_h = 18, 22, 48, 30, 220
    group_w = bar * len(series) + gap
    width = left + group_w * len(groups) + 170
    height = top + plot_h + 40
    body = [_text(width / 2, 18, title)]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + group_w * len(groups)}" y2="{y:.1f}" '
            'stroke="#dddddd"/>'
        )
        body.append(_text(left - 6, y + 4, f"{tick:.2f}", anchor="end"))
    for g, group in enumerate(groups):
        x0 = left + g * group_w + gap / 2
        body.append(_text(x0 + bar * len(series) / 2, top + plot_h + 18, group))
        for s, name in enumerate(series):
            if (group, name) not in values:
                continue
            rate, low, high = values[(group, name)]
            x = x0 + s * bar
            y = top + plot_h * (1 - rate)
            colour = PALETTE[s % len(PALETTE)]
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 2}" height="{plot_h * rate:.1f}" '
                f'fill="{colour}"><title>{html.escape(name)}: {rate:.2f} '
                f"[{low:.2f}, {high:.2f}]</title></rect>"
            )
            cx = x + (bar - 2) / 2
            y_low, y_high = top + plot_h * (1 - low), top + plot_h * (1 - high)
            body.append(
                f'<line x1="{cx:.1f}" y1="{y_low:.1f}" x2="{cx:.1f}" y2="{y_high:.1f}" '
                'stroke="#333333"/>'
            )
    body.append(
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + group_w * len(groups)}" '
        f'y2="{top + plot_h}" stroke="#333333"/>'
    )
    body += _legend(series, left + group_w * len(groups) + 16, top)
    return _svg(int(width), int(height), body)


def _nice_range(values: Sequence[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    if low == high:
        return low - 1.0, high + 1.0
    pad = 0.05 * (high - low)
    return low - pad, high + pad


def line_chart(
    title: str,
    lines: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    x_label: str = "step",
    log_y: bool = False,
) -> str:
    """One polyline per (label, xs, ys); `log_y` plots log10(y) (values <= 0 dropped), as a
    loss that falls by decades reads better so."""
    left, top, plot_w, plot_h = 60, 30, 360, 200
    width, height = left + plot_w + 190, top + plot_h + 44
    body = [_text(left + plot_w / 2, 18, title)]
    points = []
    for label, xs, ys in lines:
        pairs = [
            (float(x), math.log10(y) if log_y else float(y))
            for x, y in zip(xs, ys, strict=True)
            if math.isfinite(float(y)) and (y > 0 or not log_y)
        ]
        points.append((label, pairs))
    every = [p for _, pairs in points for p in pairs]
    if not every:
        body.append(_text(left + plot_w / 2, top + plot_h / 2, "no values logged"))
        return _svg(width, height, body)
    x_low, x_high = _nice_range([x for x, _ in every])
    y_low, y_high = _nice_range([y for _, y in every])

    def at(x: float, y: float) -> tuple[float, float]:
        return (
            left + plot_w * (x - x_low) / (x_high - x_low),
            top + plot_h * (1 - (y - y_low) / (y_high - y_low)),
        )

    for k in range(5):
        y_value = y_low + (y_high - y_low) * k / 4
        _, y = at(x_low, y_value)
        shown = f"{10**y_value:.3g}" if log_y else f"{y_value:.3g}"
        body.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#dddddd"/>'
        )
        body.append(_text(left - 6, y + 4, shown, anchor="end"))
    body.append(_text(left, top + plot_h + 18, f"{x_low:.0f}", anchor="start"))
    body.append(_text(left + plot_w, top + plot_h + 18, f"{x_high:.0f}", anchor="end"))
    body.append(_text(left + plot_w / 2, top + plot_h + 36, x_label))
    for i, (_, pairs) in enumerate(points):
        colour = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in (at(*p) for p in pairs))
        if len(pairs) == 1:
            x, y = at(*pairs[0])
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        elif pairs:
            body.append(
                f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
    body += _legend([label for label, _ in points], left + plot_w + 16, top)
    return _svg(width, height, body)
