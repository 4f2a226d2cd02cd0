"""Training runs side by side, epoch by epoch: training minutes, validation and test accuracy.

Usage:
    python scripts/compare_runs.py runs/A runs/B [runs/C ...]
    python scripts/compare_runs.py --selected runs/seed0 runs/seed1 runs/seed2

Reads what ``train()`` writes into each run folder (``run.json``, ``history.csv``,
``test_points.json``) and prints, first, each run's recipe where it differs from the first
run's, then one row per epoch: minutes of training so far, validation accuracy (``-`` for a
run without a validation split, ``--val-size 0``), and test accuracy where the run scored
the test set (``--test-at``; ``-`` elsewhere). Last, per run: mean images/s, the epoch of
best validation accuracy, and the last test point (plain and flip-TTA). Selection reads the
validation column; the test columns are for reporting.

``--selected`` adds what each run would ship: the test point at its best-validation epoch
(the epoch of ``best.keras``; the last epoch for a run without a validation split), and
over the runs the mean, range and sample standard deviation of those test figures, as
for several seeds of one command. A run with no test point at that epoch is named and
left out of the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import statistics
from pathlib import Path

from cifarsep_lib.training import Recipe, read_history

# A field added to Recipe after a run was recorded ran as its default does (a new option starts off),
# so a run.json without it is read with today's default rather than shown as a difference.
RECIPE_DEFAULTS = json.loads(json.dumps(dataclasses.asdict(Recipe())))


def load(run: Path) -> dict:
    rows = read_history(run)
    points_file = run / "test_points.json"
    points = json.loads(points_file.read_text()) if points_file.exists() else []
    return {
        "name": run.name,
        "recipe": {**RECIPE_DEFAULTS, **json.loads((run / "run.json").read_text())["recipe"]},
        "minutes": [s / 60 for s in itertools.accumulate(row["epoch_seconds"] for row in rows)],
        # NaN in a run without a validation split (--val-size 0), printed "-"
        "val": [row["val_accuracy"] for row in rows],
        "images_per_second": [row["images_per_second"] for row in rows],
        "test": {p["epoch"]: p for p in points},
    }


def with_tta(point: dict) -> str:
    """A test point's accuracy and, where it was measured, its flip-TTA accuracy (runs before
    2026-11-27 scored the test set without TTA during training)."""
    text = f"{point['test_accuracy']:.2%}"
    if "test_accuracy_tta" in point:
        text += f" (flip-TTA {point['test_accuracy_tta']:.2%})"
    return text


def best_validation_epoch(run: dict) -> int | None:
    """The epoch (1-based) of best validation accuracy; None for a run without a validation split."""
    scored = [epoch for epoch, val in enumerate(run["val"]) if not math.isnan(val)]
    return max(scored, key=run["val"].__getitem__) + 1 if scored else None


def selected_epoch(run: dict) -> int:
    """The epoch (1-based) whose weights ``best.keras`` holds: best validation, or the last without validation."""
    return best_validation_epoch(run) or len(run["val"])


def print_selected(runs: list[dict]) -> None:
    """Each run's test point at its selected epoch, then their mean, range and spread."""
    print("#\n# Test accuracy at each run's selected epoch (its best.keras: best validation, or the last epoch)")
    chosen = []
    for r in runs:
        epoch = selected_epoch(r)
        point = r["test"].get(epoch)
        if point is None:
            print(f"# {r['name']}: epoch {epoch}, no test point there (left out)")
            continue
        chosen.append(point["test_accuracy"])
        print(f"# {r['name']}: epoch {epoch}, test {with_tta(point)}")
    if chosen:
        spread = f", sample std {statistics.stdev(chosen):.2%}" if len(chosen) > 1 else ""
        span = f"range {min(chosen):.2%}-{max(chosen):.2%}"
        print(f"# mean {statistics.mean(chosen):.2%} over {len(chosen)}, {span}{spread}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders written by train()")
    parser.add_argument(
        "--selected", action="store_true", help="also the test point at each run's selected epoch, and their mean"
    )
    args = parser.parse_args()
    runs = [load(run) for run in args.runs]

    first = runs[0]["recipe"]
    print(f"# {runs[0]['name']}")
    for run in runs[1:]:
        changed = {k: v for k, v in run["recipe"].items() if v != first.get(k)}
        print(f"# {run['name']}: {changed or 'the first run’s recipe'}")
    print("# epoch | " + " || ".join(f"{r['name']}: min   val      test" for r in runs))
    for epoch in range(1, max(len(r["val"]) for r in runs) + 1):
        cells = []
        for r in runs:
            if epoch > len(r["val"]):
                cells.append(" " * (len(r["name"]) + 22))  # as wide as a filled cell below
                continue
            point = r["test"].get(epoch)
            test = f"{point['test_accuracy']:7.2%}" if point else f"{'-':>7}"
            val = r["val"][epoch - 1]
            val = f"{'-':>7}" if math.isnan(val) else f"{val:7.2%}"
            cells.append(f"{'':{len(r['name'])}}  {r['minutes'][epoch - 1]:4.1f} {val} {test}")
        print(f"# {epoch:5d} | " + " || ".join(cells))
    for r in runs:
        best = best_validation_epoch(r)
        last = r["test"][max(r["test"])] if r["test"] else None
        mean_ips = sum(r["images_per_second"]) / len(r["images_per_second"])
        summary = f"# {r['name']}: {len(r['val'])} epochs, {r['minutes'][-1]:.1f} min, {mean_ips:,.0f} images/s"
        if best:
            summary += f"; best validation {r['val'][best - 1]:.2%} at epoch {best}"
        else:
            summary += "; no validation split"
        if last:
            summary += f"; last test point (epoch {last['epoch']}): {with_tta(last)}"
        print(summary)
    if args.selected:
        print_selected(runs)


if __name__ == "__main__":
    main()
