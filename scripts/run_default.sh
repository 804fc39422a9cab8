#!/usr/bin/env bash
# Sets up the environment and runs vlaw on the built-in simulated DROID station (scoop, `sim`
# preset): `collect` (25 scripted-expert demonstrations and 20 rollouts, with success rates),
# then `train_policy` (the base pi0.5 policy trained on the successful episodes). Until the
# whole loop lands these are the phases that run from an empty workdir; rerunning resumes.
# Extra arguments go to launch.py (e.g. --config.sim.num_workers=4).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/venv.sh"
cd "$ROOT"
WORKDIR="${VLAW_WORKDIR:-runs/scoop_sim}"
CONFIG="${VLAW_CONFIG:-experiments/scoop.py:sim}"  # CI runs the same path at :tiny
for phase in collect train_policy; do
  python launch.py --config="$CONFIG" --workdir="$WORKDIR" --phase="$phase" "$@"
done
