"""The per-iteration report, `reports/iter_NN/report.html`, and the run's `reports/index.html`.

`write_report` renders what `evaluate` gathered from the run directory (its paths are
`vlaw.workdir`'s): the metrics.json of every iteration up to NN (the success table and the bar
chart, paper Fig. 7), world_model.json with the figures drawn beside it (action replay and its
scores, Table 1; the event confusion matrix; the world model as a policy evaluator; rollout
grids, Fig. 8) and the trainers' metrics of the three models (loss curves). Nothing here runs
a model, so a report can be rewritten at any time. Self-contained: SVG and PNG files beside
the page, relative links only, no script, nothing fetched from a network.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence

from vlaw.eval import charts
from vlaw.eval.success import format_rate

REPORT_FILE, INDEX_FILE = "report.html", "index.html"
METRICS_FILE, WORLD_MODEL_FILE = "metrics.json", "world_model.json"
FIGURES = "figures"  # beside report.html
MODELS = ("policy", "world_model", "reward")

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f3f3f3; }
.success { color: #2e7d32; } .failure { color: #c62828; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; height: auto; image-rendering: pixelated; }
.note { color: #555; font-size: 0.9em; }
"""


def policy_name(metrics: Mapping) -> str:
    return str(metrics.get("policy", f"iteration {metrics.get('iteration')}"))


def _esc(value) -> str:
    return html.escape(str(value))


def _number(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return _esc(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _outcome(success: bool) -> str:
    return (
        '<span class="success">success</span>'
        if success
        else ('<span class="failure">failure</span>')
    )


def _figure(src: str, caption: str) -> str:
    """An image with its caption (HTML); the alt text is the file's name."""
    image = f'<img src="{_esc(src)}" alt="{_esc(os.path.basename(src))}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


# --------------------------------------------------------------------------------------------
# Sections.


def _success_section(history: Sequence[Mapping], figures_dir: str) -> str:
    tasks = sorted({t for m in history for t in m["tasks"]})
    names = [policy_name(m) for m in history]
    rows = [
        [_esc(name)] + [_esc(format_rate(m["tasks"][t])) if t in m["tasks"] else "-" for t in tasks]
        for name, m in zip(names, history, strict=True)
    ]
    values = {
        (t, name): (
            m["tasks"][t]["success_rate"],
            m["tasks"][t]["ci95_low"],
            m["tasks"][t]["ci95_high"],
        )
        for name, m in zip(names, history, strict=True)
        for t in m["tasks"]
    }
    with open(os.path.join(figures_dir, "success.svg"), "w") as f:
        f.write(charts.success_bars(tasks, names, values))
    return (
        "<h2>Success on the station</h2>"
        '<p class="note">Rate, 95 % Wilson interval and counts per task; every policy on the '
        "same layouts (reports/iter_MM/metrics.json).</p>"
        + _table(["policy", *tasks], rows)
        + _figure(f"{FIGURES}/success.svg", "Success rate per task and policy (paper Fig. 7)")
    )


def _replay_section(replay: Mapping) -> str:
    if "skipped" in replay:
        return f"<h2>Action replay</h2><p>Not run: {_esc(replay['skipped'])}</p>"
    s = replay["summary"]
    rows = [
        [
            _number(s.get("num_clips")),
            _number(s.get("psnr"), 2),
            _number(s.get("psnr_copy_start"), 2),
            _number(s.get("ssim")),
            _number(s.get("ssim_copy_start")),
            _number(s.get("lpips")),
        ]
    ]
    notes = "".join(f"<li>{_esc(n)}</li>" for n in replay.get("notes", []))
    figures = "".join(
        _figure(
            c["strip"],
            f"{_esc(c['clip_id'])}: recorded (top) | world model (bottom); "
            f"PSNR {_number(c.get('psnr'), 2)} dB",
        )
        for c in replay.get("clips", [])
        if "strip" in c
    )
    return (
        "<h2>Action replay in the world model (Table 1)</h2>"
        f'<p class="note">Recorded actions of held-out episodes ({_esc(replay["dataset_dir"])}) '
        f"fed to the world model chunk by chunk for {_number(replay['seconds'], 1)} s "
        f"({replay['chunks']} chunks) from a recorded frame; camera {_esc(replay['camera'])}, "
        "conditioning frame excluded, at the world model's resolution "
        f"{_esc(replay['frame_size'])}. PSNR (copy start): the start frame held still, the "
        "baseline a world model must beat.</p>"
        + _table(
            ["clips", "PSNR (dB)", "PSNR copy start (dB)", "SSIM", "SSIM copy start", "LPIPS"], rows
        )
        + (f"<ul class='note'>{notes}</ul>" if notes else "")
        + figures
    )


def _confusion_section(section: Mapping) -> str:
    if "skipped" in section:
        return f"<h2>Event confusion</h2><p>Not run: {_esc(section['skipped'])}</p>"
    c = section["counts"]
    matrix = _table(
        ["recorded \\ imagined", "success", "failure"],
        [
            ["success", f"TP {c['tp']}", f"FN {c['fn']}"],
            ["failure", f"FP {c['fp']}", f"TN {c['tn']}"],
        ],
    )
    rows = [
        [
            _esc(clip["clip_id"]),
            _outcome(clip["recorded"]),
            _outcome(clip["imagined"]),
            _esc(clip["decided_by"]),
            _number(clip.get("p_yes")),
        ]
        for clip in section["clips"]
    ]
    figures = "".join(
        _figure(
            clip["strip"],
            f"{_esc(clip['clip_id'])}: recorded {_outcome(clip['recorded'])}, imagined "
            f"{_outcome(clip['imagined'])}",
        )
        for clip in section["clips"]
        if "strip" in clip
    )
    return (
        "<h2>Event confusion (Table 1, right)</h2>"
        f'<p class="note">{_esc(section["description"])}</p>'
        + matrix
        + f"<p>accuracy {_number(c.get('accuracy'))}, precision {_number(c.get('precision'))}, "
        f"recall {_number(c.get('recall'))}, kappa {_number(c.get('kappa'))} (0: chance)</p>"
        + _table(["clip", "recorded", "imagined", "decided by", "P(yes)"], rows)
        + figures
    )


def _ranking_section(section: Mapping) -> str:
    if "skipped" in section:
        title = "<h2>The world model as a policy evaluator</h2>"
        return f"{title}<p>Not run: {_esc(section['skipped'])}</p>"
    rows = [
        [
            _esc(p["name"]),
            _number(p["station_success_rate"], 2),
            _number(p["imagined_success_rate"], 2),
        ]
        for p in section["policies"]
    ]
    pairs = section["pairs"]
    grids = "".join(
        _figure(
            g["image"],
            f"{_esc(g['policy'])} from {_esc(g['start'])}: recorded start (grey), imagined "
            "futures framed green (reward model: success) or red (failure)",
        )
        for g in section.get("grids", [])
    )
    return (
        "<h2>The world model as a policy evaluator</h2>"
        f'<p class="note">Each policy imagined {section["rollouts_per_policy"]} times from the '
        "same recorded starts (evaluate's layouts), each rollout decided by the reward model "
        "(P(yes) &gt; alpha); station rates from metrics.json.</p>"
        + _table(["policy", "station success", "imagined success"], rows)
        + f"<p>Pearson r {_number(section['pearson'])}, Spearman rho "
        f"{_number(section['spearman'])}; pairs concordant {pairs['concordant']}, discordant "
        f"{pairs['discordant']}, tied {pairs['tied']}; ranking preserved: "
        f"<b>{'yes' if section['ranking_preserved'] else 'no'}</b></p>"
        + "<h3>Imagined rollouts (paper Fig. 8)</h3>"
        + grids
    )


def _loss_section(training_logs: Mapping[str, Sequence], figures_dir: str) -> str:
    figures = []
    for model, runs in training_logs.items():
        lines = []
        for label, logged in runs:
            logged = [m for m in logged if "loss" in m]
            if logged:
                lines.append((label, [m["step"] for m in logged], [m["loss"] for m in logged]))
        if not lines:
            continue
        name = f"loss_{model}.svg"
        with open(os.path.join(figures_dir, name), "w") as f:
            f.write(charts.line_chart(f"{model} training loss", lines))
        caption = f"{model}: loss per step, one line per iteration"
        figures.append(_figure(f"{FIGURES}/{name}", caption))
    body = "".join(figures) or "<p>No trainer metrics in this run.</p>"
    return "<h2>Training losses</h2>" + body


# --------------------------------------------------------------------------------------------
# Pages.


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def write_report(
    directory: str,
    *,
    iteration: int,
    history: Sequence[Mapping],
    analysis: Mapping,
    training_logs: Mapping[str, Sequence[tuple[str, Sequence[Mapping]]]],
) -> str:
    """Writes `directory`/report.html and its figures; returns the page's path.

    history: the metrics.json payloads of iterations 0..NN that exist; analysis: world_model.json
    (empty where `evaluate` ran no world-model check); training_logs: model -> [(label, the
    trainer's metrics lines)], one entry per iteration."""
    figures_dir = os.path.join(directory, FIGURES)
    os.makedirs(figures_dir, exist_ok=True)
    sections = [
        f"<h1>VLAW report, iteration {iteration}</h1>",
        f'<p><a href="../{INDEX_FILE}">all iterations</a> | '
        f'<a href="{METRICS_FILE}">metrics.json</a>'
        + (f' | <a href="{WORLD_MODEL_FILE}">world_model.json</a>' if analysis else "")
        + "</p>",
        _success_section(history, figures_dir) if history else "<p>No metrics yet.</p>",
    ]
    if "skipped" in analysis:
        sections.append(f"<h2>World model</h2><p>Not evaluated: {_esc(analysis['skipped'])}</p>")
    elif analysis:
        sections.append(
            f'<p class="note">World model: {_esc(analysis["world_model_checkpoint_dir"])}; '
            f"reward model: {_esc(analysis.get('reward_params') or 'none')}</p>"
        )
        sections.append(_replay_section(analysis["replay"]))
        sections.append(_confusion_section(analysis["confusion"]))
        sections.append(_ranking_section(analysis["ranking"]))
    sections.append(_loss_section(training_logs, figures_dir))
    path = os.path.join(directory, REPORT_FILE)
    _write_text(path, _page(f"VLAW iteration {iteration}", "".join(sections)))
    return path


def write_index(path: str, reports: Sequence[tuple[str, int, Mapping | None]]) -> str:
    """The run's index page at `path`: one row per (relative link to a report.html, its
    iteration, its metrics.json payload or None)."""
    rows = []
    for href, iteration, metrics in reports:
        link = f'<a href="{_esc(href)}">iteration {iteration}</a>'
        rates = ""
        if metrics:
            rates = "; ".join(
                f"{_esc(task)} {_esc(format_rate(figures))}"
                for task, figures in metrics["tasks"].items()
            )
            link += f" ({_esc(policy_name(metrics))})"
        rows.append([link, rates])
    body = "<h1>VLAW run reports</h1>" + _table(["report", "success on the station"], rows)
    _write_text(path, _page("VLAW run reports", body))
    return path


def _write_text(path: str, text: str) -> None:
    """Atomically (a reader never sees half a page)."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temporary, path)
