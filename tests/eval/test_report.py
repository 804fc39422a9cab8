"""The report's parts on synthetic inputs: the PNG encoder against Pillow's decoder, the figure
layouts, the SVG charts as XML, and a whole report.html (every linked file exists, and headless
Chromium renders every image)."""

import io
import json
import os
import pathlib
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from PIL import Image

from vlaw.eval import charts, images, report
from vlaw.eval.success import task_success


def test_png_round_trips_through_pillow():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (7, 13, 3), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(images.encode_png(image))))
    np.testing.assert_array_equal(decoded, image)
    with pytest.raises(ValueError, match="uint8"):
        images.encode_png(image.astype(np.float32))


def test_strips_and_grids_lay_frames_out_enlarged_and_framed():
    frames = np.zeros((4, 8, 16, 3), np.uint8)
    strip = images.replay_strip(frames, frames + 50, np.array([True, True, True, False]))
    # 8-pixel frames enlarged 8x to 64; two rows with a 4-pixel gap; four columns.
    assert strip.shape == (2 * 64 + 4, 4 * 128 + 3 * 4, 3)
    assert tuple(strip[0, 3 * 132]) == images.MISSING_RGB  # past the recording: grey
    grid = images.rollout_grid(frames[0], [(frames + 50, True), (frames, False)], shown=3)
    assert grid.shape == (2 * 70 + 4, 4 * 134 + 3 * 4, 3)  # start + 3 frames, framed by 3 px
    assert tuple(grid[0, 134 + 4]) == images.SUCCESS_RGB
    assert tuple(grid[74, 134 + 4]) == images.FAILURE_RGB
    np.testing.assert_array_equal(images.shown_frames(10, 4), [0, 3, 6, 9])


def test_charts_are_standalone_svg():
    bars = charts.success_bars(
        ["scoop", "stack"], ["base", "iteration 1"], {("scoop", "base"): (0.4, 0.2, 0.6)}
    )
    lines = charts.line_chart("loss", [("iter_00", [1, 2, 3], [3.0, 2.0, float("nan")])])
    empty = charts.line_chart("loss", [("iter_00", [], [])])
    for svg in (bars, lines, empty):
        root = ElementTree.fromstring(svg)
        assert root.tag.endswith("svg") and "href" not in svg
    assert "iteration 1" in bars and "<polyline" in lines and "no values logged" in empty


def _metrics(iteration: int, successes: int) -> dict:
    name = "base" if iteration == 0 else f"iteration {iteration}"
    return {"iteration": iteration, "policy": name, "tasks": {"scoop": task_success(successes, 4)}}


def _analysis(directory: str) -> dict:
    """world_model.json as evaluate writes it, with its figures on disk."""
    os.makedirs(os.path.join(directory, report.FIGURES), exist_ok=True)
    frames = np.tile(np.arange(3, dtype=np.uint8)[:, None, None, None] * 80, (1, 8, 16, 3))
    strip = f"{report.FIGURES}/replay_00.png"
    grid = f"{report.FIGURES}/grid_00.png"
    images.write_png(
        os.path.join(directory, strip), images.replay_strip(frames, frames, np.ones(3, bool))
    )
    images.write_png(
        os.path.join(directory, grid), images.rollout_grid(frames[0], [(frames, True)])
    )
    clip = {"clip_id": "evaluate-01-scoop-7@0", "psnr": 21.5, "strip": strip}
    return {
        "world_model_checkpoint_dir": "checkpoints/world_model/iter_01",
        "reward_params": "checkpoints/reward/iter_01",
        "replay": {
            "dataset_dir": "iter_01/evaluate",
            "camera": "wrist_image_left",
            "seconds": 2.0,
            "chunks": 3,
            "frame_size": [8, 16],
            "summary": {"num_clips": 1, "psnr": 21.5, "psnr_copy_start": 20.0, "ssim": None},
            "notes": ["LPIPS not computed: no weights"],
            "clips": [clip],
        },
        "confusion": {
            "description": "whole episodes",
            "counts": {"tp": 1, "fn": 0, "tn": 0, "fp": 1, "accuracy": 0.5},
            "clips": [
                {**clip, "recorded": True, "imagined": True, "decided_by": "reward_model"},
                {"clip_id": "x@0", "recorded": False, "imagined": True, "decided_by": "label_file"},
            ],
        },
        "ranking": {
            "policies": [
                {"name": "base", "station_success_rate": 0.25, "imagined_success_rate": 0.5},
                {"name": "iteration 1", "station_success_rate": 0.5, "imagined_success_rate": 1},
            ],
            "pearson": 1.0,
            "spearman": 1.0,
            "pairs": {"concordant": 1, "discordant": 0, "tied": 0},
            "ranking_preserved": True,
            "rollouts_per_policy": 2,
            "grids": [{"policy": "iteration 1", "start": "evaluate-00-scoop-7", "image": grid}],
        },
    }


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    logs = {
        "policy": [("iter_00", [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)])],
        "world_model": [("iter_01", [{"step": 1, "loss": 0.5}])],
        "reward": [("iter_01", [])],
    }
    paths = []
    for iteration in (0, 1):
        directory = str(reports / f"iter_{iteration:02d}")
        os.makedirs(directory)
        history = [_metrics(i, i + 1) for i in range(iteration + 1)]
        analysis = _analysis(directory) if iteration else {"skipped": "no world model"}
        for name, payload in (
            (report.METRICS_FILE, history[-1]),
            (report.WORLD_MODEL_FILE, analysis),
        ):
            with open(os.path.join(directory, name), "w") as f:
                json.dump(payload, f)
        paths.append(
            report.write_report(
                directory,
                iteration=iteration,
                history=history,
                analysis=analysis,
                training_logs=logs,
            )
        )
    index = report.write_index(
        str(reports / report.INDEX_FILE),
        [(f"iter_{i:02d}/{report.REPORT_FILE}", i, _metrics(i, i + 1)) for i in (0, 1)],
    )
    return paths, index


def test_every_linked_file_exists(written, linked_paths):
    paths, index = written
    for page in [*paths, index]:
        links = linked_paths(page)
        assert links, page
        for link in links:
            assert ":" not in link, f"{page} links outside the run: {link}"
            assert os.path.isfile(link), f"{page} links to a missing {link}"
    text = pathlib.Path(paths[1]).read_text()
    for expected in ("Action replay", "TP 1", "Pearson r 1.000", "ranking preserved", "n/a"):
        assert expected in text
    assert "Not evaluated: no world model" in pathlib.Path(paths[0]).read_text()


def test_chromium_renders_every_image(written, render_html):
    paths, index = written
    screenshot, widths = render_html(paths[1])
    # Success chart, replay strip, one confusion strip, grid, two loss curves (reward: none).
    assert len(widths) == pathlib.Path(paths[1]).read_text().count("<img") == 6
    assert all(width > 0 for _, width in widths), widths
    assert screenshot.std() > 5, "blank screenshot"
    assert len(np.unique(screenshot.reshape(-1, 3), axis=0)) > 10
