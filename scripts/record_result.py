"""Ship a training run: copy its model and logs into trained/ and record its test accuracy.

Usage:
    python scripts/record_result.py RUN_DIR NAME --command "python -m cifarsep_lib train ..." [--log LOG]
    python scripts/record_result.py RUN_DIR NAME --command "..." --log LOG --unfinished --backend tensorflow

A run still in progress (or interrupted, to be resumed later) has no ``run.json`` yet;
``--unfinished`` records what it has so far: the best checkpoint, the finished epochs,
and, from its log, the device it trains on and the wall time of its finished epochs. The
entry is marked ``"unfinished": true``; record it again when the run completes.

Evaluates RUN_DIR/best.keras on the CIFAR-10 test set (honouring CIFARSEP_DATA), with and
without flip TTA, and writes or replaces the entry NAME in trained/results.json. Nothing is
typed in by hand: every figure comes from the run's own files or from this evaluation.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import shutil
from pathlib import Path

from cifarsep_lib import evaluation, training

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ROOT / "trained"


ANSI = re.compile(r"\x1b\[[0-9;]*m")
PROGRESS = re.compile(r"^\s*\d+/\d+ ")
# Keras' last line of a finished epoch at --verbose 2: "176/176 - 115s - 654ms/step - ... val_accuracy: ..."
# (without "val_accuracy" in a run with no validation split, --val-size 0)
EPOCH_DONE = re.compile(r"^\s*(\d+)/\1 - (\d+)s - ")
EPOCH_LINE = re.compile(r"^\s*\d+/\d+ - \d+s - ")  # the same, for an epoch a time budget ended early
RESUMED = "Resuming after epoch"  # printed by training._callbacks when a run continues


def clean_log(text: str) -> str:
    """A readable copy of a Keras console log: colours and backspaces removed, and of the
    progress bar only each epoch's final line (the one with the validation metrics, or at
    --verbose 2 the epoch's one line) kept."""
    kept = []
    for line in text.splitlines():
        line = ANSI.sub("", line.split("\r")[-1]).replace("\b", "")
        if PROGRESS.match(line) and "val_accuracy" not in line and not EPOCH_LINE.match(line):
            continue
        kept.append(line.rstrip())
    return "\n".join(kept) + "\n"


def earlier_sessions(log_text: str) -> tuple[int, float]:
    """``(sessions, wall seconds)`` of the sessions before the last one, read from a run's log.

    A run resumed with ``BackupAndRestore`` writes ``run.json`` (and its wall time) in its
    last session only. The earlier sessions' time is the sum of their finished epochs' wall
    times (validation and test passes included) that Keras printed at ``--verbose 2``; an
    epoch cut off by the end of a session is lost work and not counted, nor is start-up.
    """
    parts = clean_log(log_text).split(RESUMED)
    return len(parts) - 1, sum(finished_epochs_wall(part) for part in parts[:-1])


def finished_epochs_wall(cleaned_log: str) -> float:
    """Sum of the wall seconds Keras printed for each finished epoch (``--verbose 2``) in a cleaned log."""
    return float(sum(int(m.group(2)) for line in cleaned_log.splitlines() if (m := EPOCH_DONE.match(line))))


TRAINING_ON = re.compile(r"^Training \S+ \(.*params\) on (.+)$")


def unfinished_run(log_text: str) -> dict:
    """What the log of a run without ``run.json`` tells: its device, sessions and wall time so far.

    The wall time is the sum of the finished epochs' wall times (validation and test passes
    included) over all sessions; start-up and an epoch in progress are not counted.
    """
    text = clean_log(log_text)
    devices = [m.group(1) for line in text.splitlines() if (m := TRAINING_ON.match(line))]
    if not devices:
        raise ValueError("the log does not say what the run trains on (no 'Training ... on ...' line)")
    return {"device": devices[-1], "sessions": text.count(RESUMED) + 1, "wall_seconds": finished_epochs_wall(text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--command", required=True, help="the exact command that produced the run")
    parser.add_argument("--log", type=Path, help="console log of the run")
    parser.add_argument("--checkpoint", default="best.keras")
    parser.add_argument("--note", help="how the run differed from a plain run of the command (kept in the entry)")
    parser.add_argument(
        "--hardware", help="what the run trained on, where run.json's device does not name it (e.g. 'gpu:0')"
    )
    parser.add_argument(
        "--machine",
        help="the CPU the run trained on (devices.describe_machine()), where run.json predates its 'machine' field",
    )
    parser.add_argument("--unfinished", action="store_true", help="record a run that has not completed (no run.json)")
    parser.add_argument("--backend", help="the run's Keras backend; needed with --unfinished")
    args = parser.parse_args()
    if args.unfinished and not (args.log and args.backend):
        parser.error("--unfinished needs --log (for the device and wall time) and --backend")
    if not args.unfinished and not (args.run_dir / "run.json").is_file():
        # Checked before anything is copied into trained/, so a mistake leaves nothing behind.
        parser.error(f"no {args.run_dir / 'run.json'}: the run has not finished; record it with --unfinished")

    TRAINED.mkdir(exist_ok=True)
    model_file = TRAINED / f"{args.name}.keras"
    shutil.copyfile(args.run_dir / args.checkpoint, model_file)
    for src in ("history.csv", "test_points.json") + (() if args.unfinished else ("run.json",)):
        if (args.run_dir / src).is_file():
            shutil.copyfile(args.run_dir / src, TRAINED / f"{args.name}_{src}")
    log_text = args.log.read_text(errors="replace") if args.log else None
    if log_text is not None:
        (TRAINED / f"{args.name}_train.log").write_text(clean_log(log_text))

    history = training.read_history(args.run_dir)
    report = evaluation.evaluate_file(model_file, tta=True)
    if args.unfinished:
        so_far = unfinished_run(log_text)
        device, backend, wall, sessions = so_far["device"], args.backend, so_far["wall_seconds"], so_far["sessions"]
    else:
        run = json.loads((args.run_dir / "run.json").read_text())
        earlier, earlier_wall = earlier_sessions(log_text) if log_text is not None else (0, 0.0)
        device, backend = run["device"], run["backend"]
        wall, sessions = run["wall_seconds_this_session"] + earlier_wall, 1 + earlier
    entry = {
        "name": args.name,
        "file": f"trained/{model_file.name}",
        "model": report["model"],
        "params": report["params"],
        "conv2d_layers": report["conv2d_layers"],
        "epochs": len(history),
        "hardware": args.hardware or device,
        "machine": args.machine or (None if args.unfinished else run.get("machine")),
        "backend": backend,
        # Training time summed over epochs (validation passes excluded), and the whole
        # run's wall time of model.fit, validation included, start-up not (over all its sessions).
        "train_seconds": round(sum(row["epoch_seconds"] for row in history), 1),
        "wall_seconds": round(wall, 1),
        "sessions": sessions,
        "test_accuracy": report["accuracy"],
        "test_accuracy_tta": report["accuracy_tta"],
        "command": args.command,
        "history": f"trained/{args.name}_history.csv",
        "log": f"trained/{args.name}_train.log" if args.log else None,
        "recorded": datetime.date.today().isoformat(),
    }
    if args.unfinished:
        entry["unfinished"] = True
    elif run["recipe"].get("minutes"):
        entry["time_budget_minutes"] = run["recipe"]["minutes"]  # trained for a time, not an epoch count
    if args.note:
        entry["note"] = args.note
    results_path = TRAINED / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"models": []}
    names = [m["name"] for m in results["models"]]
    if args.name in names:  # a re-recorded model keeps its place in the table
        results["models"][names.index(args.name)] = entry
    else:
        results["models"].append(entry)
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
