#!/usr/bin/env bash
# Sets up the environment and runs vlaw on the built-in simulated DROID station.
# Any extra arguments are passed to launch.py (e.g. --phase=collect, --config.sim.num_workers=4).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/venv.sh"
cd "$ROOT"
exec python launch.py --config=experiments/scoop.py:sim --workdir="${VLAW_WORKDIR:-runs/scoop_sim}" "$@"
