"""Kill a short training run at several moments after its first backup, resume it, check its logs.

Usage:
    python scripts/kill_and_resume.py [DELAY_SECONDS ...]   (default: 0 0.4 0.8 1.2 1.6 2.0)

For each delay: a 3-epoch run on synthetic images (the tests' fake CIFAR-10, in a temporary
folder) with a test point at every epoch is started, killed (SIGKILL) that many seconds after
its first backup is written, and started again with the same command. A kill can land while
epoch 2 trains, while it is logged (history row, test point) or while it is backed up. The
script prints what was on disk at the kill and whether the resumed run ended with one history
row per epoch and one test point per epoch, none lost and none twice
(``callbacks.BackupAfterLogs``, ``training.logged_so_far``). It exits 1 if any did not.
A check of the resume logic by hand, not a test: where a kill lands depends on the machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_fake_cifar  # noqa: E402

from cifarsep_lib import training  # noqa: E402

EPOCHS = 3


def train_command(out: Path) -> list[str]:
    return [
        sys.executable, "-m", "cifarsep_lib", "train", "--out", str(out), "--epochs", str(EPOCHS),
        "--batch-size", "32", "--train-subset", "512", "--val-size", "100", "--seed", "3",
        "--no-tensorboard", "--verbose", "0", "--test-at", ",".join(map(str, range(1, EPOCHS + 1))),
    ]  # fmt: skip


def logged(out: Path) -> tuple[list[int], list[int]]:
    """The epochs of ``out``'s history rows (from 0) and of its test points (from 1)."""
    rows = [int(row["epoch"]) for row in training.read_history(out)]
    points = [point["epoch"] for point in json.loads((out / "test_points.json").read_text())]
    return rows, points


def kill_and_resume(out: Path, delay: float, env: dict) -> bool:
    quiet = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = subprocess.Popen(train_command(out), **quiet)
    first_backup = out / "backup" / training.BACKUP_METADATA
    while not first_backup.is_file():
        if run.poll() is not None:  # its output goes nowhere: say so rather than wait forever
            raise SystemExit(f"training exited with {run.returncode} before its first backup")
        time.sleep(0.05)
    time.sleep(delay)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    rows, points = logged(out)
    backed_up = training.backed_up_epochs(out)
    at_kill = f"backup holds {backed_up} epoch(s), {len(rows)} history row(s), test points {points}"
    subprocess.run(train_command(out), check=True, **quiet)
    rows, points = logged(out)
    ok = rows == list(range(EPOCHS)) and points == list(range(1, EPOCHS + 1))
    print(f"kill {delay:.2f} s after the first backup: {at_kill}; resumed: rows {rows}, test points {points}", end="")
    print(" ok" if ok else " WRONG", flush=True)
    return ok


def main(argv: list[str]) -> int:
    delays = [float(arg) for arg in argv] or [0.0, 0.4, 0.8, 1.2, 1.6, 2.0]
    root = Path(tempfile.mkdtemp(prefix="kill_and_resume_"))
    env = {**os.environ, "CIFARSEP_DATA": str(make_fake_cifar(root / "data")), "TF_CPP_MIN_LOG_LEVEL": "3"}
    results = [kill_and_resume(root / f"run_{i}", delay, env) for i, delay in enumerate(delays)]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
