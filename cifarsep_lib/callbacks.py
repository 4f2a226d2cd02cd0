"""The callbacks of a training run that Keras does not provide as they are needed here.

``Throughput`` is the run's clock (training seconds and images/s per epoch, validation
excluded), which ``TimeBudget`` (train for minutes, not epochs) and ``TestAccuracyAt`` (test
points for time-to-accuracy benchmarks) read. ``SwapEMAWeights``, ``BackupAfterLogs`` and
``SafeCheckpoint`` are Keras' own callbacks with the fixes this series needed.
``training._callbacks`` puts them in the order they must run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import keras
import numpy as np

from . import evaluation


class Throughput(keras.callbacks.Callback):
    """Records wall time and training images/s of each epoch into the logs.

    It counts the images of the steps actually trained (``batch_size`` per step, fewer in
    the last), so an epoch that a ``TimeBudget`` ends part-way reports its own images/s,
    not a share of a full epoch's images spread over its shorter time.
    """

    def __init__(self, images_per_epoch: int, batch_size: int):
        super().__init__()
        self.images_per_epoch, self.batch_size = images_per_epoch, batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end, self._steps = time.perf_counter(), None, 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_test_begin(self, logs=None):
        # Validation runs inside the epoch; stop the training clock when it starts.
        self._train_end = self._train_end or time.perf_counter()

    def seconds_this_epoch(self) -> float:
        """Seconds of training in the current epoch so far (its validation pass excluded)."""
        return (self._train_end or time.perf_counter()) - self._start

    def images_this_epoch(self) -> int:
        """Training images of the current epoch so far."""
        return min(self._steps * self.batch_size, self.images_per_epoch)

    def on_epoch_end(self, epoch, logs=None):
        seconds = self.seconds_this_epoch()
        if logs is not None:
            logs["epoch_seconds"] = seconds
            logs["images_per_second"] = self.images_this_epoch() / seconds


class TimeBudget(keras.callbacks.Callback):
    """Trains for a number of *seconds of training* rather than a number of epochs.

    On a machine whose speed drifts (this 2-core one runs the same epoch in 80-150 s),
    a fixed epoch count cannot promise a training time. This callback sets the learning
    rate before every step from the fraction of the budget spent (``training.lr_by_fraction``:
    the recipe's warm-up and cosine decay stretched over the budget, so the rate has
    decayed when time is up) and stops training after the step that spends it. Keras
    then validates and checkpoints that last, shorter epoch as usual.

    The clock is ``clock``, the run's ``Throughput`` (placed before this callback), so the
    budget and the logged epoch times agree: validation and test passes are not counted.
    ``train_seconds`` continues the clock of a resumed run. ``lr_at`` is ``None`` for a
    constant rate (Adam): the budget then only stops training.
    """

    def __init__(self, seconds: float, clock: Throughput, lr_at=None, train_seconds: float = 0.0):
        super().__init__()
        self.seconds, self.clock, self.lr_at, self.spent = seconds, clock, lr_at, train_seconds

    def _elapsed(self) -> float:
        return self.spent + self.clock.seconds_this_epoch()

    def on_train_batch_begin(self, batch, logs=None):
        if self.lr_at is not None:
            self.model.optimizer.learning_rate = self.lr_at(self._elapsed() / self.seconds)

    def on_train_batch_end(self, batch, logs=None):
        if self._elapsed() >= self.seconds:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.spent += self.clock.seconds_this_epoch()


class TestAccuracyAt(keras.callbacks.Callback):
    """Evaluates the *test* set at the end of given epochs, logging training time so far.

    Only for measuring time-to-accuracy in benchmarks; model selection uses validation data.
    It also evaluates the run's last epoch, whether ``fit``'s epoch count or an early stop
    (a ``TimeBudget`` spent) ends it, so that every run ends with a test point.
    Each point holds the plain test accuracy and, reported beside it, the flip-TTA accuracy
    (mean prediction over each image and its mirror image, ``evaluation.evaluate_model``).
    The clock sums the ``epoch_seconds`` that ``Throughput`` (placed earlier in the callback
    list) logs, so validation and these test passes are not counted as training time.
    """

    def __init__(self, x_test, y_test, epochs, log_path=None, points=(), train_seconds: float = 0.0):
        super().__init__()
        self.x_test, self.y_test = x_test, y_test
        self.epochs, self.log_path = set(epochs), log_path
        # A resumed run continues the points and the clock of the interrupted one.
        self.points = list(points)
        self._train_seconds = train_seconds

    def on_epoch_end(self, epoch, logs=None):
        self._train_seconds += (logs or {}).get("epoch_seconds", 0.0)
        # stop_training exists once fit has started; a model evaluated outside fit has none
        stopped = getattr(self.model, "stop_training", False) and np.isfinite((logs or {}).get("loss", 0.0))
        last = epoch + 1 == (self.params or {}).get("epochs")
        if epoch + 1 in self.epochs or stopped or last:
            result = evaluation.evaluate_model(self.model, self.x_test, self.y_test, tta=True)
            acc, acc_tta = result["accuracy"], result["accuracy_tta"]
            self.points.append(
                {
                    "epoch": epoch + 1,
                    "train_seconds": self._train_seconds,
                    "test_accuracy": acc,
                    "test_accuracy_tta": acc_tta,
                }
            )
            print(
                f"\n[test] epoch {epoch + 1}: accuracy {acc:.4f} (flip-TTA {acc_tta:.4f}) "
                f"after {self._train_seconds:.0f} s of training"
            )
            if self.log_path:
                Path(self.log_path).write_text(json.dumps(self.points, indent=1))


class SwapEMAWeights(keras.callbacks.SwapEMAWeights):
    """Keras' ``SwapEMAWeights`` whose last step leaves the weights and their average apart.

    At the end of the last epoch Keras copies the weights (by then the average) into the
    optimizer's average with ``assign``. Under JAX (Keras 3.15) that makes both share one
    array, and an evaluation in a later callback of the same epoch (a test point) gives
    that array to its compiled step, which deletes it: the average is lost and ``fit``
    ends by assigning a deleted array to every weight. Copying it through numpy keeps a
    buffer of its own. (A test point at the last epoch under JAX crashed without this.)

    ``fit`` then ends by assigning the average to the weights (``finalize_variable_values``,
    before ``on_train_end`` on every backend), which shares one buffer again: the next
    evaluate or predict would delete it, and ``model.save`` would fail on the optimizer's
    copy ("Array has been deleted"). ``on_train_end`` gives the weights their own copy.
    """

    def _backend_finalize_ema_values(self, optimizer):
        for var, average_var in zip(
            optimizer._trainable_variables, optimizer._model_variables_moving_average, strict=True
        ):
            average_var.assign(keras.ops.convert_to_numpy(var))

    def on_train_end(self, logs=None):
        for variable in self.model.trainable_variables:
            variable.assign(keras.ops.copy(variable))


class BackupAfterLogs(keras.callbacks.BackupAndRestore):
    """Keras' ``BackupAndRestore``, run after the loggers, saving the training weights.

    Keras' callback backs the training state up at the end of every epoch. Placed before
    the loggers, a run killed between that backup and their writes (the BatchNorm
    statistics, checkpoint and test pass take seconds) resumed after an epoch whose history
    row or test point was never written (CI caught a lost test point). Placed last, it backs
    an epoch up only once its logs are on disk: a kill leaves the logs at most one epoch
    ahead of the backup, and the resumed run drops them and trains that epoch again
    (``training.logged_so_far``).

    By then ``ema`` (the run's ``SwapEMAWeights``, when the weights are averaged) has put the
    average into the model. For the save it swaps the training weights back in, so the
    backup holds each in its own place and a resumed run trains on from the training weights.
    """

    def __init__(self, backup_dir, ema: SwapEMAWeights | None = None):
        # double_checkpoint: a kill while the weights are written leaves the previous epoch's
        # backup to resume from, not a broken file that stops the resumed run.
        super().__init__(backup_dir, double_checkpoint=True)
        self.ema = ema

    def on_epoch_end(self, epoch, logs=None):
        swap = self.ema is not None and self.ema._ema_weights_in_model
        if swap:
            self.ema._swap_variables()
        try:
            super().on_epoch_end(epoch, logs)
        finally:
            if swap:
                self.ema._swap_variables()


def diverged(loss: float, model: keras.Model) -> bool:
    """Whether a run has blown up: its loss, or any of ``model``'s weights, is NaN or infinite.

    Keras' ``TerminateOnNaN`` stops on an infinite loss as well as on NaN, and the weights can
    overflow while the logged loss is still finite (see ``SafeCheckpoint``).
    """
    return not np.isfinite(loss) or not all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in model.weights)


class SafeCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that never overwrites the last good file with a diverged (NaN) model.

    ``TerminateOnNaN`` stops an epoch early, but Keras still ends that epoch with
    ``on_epoch_end``; a plain checkpoint would then save the broken weights. The epoch's
    loss alone is not enough: it averages losses computed *before* each update, so the
    epoch's last updates can overflow the weights while the logged loss is still finite
    (seen on a 2-core Intel Xeon at a learning rate of 1e12). The weights are checked too.
    """

    def on_epoch_end(self, epoch, logs=None):
        if diverged((logs or {}).get("loss", 0.0), self.model):
            return
        super().on_epoch_end(epoch, logs)
