"""Several training runs at once (models x seeds), one command: for a lent GPU with time for one call.

Usage:
    python scripts/side_by_side.py --out runs/gpu --models sepnet sepnet_deep --seeds 1 2 3 \\
        [--archive FILE.tar.gz] -- --epochs 100 --test-at 50,95,96,97,98,99,100 --no-tensorboard --verbose 2

Starts ``python -m cifarsep_lib train --model M --seed S --out OUT/M_sS ARGS`` for every model
and seed at once, each logging to ``OUT/M_sS.log``, waits for all of them, then prints
``scripts/compare_runs.py --selected`` for each model's seeds (the test point at each run's
best-validation epoch, and their mean and spread), so that one model's seeds compare with
another's. A run's selected epoch needs a test point, so give ``--test-at`` the last epochs
one by one (``--test-at 50,90,91,92,...,100``), where the best validation epoch usually is.

On a GPU the runs share it: five 100-epoch SepNets on an H200, two or three at a time,
each trained at 2.0-2.4 s per epoch (``benchmarks/gpu_h200_sepnet_ema_erasing_2026-11-27.txt``).
Under JAX each process would otherwise take three quarters of the GPU's memory at start, so
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` is set for them. ``--archive`` packs the run folders and
logs into one file at the end (a machine that returns few files returns that one).

It returns the worst exit status of the runs, after printing what the finished ones did.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
EPOCH_ROW = re.compile(r"# +(epoch|\d+) \|")  # compare_runs.py's table: header and one row per epoch


def launch(out: Path, model: str, seed: int, train_args: list[str]) -> tuple[Path, subprocess.Popen]:
    """Start one training run in the background; its output goes to ``out/NAME.log``."""
    run = out / f"{model}_s{seed}"
    command = [sys.executable, "-m", "cifarsep_lib", "train", "--model", model, "--seed", str(seed), "--out", str(run)]
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1"}
    print(" ".join(command + train_args), flush=True)
    # The child gets its own copy of the log's file descriptor, so ours can be closed at once.
    with (out / f"{run.name}.log").open("w") as log:
        return run, subprocess.Popen(command + train_args, stdout=log, stderr=subprocess.STDOUT, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the run folders and their logs")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--archive", type=Path, help="write the run folders and logs into this .tar.gz at the end")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: arguments for every train command")
    args = parser.parse_args()
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    args.out.mkdir(parents=True, exist_ok=True)

    runs = {model: [launch(args.out, model, seed, train_args) for seed in args.seeds] for model in args.models}
    status = 0
    for model, started in runs.items():
        finished = []
        for run, process in started:
            code = process.wait()
            # Popen gives -N for a run killed by signal N; the shell's 128 + N keeps it non-zero in the max.
            status = max(status, code if code >= 0 else 128 - code)
            if code == 0:
                finished.append(str(run))
            else:
                print(f"{run.name}: exit status {code}, see {run}.log", flush=True)
        if finished:
            compared = subprocess.run(
                [sys.executable, str(SCRIPTS / "compare_runs.py"), "--selected", *finished],
                capture_output=True,
                text=True,
                check=False,
            )
            (args.out / f"{model}_compared.txt").write_text(compared.stdout + compared.stderr)
            # The epoch-by-epoch table stays in the file; the summary and the selected test points are printed.
            print(f"\n## {model} (epoch by epoch: {args.out / model}_compared.txt)", flush=True)
            print("\n".join(line for line in compared.stdout.splitlines() if not EPOCH_ROW.match(line)))
            print(compared.stderr, end="", flush=True)
    if args.archive:
        with tarfile.open(args.archive, "w:gz") as archive:
            archive.add(args.out, arcname=args.out.name)
        print(f"\n{args.archive}: {args.archive.stat().st_size / 2**20:.1f} MiB")
    return status


if __name__ == "__main__":
    sys.exit(main())
