"""scripts/side_by_side.py: runs start together, are compared per model, and a failed run sets the exit status."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile

from conftest import ROOT

SCRIPT = str(ROOT / "scripts" / "side_by_side.py")
QUICK = ["--epochs", "1", "--batch-size", "32", "--train-subset", "256", "--val-size", "100", "--test-at", "1"]


def test_two_seeds_run_and_are_compared(tmp_path, fake_cifar):
    out, archive = tmp_path / "runs", tmp_path / "runs.tar.gz"
    command = [SCRIPT, "--out", str(out), "--models", "sepnet_fast_8x8", "--seeds", "1", "2", "--archive", str(archive)]
    done = subprocess.run(
        [sys.executable, *command, "--", *QUICK, "--no-tensorboard", "--verbose", "0"],
        env={**os.environ, "CIFARSEP_DATA": str(fake_cifar)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for seed in (1, 2):
        assert len((out / f"sepnet_fast_8x8_s{seed}" / "history.csv").read_text().splitlines()) == 2  # header, epoch 1
    assert "## sepnet_fast_8x8" in done.stdout
    assert "# sepnet_fast_8x8_s2: epoch 1, test" in done.stdout  # each seed's selected test point
    assert "# mean " in done.stdout and "over 2" in done.stdout
    assert "#     1 |" not in done.stdout  # the epoch table went to the file
    assert "#     1 |" in (out / "sepnet_fast_8x8_compared.txt").read_text()
    with tarfile.open(archive) as packed:
        names = packed.getnames()
    assert "runs/sepnet_fast_8x8_s1.log" in names and "runs/sepnet_fast_8x8_s2/history.csv" in names


def test_a_failed_run_sets_the_exit_status(tmp_path):
    done = subprocess.run(
        [sys.executable, SCRIPT, "--out", str(tmp_path), "--models", "sepnet", "--seeds", "1", "--", "--epochs", "x"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2  # argparse's status for the bad --epochs
    assert "sepnet_s1: exit status 2" in done.stdout
    assert "invalid int value" in (tmp_path / "sepnet_s1.log").read_text()
