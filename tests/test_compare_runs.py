"""scripts/compare_runs.py: runs side by side, with the recipe differences and the right figures per epoch."""

import csv
import json
import sys
from pathlib import Path

from conftest import load_script

compare_runs = load_script("compare_runs")


def _run(folder: Path, translate: float, val: list[float], points: list[dict]) -> Path:
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"recipe": {"model": "sepnet_fast", "translate": translate}}))
    with open(folder / "history.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch", "epoch_seconds", "images_per_second", "val_accuracy"])
        writer.writeheader()
        for i, v in enumerate(val):
            writer.writerow({"epoch": i, "epoch_seconds": 60.0, "images_per_second": 750.0, "val_accuracy": v})
    (folder / "test_points.json").write_text(json.dumps(points))
    return folder


def _without_validation(folder: Path) -> None:
    """Two epochs' history as CSVLogger writes it for a run without validation: NA validation columns."""
    with open(folder / "history.csv", "w", newline="") as f:
        f.write("epoch,epoch_seconds,images_per_second,val_accuracy\n0,60.0,800.0,NA\n1,60.0,800.0,NA\n")


def test_runs_print_side_by_side_with_their_differences(tmp_path, monkeypatch, capsys):
    a = _run(tmp_path / "a", 0.125, [0.5, 0.7, 0.6], [{"epoch": 3, "test_accuracy": 0.61, "test_accuracy_tta": 0.62}])
    b = _run(tmp_path / "b", 0.0625, [0.55, 0.72], [{"epoch": 2, "test_accuracy": 0.73, "test_accuracy_tta": 0.74}])
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", str(a), str(b)])
    compare_runs.main()
    out = capsys.readouterr().out.splitlines()
    assert "# b: {'translate': 0.0625}" in out
    epoch_2 = next(line for line in out if line.startswith("#     2 |"))
    assert "2.0  70.00%       -" in epoch_2 and "2.0  72.00%  73.00%" in epoch_2
    assert out[-2].endswith("best validation 70.00% at epoch 2; last test point (epoch 3): 61.00% (flip-TTA 62.00%)")
    assert "2 epochs, 2.0 min, 750 images/s" in out[-1]


def test_a_recipe_field_newer_than_a_run_is_not_a_difference(tmp_path, monkeypatch, capsys):
    """The older run.json has no ``mixup`` (added later, off by default): only a real change prints."""
    old = _run(tmp_path / "old", 0.125, [0.5], [])
    same, mixed = (_run(tmp_path / name, 0.125, [0.5], []) for name in ("same", "mixed"))
    for folder, mixup in ((same, 0.0), (mixed, 0.2)):
        record = json.loads((folder / "run.json").read_text())
        record["recipe"]["mixup"] = mixup
        (folder / "run.json").write_text(json.dumps(record))
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", str(old), str(same), str(mixed)])
    compare_runs.main()
    out = capsys.readouterr().out.splitlines()
    assert "# same: the first run’s recipe" in out and "# mixed: {'mixup': 0.2}" in out


def test_test_points_without_flip_tta_print_without_it(tmp_path, monkeypatch, capsys):
    """The shipped runs before 2026-11-27 scored the test set without TTA during training."""
    a = _run(tmp_path / "a", 0.125, [0.5, 0.7], [{"epoch": 2, "test_accuracy": 0.71}])
    b = _run(tmp_path / "b", 0.125, [0.6, 0.5], [{"epoch": 1, "test_accuracy": 0.6, "test_accuracy_tta": 0.62}])
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", "--selected", str(a), str(b)])
    compare_runs.main()
    out = capsys.readouterr().out.splitlines()
    assert any(line.endswith("last test point (epoch 2): 71.00%") for line in out)
    assert "# a: epoch 2, test 71.00%" in out and "# b: epoch 1, test 60.00% (flip-TTA 62.00%)" in out


def test_a_run_without_validation_prints_dashes_and_says_so(tmp_path, monkeypatch, capsys):
    a = _run(tmp_path / "a", 0.0625, [0.5, 0.7], [])
    b = _run(tmp_path / "b", 0.0625, [], [{"epoch": 2, "test_accuracy": 0.8, "test_accuracy_tta": 0.81}])
    _without_validation(b)
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", str(a), str(b)])
    compare_runs.main()
    out = capsys.readouterr().out.splitlines()
    epoch_2 = next(line for line in out if line.startswith("#     2 |"))
    assert epoch_2.endswith("2.0       -  80.00%")
    assert out[-1].endswith("no validation split; last test point (epoch 2): 80.00% (flip-TTA 81.00%)")


def test_selected_prints_the_test_point_at_each_runs_best_validation_epoch_and_their_mean(
    tmp_path, monkeypatch, capsys
):
    points = [{"epoch": e, "test_accuracy": t, "test_accuracy_tta": t + 0.01} for e, t in ((1, 0.60), (2, 0.70))]
    a = _run(
        tmp_path / "a", 0.125, [0.5, 0.7, 0.6], [*points, {"epoch": 3, "test_accuracy": 0.9, "test_accuracy_tta": 0.9}]
    )
    b = _run(tmp_path / "b", 0.125, [0.8, 0.7], points)  # best validation at epoch 1
    c = _run(tmp_path / "c", 0.125, [0.5, 0.6, 0.7], points)  # best at epoch 3: no test point there
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", "--selected", str(a), str(b), str(c)])
    compare_runs.main()
    out = capsys.readouterr().out.splitlines()
    assert "# a: epoch 2, test 70.00% (flip-TTA 71.00%)" in out  # not the last point's 90 %
    assert "# b: epoch 1, test 60.00% (flip-TTA 61.00%)" in out
    assert "# c: epoch 3, no test point there (left out)" in out
    assert out[-1] == "# mean 65.00% over 2, range 60.00%-70.00%, sample std 7.07%"


def test_selected_takes_the_last_epoch_of_a_run_without_validation(tmp_path, monkeypatch, capsys):
    b = _run(tmp_path / "b", 0.0625, [], [{"epoch": 2, "test_accuracy": 0.8, "test_accuracy_tta": 0.81}])
    _without_validation(b)
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", "--selected", str(b)])
    compare_runs.main()
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["# b: epoch 2, test 80.00% (flip-TTA 81.00%)", "# mean 80.00% over 1, range 80.00%-80.00%"]


def test_a_run_that_has_ended_leaves_a_blank_as_wide_as_its_cells(tmp_path, monkeypatch, capsys):
    short = _run(tmp_path / "short", 0.125, [0.5, 0.7], [])
    long = _run(tmp_path / "long", 0.125, [0.5, 0.7, 0.6], [])
    monkeypatch.setattr(sys, "argv", ["compare_runs.py", str(short), str(long)])
    compare_runs.main()
    out = capsys.readouterr().out.splitlines()
    epoch_2, epoch_3 = (next(line for line in out if line.startswith(f"#     {e} |")) for e in (2, 3))
    assert epoch_3.index("||") == epoch_2.index("||")  # the long run's column stays in place
