#!/usr/bin/env bash
# Install what tests/test_jupyterlab.py needs on Debian/Ubuntu: Debian's Chromium (/usr/bin/chromium) and the
# pinned playwright package into the project's virtual environment. Playwright only drives that Chromium:
# `playwright install` (its own browser download) is never run.
# Usage: bash scripts/install_browser.sh [VENV]      (VENV defaults to .venv, relative to the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo -n"  # fail (test.sh then skips the JupyterLab test) rather than wait for a password
fi
if [ ! -x /usr/bin/chromium ]; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "no virtual environment at $VENV (run scripts/setup.sh first, or pass its path)" >&2
  exit 1
fi
"$VENV/bin/python" -m pip install -q -r requirements-browser.txt
echo "browser test ready: $(/usr/bin/chromium --version 2>/dev/null), playwright $("$VENV/bin/python" -m pip show playwright | sed -n 's/^Version: //p')"
