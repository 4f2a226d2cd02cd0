"""scripts/record_result.py: the log it ships is readable, and a resumed run's wall time covers every session."""

import pytest
from conftest import load_script

record_result = load_script("record_result")

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


def test_unfinished_run_reads_device_sessions_and_wall_time_from_its_log():
    first = ["Training base_model (32,261 params) on CPU (x86_64, 2 cores)", "Epoch 1/50", EPOCH.format(s=600)]
    second = [
        "Resuming after epoch 1 (575 s of training so far)",
        "Training base_model (32,261 params) on CPU (x86_64, 2 cores)",
        "Epoch 2/50",
        EPOCH.format(s=650),
        "Epoch 3/50",  # cut off: not counted
    ]
    info = record_result.unfinished_run("\n".join(first + second))
    assert info == {"device": "CPU (x86_64, 2 cores)", "sessions": 2, "wall_seconds": 1250.0}


def test_unfinished_run_needs_to_know_its_device():
    import pytest

    with pytest.raises(ValueError, match="trains on"):
        record_result.unfinished_run("Epoch 1/50\n" + EPOCH.format(s=600))


def test_results_table_marks_unfinished_runs():
    module = load_script("results_table")
    entry = dict(name="m", params=1000, conv2d_layers=0, epochs=17, hardware="CPU", train_seconds=600)
    entry.update(test_accuracy=0.7, test_accuracy_tta=0.71)
    assert "| 17 | CPU |" in module.results_table({"models": [entry]})
    assert "| 17 (run unfinished) | CPU |" in module.results_table({"models": [{**entry, "unfinished": True}]})
    budgeted = {**entry, "time_budget_minutes": 60.0}
    assert "| 17 (60-minute budget) | CPU |" in module.results_table({"models": [budgeted]})


def test_highlights_find_the_best_conv2d_free_run_and_skip_rule_breakers():
    module = load_script("results_table")
    entry = dict(params=1000, conv2d_layers=0, epochs=17, hardware="CPU", train_seconds=600, test_accuracy_tta=0.9)
    models = [{**entry, "name": name, "test_accuracy": acc} for name, acc in [("main", 0.80), ("best", 0.85)]]
    models += [{**entry, "name": module.TEN_MINUTES_ON_TWO_CORES, "test_accuracy": 0.84}]
    models += [{**entry, "name": n, "conv2d_layers": 1, "test_accuracy": 0.95} for n in module.BASE_MODEL_RUNS]
    models += [{**entry, "name": "too_big", "params": 100_000, "test_accuracy": 0.99}]
    rows = module.highlights_table({"models": models, "main_model": "main"}).splitlines()[2:]
    expected = ["main", "best", module.TEN_MINUTES_ON_TWO_CORES, *module.BASE_MODEL_RUNS]
    assert [row.split(" | ")[1] for row in rows] == expected


def test_logs_of_runs_without_validation_keep_and_count_their_epoch_lines():
    no_val = "176/176 - {s}s - 600ms/step - accuracy: 0.5 - loss: 1.2"  # train --val-size 0 at --verbose 2
    cut_short = "97/176 - 50s - 515ms/step - accuracy: 0.6 - loss: 1.1"  # the epoch a time budget ended
    raw = "\n".join(["Epoch 1/9", "\x1b[1m 10/176\x1b[0m ━━ 5s", no_val.format(s=90), "Epoch 2/9", cut_short])
    assert record_result.clean_log(raw) == "\n".join(["Epoch 1/9", no_val.format(s=90), "Epoch 2/9", cut_short, ""])
    resumed = ["Epoch 1/9", no_val.format(s=90), "Resuming after epoch 1", "Epoch 2/9", no_val.format(s=80)]
    assert record_result.earlier_sessions("\n".join(resumed)) == (1, 90.0)


def test_a_run_without_run_json_is_refused_before_anything_is_copied(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "best.keras").write_text("not a model")
    trained = tmp_path / "trained"
    monkeypatch.setattr(record_result, "TRAINED", trained)
    command = "python -m cifarsep_lib train"
    monkeypatch.setattr("sys.argv", ["record_result.py", str(run_dir), "x", "--command", command])
    with pytest.raises(SystemExit) as refused:
        record_result.main()
    assert refused.value.code == 2  # argparse's usage error
    assert not trained.exists()
