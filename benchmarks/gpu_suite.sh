#!/usr/bin/env bash
# The GPU benchmark suite (benchmarks/gpu_suite.py): every hot path at paper size on one GPU,
# each beside its PyTorch peer, one table, under 8 minutes of device time compile included.
#
# The device command (one GPU, the repository root, jax[cuda] + torch CUDA + transformers +
# diffusers + this project's runtime dependencies installed; figures land under $OUT, or
# benchmarks/gpu_suite_results):
#
#   PYTHONUNBUFFERED=1 timeout 560 bash benchmarks/gpu_suite.sh
#
# On this workplace's lent GPU machine, whose image lacks ml_collections and diffusers: run
# `bash benchmarks/gpu_wheels.sh` here once, then call the device with carry [".whl"],
# timeout_s 600, and this command:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && PYTHON=python3 PYTHONUNBUFFERED=1 timeout 560 bash benchmarks/gpu_suite.sh
#
# It stops itself within 470 s (--budget_s); the outer timeout is a backstop. A second command
# in the same lease runs what the first left (timed out, out of memory or not reached), e.g.:
#
#   timeout 300 bash benchmarks/gpu_suite.sh --parts=imagine --cap=imagine.jax=280
#   timeout 300 bash benchmarks/gpu_suite.sh --parts=policy_step --set=policy_batch=16
#
# Then, here: python benchmarks/gpu_suite.py --append_results=<the fetched $OUT> appends the
# section to benchmarks/RESULTS.md. CPU smoke test (tiny, minutes): bash benchmarks/gpu_suite.sh
# --preset=tiny. Python: $PYTHON, else the repository's .venv, else python3.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$python" benchmarks/gpu_suite.py "$@"
