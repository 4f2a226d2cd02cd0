#!/usr/bin/env bash
# Create .venv (if missing) and install cifarsep with the versions CI tested.
# Usage: bash scripts/setup.sh        (needs Python 3.11+ as python3, or set PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# requirements-lock.txt pins every package to the version CI ran, so a new TensorFlow
# release cannot break the notebooks behind your back. It was made on Linux: elsewhere
# (a Mac) fall back to the newest versions if a pinned one has no wheel there.
EXTRAS=".[tensorflow,notebooks,test]"
if ! .venv/bin/python -m pip install -q -c requirements-lock.txt -e "$EXTRAS"; then
  [ "$(uname -s)" = Linux ] && exit 1
  echo "requirements-lock.txt (made on Linux) does not install here; installing unpinned versions." >&2
  .venv/bin/python -m pip install -q -e "$EXTRAS"
fi
# The kernel goes into .venv, not the user's folder: a --user "python3" kernel would replace
# the one every other Jupyter on the machine starts, and break when this clone moves.
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
echo "cifarsep installed in .venv ($(.venv/bin/python -c 'import keras; print("Keras", keras.__version__)'))"
