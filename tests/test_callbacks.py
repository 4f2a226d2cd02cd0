"""The callbacks of a training run: its clock, time budget, test points and safe checkpoints."""

import json

import keras
import numpy as np
import pytest
from conftest import FakeClock

from cifarsep_lib import callbacks


def test_test_points_hold_plain_and_flip_tta_accuracy(tmp_path):
    """Each test point has the plain accuracy and the mirrored-image average beside it.

    The model sees only the left half of the image, so a mirror image changes its answer.
    The labels are its own answers on the plain images: plain accuracy is 100 % and the
    mirrored average must lose some of them, whatever the random weights (random labels
    made the two figures tie at 7 of 64 for some weights). Both must equal what
    ``evaluate_model`` reports.
    """
    from cifarsep_lib import evaluation

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(64, 32, 32, 3)).astype("uint8")
    inputs = keras.Input((32, 32, 3))
    left_half = keras.layers.Cropping2D(((0, 0), (0, 16)))(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(left_half))
    model = keras.Model(inputs, outputs)
    y = np.argmax(evaluation.predict_array(model, x), axis=1)
    callback = callbacks.TestAccuracyAt(x, y, epochs=(2,), log_path=tmp_path / "points.json", train_seconds=5.0)
    callback.set_model(model)
    callback.on_epoch_end(0, {"epoch_seconds": 3.0})
    assert callback.points == []  # epoch 1 is not a test point, but its time counts
    callback.on_epoch_end(1, {"epoch_seconds": 4.0})
    expected = evaluation.evaluate_model(model, x, y, tta=True)
    (point,) = json.loads((tmp_path / "points.json").read_text())
    assert point["epoch"] == 2 and point["train_seconds"] == 12.0
    assert point["test_accuracy"] == expected["accuracy"] == 1.0
    assert point["test_accuracy_tta"] == expected["accuracy_tta"] < 1.0


def test_the_last_epoch_of_a_run_gets_a_test_point_even_when_not_asked_for(tmp_path):
    """A run that its epoch count ends (not a time budget) still ends with a test point."""
    x = np.zeros((8, 32, 32, 3), "uint8")
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    callback = callbacks.TestAccuracyAt(x, np.zeros(8, "int64"), epochs=(1,))
    callback.set_model(model)
    callback.set_params({"epochs": 3})
    for epoch in range(3):
        callback.on_epoch_end(epoch, {"epoch_seconds": 1.0})
    assert [p["epoch"] for p in callback.points] == [1, 3]


@pytest.mark.parametrize("loss, saved", [(0.5, True), (float("nan"), False), (float("inf"), False)])
def test_safe_checkpoint_skips_epochs_whose_loss_is_not_finite(tmp_path, loss, saved):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    checkpoint = callbacks.SafeCheckpoint(str(tmp_path / "best.keras"))
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": loss})
    assert (tmp_path / "best.keras").exists() == saved


def test_safe_checkpoint_skips_non_finite_weights_even_when_the_loss_is_finite(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.layers[0].kernel.assign(np.array([[np.inf], [0.0]], dtype="float32"))
    checkpoint = callbacks.SafeCheckpoint(str(tmp_path / "best.keras"))
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 0.5})
    assert not (tmp_path / "best.keras").exists()


def test_time_budget_sets_the_rate_from_time_spent_and_stops_when_it_is_spent(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(callbacks.time, "perf_counter", clock)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0), loss="mse")
    # the clock the budget reads: 10 steps of 8,000 images per epoch
    throughput = callbacks.Throughput(images_per_epoch=80_000, batch_size=8_000)
    budget = callbacks.TimeBudget(100.0, throughput, lr_at=lambda fraction: 1.0 - fraction, train_seconds=20.0)
    budget.set_model(model)
    model.stop_training = False
    throughput.on_epoch_begin(0)
    budget.on_epoch_begin(0)
    clock.now = 30.0  # 20 s from an earlier session + 30 s in this epoch: half the budget
    budget.on_train_batch_begin(0)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.5)
    throughput.on_train_batch_end(0)
    budget.on_train_batch_end(0)
    assert not model.stop_training
    clock.now = 80.0  # 100 s spent: the step that spends it is the last
    budget.on_train_batch_begin(1)
    throughput.on_train_batch_end(1)
    budget.on_train_batch_end(1)
    assert model.stop_training
    throughput.on_test_begin()  # validation starts: neither clock counts it
    clock.now = 95.0
    logs = {}
    throughput.on_epoch_end(0, logs)
    budget.on_epoch_end(0, logs)
    assert budget.spent == pytest.approx(100.0)
    # 2 of the 10 steps trained: 16,000 images in 80 s
    assert logs["epoch_seconds"] == pytest.approx(80.0) and logs["images_per_second"] == pytest.approx(200.0)


def test_throughput_counts_a_short_last_batch():
    logs = {}
    throughput = callbacks.Throughput(images_per_epoch=1_000, batch_size=256)  # 3 batches of 256 and one of 232
    throughput.on_epoch_begin(0)
    for step in range(3):
        throughput.on_train_batch_end(step)
    assert throughput.images_this_epoch() == 768
    throughput.on_train_batch_end(3)
    throughput.on_epoch_end(0, logs)
    assert throughput.images_this_epoch() == 1_000 and logs["images_per_second"] > 0
