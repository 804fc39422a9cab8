#!/usr/bin/env bash
# Sets up the environment with the test extras, then lints and runs the default test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow` for the long tests).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/venv.sh" test
cd "$ROOT"
ruff check .
ruff format --check .
exec python -m pytest -q "$@"
