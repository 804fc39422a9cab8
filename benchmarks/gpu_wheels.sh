#!/usr/bin/env bash
# Wheels the lent GPU machines' image lacks for the suite, fetched here into .whl/ (git-ignored)
# for a device call to carry (/work/.library/device/README.md). That image's python3 has
# jax[cuda13] 0.11.2, torch 2.11, flax, optax, orbax, chex, sentencepiece, huggingface_hub 1.33
# and transformers 5.17 (KINDS.md); the suite's imports (no TensorFlow, no MuJoCo) also need
# ml_collections and diffusers. Pure-Python wheels at this project's versions, ~6.5 MB.
# transformers stays the image's 5.17 (5.25 would pull huggingface_hub 2.x, httpx2 and more):
# the policy peer ran on it (shared/research/device_measurements.md); if reward_label's
# conversion does not, its row says so and the other parts are unaffected.
#
# Once, here, from the repository root:   bash benchmarks/gpu_wheels.sh
# Then the device call, carry [".whl"], timeout_s 600 (benchmarks/README.md):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#     --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site && \
#   PYTHON=python3 PYTHONUNBUFFERED=1 timeout 560 bash benchmarks/gpu_suite.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python="${PYTHON:-python3}"
"$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform any -d .whl \
  ml_collections==1.1.0 diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0
ls -la .whl
