#!/usr/bin/env bash
# Sets up the environment and runs VLAW (Algorithm 1) on the built-in simulated DROID station,
# scoop at the `sim` preset: the warm start (scripted-expert demonstrations, the base pi0.5
# policy fine-tuned on them, its evaluation), then `loop.iterations` = 2 iterations of real
# rollouts, world-model and reward-model fine-tuning, imagination, labelling, policy
# post-training and evaluation. It ends by printing the success table (base, iteration 1,
# iteration 2, with 95 % intervals). Rerunning resumes where it stopped. Extra arguments go to
# launch.py (e.g. --config.sim.num_workers=4).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/venv.sh"
cd "$ROOT"
WORKDIR="${VLAW_WORKDIR:-runs/scoop_sim}"
CONFIG="${VLAW_CONFIG:-experiments/scoop.py:sim}"  # CI runs the same path at :tiny
python launch.py --config="$CONFIG" --workdir="$WORKDIR" "$@"
