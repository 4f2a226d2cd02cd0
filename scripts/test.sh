#!/usr/bin/env bash
# Set up, then run everything CI checks: lint, unit tests, every notebook headless
# (papermill), notebooks 01-03 against their committed outputs (nbval), the shipped
# models' re-evaluation, the backend tests under JAX (without TensorFlow) and PyTorch in
# .venv-jax/.venv-torch, and the JupyterLab browser test (Chromium and Playwright; each
# extra is skipped if it cannot be installed).
# Usage: bash scripts/test.sh      (CIFARSEP_DATA defaults to ../shared/cifar10 when it exists)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
bash scripts/setup.sh
if [ -z "${CIFARSEP_DATA:-}" ] && [ -d ../shared/cifar10 ]; then
  CIFARSEP_DATA=../shared/cifar10
fi
if [ -n "${CIFARSEP_DATA:-}" ]; then
  CIFARSEP_DATA="$(cd "$CIFARSEP_DATA" && pwd)"  # notebooks run from notebooks/
  export CIFARSEP_DATA
fi

# A second environment with Keras and JAX but no TensorFlow, for the backend tests.
[ -x .venv-jax/bin/python ] || "$PYTHON" -m venv .venv-jax
.venv-jax/bin/python -m pip install -q -c requirements-lock.txt -c requirements-jax-lock.txt -e . jax pytest
export CIFARSEP_JAX_PYTHON="$PWD/.venv-jax/bin/python"

# The same for PyTorch, where its CPU wheel installs (torch 2.13.0 is on local disk on the CI machines).
[ -x .venv-torch/bin/python ] || "$PYTHON" -m venv .venv-torch
if .venv-torch/bin/python -m pip install -q -c requirements-lock.txt -c requirements-torch-lock.txt -e . torch pytest; then
  TORCH_OK=1
else
  TORCH_OK=0
  echo "PyTorch could not be installed here: the PyTorch backend test is skipped"
fi

# Headless Chromium and Playwright for the JupyterLab test (skipped if they cannot be installed).
bash scripts/install_browser.sh .venv || echo "browser install failed: the JupyterLab test will be skipped"

.venv/bin/ruff check cifarsep_lib tests notebooks scripts
.venv/bin/ruff format --check cifarsep_lib tests notebooks scripts
.venv/bin/pytest -p no:cacheprovider -q
.venv/bin/pytest -p no:cacheprovider -q --nbval-lax \
  notebooks/01_data_exploration.ipynb \
  notebooks/02_separable_convolution_theory.ipynb \
  notebooks/03_model_construction.ipynb
KERAS_BACKEND=jax .venv-jax/bin/pytest -p no:cacheprovider -q tests/test_backend_smoke.py tests/test_batchnorm.py tests/test_whitening.py \
  tests/test_input_pipeline.py
if [ "$TORCH_OK" = 1 ]; then
  KERAS_BACKEND=torch .venv-torch/bin/pytest -p no:cacheprovider -q tests/test_backend_smoke.py tests/test_batchnorm.py \
    tests/test_whitening.py tests/test_input_pipeline.py
fi
