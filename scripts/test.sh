#!/usr/bin/env bash
# Set up, then run everything CI checks: lint, unit tests, notebooks (papermill + nbval),
# and the re-evaluation of the shipped models.
# Usage: bash scripts/test.sh      (CIFARSEP_DATA defaults to ../shared/cifar10 when it exists)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${CIFARSEP_DATA:-}" ] && [ -d ../shared/cifar10 ]; then
  CIFARSEP_DATA=../shared/cifar10
fi
if [ -n "${CIFARSEP_DATA:-}" ]; then
  CIFARSEP_DATA="$(cd "$CIFARSEP_DATA" && pwd)"
  export CIFARSEP_DATA
fi
.venv/bin/ruff check cifarsep_lib tests notebooks scripts
.venv/bin/ruff format --check cifarsep_lib tests notebooks scripts
.venv/bin/pytest -p no:cacheprovider -q
.venv/bin/pytest -p no:cacheprovider -q --nbval-lax \
  notebooks/01_data_exploration.ipynb \
  notebooks/02_separable_convolution_theory.ipynb \
  notebooks/03_model_construction.ipynb

# Backend neutrality: the same library under JAX, in a second environment without TensorFlow.
PYTHON=${PYTHON:-python3}
[ -x .venv-jax/bin/python ] || "$PYTHON" -m venv .venv-jax
.venv-jax/bin/python -m pip install -q -c requirements-lock.txt -c requirements-jax-lock.txt -e . jax pytest
KERAS_BACKEND=jax .venv-jax/bin/pytest -p no:cacheprovider -q tests/test_backend_smoke.py
