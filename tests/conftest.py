"""Test-wide settings, applied before JAX is imported anywhere.

- 8 fake CPU devices, so sharding tests can build a 2x4 mesh (single-device tests use device 0).
- JAX on the CPU even where a GPU exists (tests must never need one; `gpu` marks the few that do).
- MuJoCo renders headless through EGL.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402  (after the environment above: JAX must not see it unset)


@pytest.fixture(scope="session")
def record_real_rollouts():
    """`record(config, workdir, iteration)`: writes `iter_NN/real` as `collect` would, through
    the same recorder, with the scripted expert acting in place of iteration NN-1's trained
    policy (a trained policy costs minutes of compilation; these tests are about what the
    later phases do with real rollouts, not about who made them)."""

    def record(config, workdir: str, iteration: int) -> str:
        from vlaw import workdir as workdir_lib
        from vlaw.rollout.episodes import record_dataset

        directory = workdir_lib.real_dir(workdir, iteration)
        per_task = int(config.loop.real_rollouts_per_task)
        specs = workdir_lib.task_specs(config, "real", iteration, per_task)
        record_dataset(config, directory, specs, "real", iteration, "vlaw_real")
        return directory

    return record


@pytest.fixture(scope="session")
def write_random_world_model():
    """`write(config, workdir, iteration, seed=2)`: a world model of N(0, 0.05^2) weights, in
    pixel space unless `config.world_model.space` says latent, saved where train_world_model
    would put it (training one costs minutes of compilation; the phases that read it are
    tested for what they do with a world model, not for its quality). Returns its directory."""

    def write(config, workdir: str, iteration: int, seed: int = 2) -> str:
        import jax
        import numpy as np

        from vlaw import workdir as workdir_lib
        from vlaw.agents import world_model as wm

        spec = {"scaling_factor": 1.0, "residual_scale": 2.0}
        spec["vae"] = {"kind": "pixels" if config.world_model.space == "pixel" else "trained"}
        rng = np.random.default_rng(seed)
        params = jax.tree.map(
            lambda a: (0.05 * rng.standard_normal(a.shape)).astype(a.dtype),
            wm.abstract_params(config, spec),
        )
        directory = workdir_lib.checkpoint_dir(str(workdir), "world_model", iteration)
        wm.save_world_model(directory, params, spec=spec, step=1, ckpt_config=config.ckpt)
        return directory

    return write


# --------------------------------------------------------------------------------------------
# HTML reports: every relative link resolves, and a real headless Chromium renders the images.

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def linked_paths():
    """`linked_paths(html_path)`: see `_linked_paths`."""
    return _linked_paths


def _linked_paths(html_path: str) -> list[str]:
    """The local files an HTML page refers to (img src, a href), resolved beside it; absolute
    URLs and in-page anchors are reported as themselves, so a test can refuse them."""
    from html.parser import HTMLParser

    class Links(HTMLParser):
        def __init__(self):
            super().__init__()
            self.found = []

        def handle_starttag(self, tag, attrs):
            wanted = {"img": "src", "a": "href"}.get(tag)
            for name, value in attrs:
                if name == wanted and value is not None:
                    self.found.append(value)

    parser = Links()
    with open(html_path, encoding="utf-8") as f:
        parser.feed(f.read())
    base = os.path.dirname(html_path)
    return [
        link if ":" in link else os.path.normpath(os.path.join(base, link)) for link in parser.found
    ]


def _chromium(arguments: list[str], profile: str, timeout: int = 120):
    import subprocess

    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        *arguments,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def render_html(tmp_path):
    """`render(html_path)` -> (screenshot as an (H, W, 3) array, [(img src, naturalWidth)]) from
    headless Chromium: a wrapper page beside nothing (a <base> points at the report's folder)
    adds a script that writes each image's naturalWidth into the DOM once the page has loaded,
    and --dump-dom prints it. Skips where Chromium is not installed (.ci/run installs it)."""
    import re

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} absent (apt-get install -y chromium; .ci/run does)")

    def render(html_path: str):
        import numpy as np
        from PIL import Image

        html_path = os.path.abspath(html_path)
        with open(html_path, encoding="utf-8") as f:
            page = f.read()
        base = f'<base href="file://{os.path.dirname(html_path)}/">'
        script = (
            "<script>window.addEventListener('load', function () {"
            "for (const img of document.images) {"
            "img.setAttribute('data-natural-width', String(img.naturalWidth)); }"
            "document.body.setAttribute('data-loaded', 'yes'); });</script>"
        )
        wrapper = tmp_path / "wrapper.html"
        wrapper.write_text(
            page.replace("<head>", "<head>" + base, 1).replace("</body>", script + "</body>", 1)
        )
        shot = tmp_path / "screenshot.png"
        result = _chromium(
            [f"--screenshot={shot}", "--window-size=1200,2400", f"file://{html_path}"],
            str(tmp_path / "profile-shot"),
        )
        assert shot.exists(), result.stderr[-2000:]
        dom = _chromium(
            ["--virtual-time-budget=10000", "--dump-dom", f"file://{wrapper}"],
            str(tmp_path / "profile-dom"),
        )
        assert 'data-loaded="yes"' in dom.stdout, dom.stderr[-2000:]
        widths = re.findall(r'<img[^>]*?src="([^"]*)"[^>]*?data-natural-width="(\d+)"', dom.stdout)
        assert len(widths) == dom.stdout.count("<img"), "an <img> without its naturalWidth"
        return np.asarray(Image.open(shot).convert("RGB")), [(s, int(w)) for s, w in widths]

    return render
