"""scripts/record_result.py: the log it ships is readable, and a resumed run's wall time covers every session."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("record_result", ROOT / "scripts" / "record_result.py")
record_result = importlib.util.module_from_spec(spec)
spec.loader.exec_module(record_result)

EPOCH = "176/176 - {s}s - 600ms/step - accuracy: 0.5 - loss: 1.2 - val_accuracy: 0.5 - val_loss: 1.3"


def test_clean_log_keeps_each_epochs_last_line_only():
    raw = "Epoch 1/2\n\x1b[1m 10/176\x1b[0m ━━ 5s\r" + EPOCH.format(s=90) + "\nEpoch 2/2\n"
    assert record_result.clean_log(raw) == "Epoch 1/2\n" + EPOCH.format(s=90) + "\nEpoch 2/2\n"


def test_one_session_has_no_earlier_time():
    log = "\n".join(["Epoch 1/2", EPOCH.format(s=90), "Epoch 2/2", EPOCH.format(s=80)])
    assert record_result.earlier_sessions(log) == (0, 0.0)


def test_resumed_run_counts_the_finished_epochs_of_earlier_sessions():
    first = ["Epoch 1/4", EPOCH.format(s=90), "", "[test] epoch 2: accuracy 0.5", EPOCH.format(s=110), "Epoch 3/4"]
    second = ["Resuming after epoch 2 (190 s of training so far)", "Epoch 3/4", EPOCH.format(s=85)]
    third = ["Resuming after epoch 3 (275 s of training so far)", "Epoch 4/4", EPOCH.format(s=70)]
    log = "\n".join(first + second + third)
    # Epoch 3 was cut off in the first session and not counted; the last session is run.json's.
    assert record_result.earlier_sessions(log) == (2, 90.0 + 110.0 + 85.0)
