"""Training images/s of one model under each Keras backend, side by side, measured in one run.

Usage:
    python scripts/benchmark_backends.py [--model sepnet_fast]
        [--python tensorflow=.venv/bin/python jax=.venv-jax/bin/python torch=.venv-torch/bin/python]

A Keras backend is fixed when Keras is imported, so each backend is measured in its own
subprocess (``KERAS_BACKEND=...``), one after another, with the same model, batch size and
number of timed steps. Backends whose interpreter is missing are reported as skipped.
``BACKEND+jit=INTERPRETER`` measures that backend with ``jit_compile=True`` (XLA under
TensorFlow, ``torch.compile`` under PyTorch; JAX always compiles), which Keras leaves off
on a CPU: e.g. ``torch+jit=.venv-torch/bin/python``. Compiling takes minutes on a CPU.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

from cifarsep_lib import devices

ROOT = Path(__file__).resolve().parents[1]
MEASURE = (
    "import json, keras; from cifarsep_lib import speed;"
    "print(json.dumps({'keras': keras.__version__, "
    "'images_per_s': speed.training_throughput(MODEL, batch_size=256, steps=STEPS, jit_compile=JIT)}))"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--python",
        nargs="+",
        default=[
            f"tensorflow={sys.executable}",
            f"jax={ROOT / '.venv-jax/bin/python'}",
            f"torch={ROOT / '.venv-torch/bin/python'}",
        ],
        help="BACKEND=INTERPRETER or BACKEND+jit=INTERPRETER pairs",
    )
    parser.add_argument("--model", default="sepnet", help="a name in models.MODELS (default: sepnet)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": devices.describe_machine(),
        "model": args.model,
        "batch_size": 256,
        "backends": {},
    }
    for pair in args.python:
        label, python = pair.split("=", 1)
        backend, _, jit = label.partition("+")
        if not Path(python).is_file():
            result["backends"][label] = {"skipped": f"no interpreter at {python}"}
            print(f"{label:14s} skipped (no interpreter at {python})")
            continue
        env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
        code = MEASURE.replace("STEPS", str(args.steps)).replace("MODEL", repr(args.model))
        code = code.replace("JIT", "True" if jit == "jit" else "'auto'")
        proc = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
        if proc.returncode:
            result["backends"][label] = {"failed": proc.stderr.strip().splitlines()[-1]}
            print(f"{label:14s} failed: {proc.stderr.strip().splitlines()[-1]}")
            continue
        measured = json.loads(proc.stdout.strip().splitlines()[-1])
        result["backends"][label] = measured
        ips, version = measured["images_per_s"], measured["keras"]
        print(f"{label:14s} {ips:8.1f} training images/s (Keras {version})", flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
