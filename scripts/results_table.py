"""Print the README's results table from trained/results.json (a test keeps the README in step)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def results_table(results: dict) -> str:
    lines = [
        "| model | params | Conv2D layers | epochs | hardware | training time | test acc | with flip TTA |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for m in results["models"]:
        # The main model is the row a learner looks for first: notebook 05 analyses it.
        name = f"**{m['name']}** (main model)" if m["name"] == results.get("main_model") else m["name"]
        epochs = m["epochs"]
        if m.get("unfinished"):
            epochs = f"{epochs} (run unfinished)"
        elif m.get("time_budget_minutes"):
            epochs = f"{epochs} ({m['time_budget_minutes']:g}-minute budget)"
        lines.append(
            f"| {name} | {m['params']:,} | {m['conv2d_layers']} | {epochs} | {m['hardware']} "
            f"| {m['train_seconds'] / 60:.0f} min | {100 * m['test_accuracy']:.2f} % "
            f"| {100 * m['test_accuracy_tta']:.2f} % |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(results_table(json.loads((ROOT / "trained" / "results.json").read_text())))
