#!/usr/bin/env bash
# Set up, then run the five notebooks headless, in order, into output/ with papermill.
# Usage: bash scripts/run_series.sh [--quick]
#   --quick  small parameters (a short CPU run: minutes, not hours)
# Data: the official download by default; set CIFARSEP_DATA to a folder holding
# cifar-10-batches-bin/ to use a local copy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -n "${CIFARSEP_DATA:-}" ]; then
  CIFARSEP_DATA="$(cd "$CIFARSEP_DATA" && pwd)"  # notebooks run from notebooks/
  export CIFARSEP_DATA
fi
mkdir -p output
quick=()
if [ "${1:-}" = "--quick" ]; then
  quick=(-p train_subset 2048 -p epochs 1 -p speed_steps 2)
fi
for nb in notebooks/0*.ipynb; do
  name=$(basename "$nb")
  params=()
  case "$name" in
    04_*) params=(${quick[@]+"${quick[@]}"}) ;;  # the guarded form: bash 3.2 (macOS) and set -u
    05_*) [ ${#quick[@]} -gt 0 ] && params=(-p max_test_images 2000) ;;
  esac
  echo "== $name"
  .venv/bin/papermill "$nb" "output/$name" --cwd notebooks -k python3 ${params[@]+"${params[@]}"}
done
echo "Executed notebooks are in output/"
