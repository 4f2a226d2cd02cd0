"""Training: input pipeline, the series' recipe, callbacks, and one ``train()`` entry point.

The recipe (``Recipe`` defaults) is what the README's results use: Nesterov SGD with
a linear warm-up then cosine decay (``keras.optimizers.schedules.CosineDecay``),
decoupled weight decay, label smoothing, random flips and pad-and-crop style
translations (Keras preprocessing layers), batch 256.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from . import data as cdata
from . import models as cmodels


@dataclasses.dataclass
class Recipe:
    """Hyper-parameters of a training run; the defaults are the series' recipe."""

    model: str = "sepnet"
    epochs: int = 30
    batch_size: int = 256
    peak_lr: float = 0.2
    warmup_fraction: float = 0.15
    final_lr_fraction: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    translate: float = 0.125  # 4 pixels of a 32-pixel image
    val_size: int = 5_000
    train_subset: int | None = None  # use only this many training images (quick runs)
    seed: int = 0


def describe_device() -> str:
    """A human-readable name of the device Keras trains on (GPU name, or CPU)."""
    devices = keras.distribution.list_devices()
    accel = [d for d in devices if not d.lower().startswith("cpu")]
    if accel and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        return ", ".join(names) or ", ".join(accel)
    if accel:
        return ", ".join(accel)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def augmentation(translate: float = 0.125, seed: int | None = None) -> keras.Sequential:
    """Random horizontal flip and a random shift of up to ``translate`` of the image size.

    The shift reflects the border back in, like the classic pad-by-4-and-crop.
    """
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomTranslation(translate, translate, fill_mode="reflect", seed=seed),
        ],
        name="augmentation",
    )


def _one_hot(y) -> np.ndarray:
    return keras.utils.to_categorical(np.asarray(y).reshape(-1), cdata.NUM_CLASSES).astype("float32")


class _AugmentedBatches(keras.utils.PyDataset):
    """Backend-neutral batches: shuffle per epoch, augment each batch with Keras layers."""

    def __init__(self, x, y, batch_size, augmenter, seed, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, _one_hot(y), batch_size
        self.augmenter, self.rng = augmenter, np.random.default_rng(seed)
        self.order = self.rng.permutation(len(x))

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch_size))

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        xb = self.x[idx].astype("float32")
        if self.augmenter is not None:
            xb = keras.ops.convert_to_numpy(self.augmenter(xb, training=True))
        return xb, self.y[idx]

    def on_epoch_end(self):
        self.order = self.rng.permutation(len(self.x))


def make_dataset(x, y, batch_size: int, augmenter=None, shuffle: bool = False, seed: int = 0):
    """Batches of ``(float32 images 0-255, one-hot labels)`` for ``fit``/``evaluate``.

    Under the TensorFlow backend this is a ``tf.data`` pipeline (augmentation runs in
    its threads, overlapping the training step); under JAX or PyTorch it is a
    ``keras.utils.PyDataset`` doing the same work.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((x, _one_hot(y)))
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size).map(lambda a, b: (tf.cast(a, "float32"), b))
        if augmenter is not None:
            ds = ds.map(lambda a, b: (augmenter(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)
    if not shuffle and augmenter is None:
        return _AugmentedBatches(x, y, batch_size, None, seed)
    return _AugmentedBatches(x, y, batch_size, augmenter, seed)


def lr_schedule(recipe: Recipe, steps_per_epoch: int):
    """Linear warm-up to ``peak_lr`` then cosine decay to ``final_lr_fraction * peak_lr``."""
    total = max(1, recipe.epochs * steps_per_epoch)
    warmup = int(recipe.warmup_fraction * total)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.peak_lr * recipe.final_lr_fraction,
        decay_steps=max(1, total - warmup),
        alpha=recipe.final_lr_fraction,
        warmup_target=recipe.peak_lr,
        warmup_steps=warmup,
    )


def compile_model(model: keras.Model, recipe: Recipe, steps_per_epoch: int) -> keras.Model:
    """Compile ``model`` with the recipe's optimizer, loss and metrics."""
    optimizer = keras.optimizers.SGD(
        learning_rate=lr_schedule(recipe, steps_per_epoch),
        momentum=recipe.momentum,
        nesterov=True,
        weight_decay=recipe.weight_decay,
    )
    # Decay the convolution and dense kernels only, not BatchNorm scales or biases.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
    )
    return model


class Throughput(keras.callbacks.Callback):
    """Records wall time and training images/s of each epoch into the logs."""

    def __init__(self, images_per_epoch: int):
        super().__init__()
        self.images_per_epoch = images_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._train_end = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        # Validation runs inside the epoch; stop the training clock when it starts.
        self._train_end = self._train_end or time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = (self._train_end or time.perf_counter()) - self._start
        if logs is not None:
            logs["epoch_seconds"] = seconds
            logs["images_per_second"] = self.images_per_epoch / seconds


class TestAccuracyAt(keras.callbacks.Callback):
    """Evaluates the *test* set at the end of given epochs, logging training time so far.

    Only for measuring time-to-accuracy in benchmarks; model selection uses validation data.
    The clock sums the ``epoch_seconds`` that ``Throughput`` (placed earlier in the callback
    list) logs, so validation and these test passes are not counted as training time.
    """

    def __init__(self, dataset, epochs, log_path=None):
        super().__init__()
        self.dataset, self.epochs, self.log_path = dataset, set(epochs), log_path
        self.points = []
        self._train_seconds = 0.0

    def on_epoch_end(self, epoch, logs=None):
        self._train_seconds += (logs or {}).get("epoch_seconds", 0.0)
        if epoch + 1 in self.epochs:
            acc = float(self.model.evaluate(self.dataset, verbose=0, return_dict=True)["accuracy"])
            self.points.append({"epoch": epoch + 1, "train_seconds": self._train_seconds, "test_accuracy": acc})
            print(f"\n[test] epoch {epoch + 1}: accuracy {acc:.4f} after {self._train_seconds:.0f} s of training")
            if self.log_path:
                Path(self.log_path).write_text(json.dumps(self.points, indent=1))


class SafeCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that never overwrites the last good file with a diverged (NaN) model.

    ``TerminateOnNaN`` stops an epoch early, but Keras still ends that epoch with
    ``on_epoch_end``; a plain checkpoint would then save the broken weights.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and not np.isfinite(logs.get("loss", 0.0)):
            return
        super().on_epoch_end(epoch, logs)


def check_writable(out_dir: Path, needed_bytes: int = 50_000_000) -> None:
    """Fail before training if ``out_dir`` cannot hold checkpoints (not writable, or disk full)."""
    probe = out_dir / ".write_probe"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as err:
        raise OSError(f"cannot write checkpoints to {out_dir}: {err}. Choose another --out folder.") from err
    free = shutil.disk_usage(out_dir).free
    if free < needed_bytes:
        raise OSError(
            f"only {free / 1e6:.0f} MB free under {out_dir}; training needs about "
            f"{needed_bytes / 1e6:.0f} MB for checkpoints. Free some space or choose another --out folder."
        )


def train(
    recipe: Recipe | None = None,
    out_dir: str | Path = "runs/sepnet",
    data_dir: str | None = None,
    tensorboard: bool = True,
    test_at_epochs=(),
    verbose: int | str = "auto",
    deterministic: bool = False,
):
    """Train a model of the series with the recipe; return ``(model, history dict)``.

    Writes into ``out_dir``: ``best.keras`` (best validation accuracy), ``final.keras``,
    ``history.csv``, ``history.json``, ``run.json`` (recipe, device, wall time),
    TensorBoard logs under ``tb/`` and a ``backup/`` folder that lets the same command
    resume after an interruption (removed when training completes).

    ``deterministic=True`` also makes TensorFlow's kernels deterministic (slower), so
    that two runs with the same seed give identical histories on the same machine.
    """
    recipe = recipe or Recipe()
    out = Path(out_dir)
    check_writable(out)
    keras.utils.set_random_seed(recipe.seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    (x_all, y_all), (x_test, y_test) = cdata.load_cifar10(data_dir)
    (x_train, y_train), (x_val, y_val) = cdata.train_val_split(x_all, y_all, recipe.val_size, recipe.seed)
    x_train, y_train = cdata.subset(x_train, y_train, recipe.train_subset, recipe.seed)

    train_ds = make_dataset(
        x_train, y_train, recipe.batch_size, augmentation(recipe.translate, recipe.seed), shuffle=True, seed=recipe.seed
    )
    val_ds = make_dataset(x_val, y_val, 1000)
    steps = int(np.ceil(len(x_train) / recipe.batch_size))
    model = compile_model(cmodels.build(recipe.model), recipe, steps)

    device = describe_device()
    print(f"Training {recipe.model} ({model.count_params():,} params) on {device}")
    print(f"{len(x_train):,} training / {len(x_val):,} validation images, {recipe.epochs} epochs of {steps} steps")

    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        keras.callbacks.TerminateOnNaN(),
        Throughput(len(x_train)),
        SafeCheckpoint(str(out / "best.keras"), monitor="val_accuracy", save_best_only=True),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
    ]
    if test_at_epochs:
        test_ds = make_dataset(x_test, y_test, 1000)
        callbacks.append(TestAccuracyAt(test_ds, test_at_epochs, out / "test_points.json"))
    if tensorboard and keras.backend.backend() != "tensorflow":
        print("TensorBoard logging needs TensorFlow; skipped under the", keras.backend.backend(), "backend")
    elif tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tb"), write_graph=False))

    start = time.perf_counter()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=recipe.epochs,
        callbacks=callbacks,
        verbose=verbose,
        shuffle=False,  # the input pipeline shuffles, seeded
    )
    wall = time.perf_counter() - start
    if np.isnan(history.history.get("loss", [0.0])[-1]):
        raise FloatingPointError(
            f"training diverged (loss became NaN) at epoch {len(history.history['loss'])}; "
            f"the best checkpoint so far is {out / 'best.keras'}. Try a lower --peak-lr."
        )
    model.save(out / "final.keras")
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    hist["epoch"] = [int(e) for e in history.epoch]
    (out / "history.json").write_text(json.dumps(hist, indent=1))
    run = {
        "recipe": dataclasses.asdict(recipe),
        "device": device,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "params": model.count_params(),
        "wall_seconds_this_session": wall,
        "mean_images_per_second": float(np.mean(hist.get("images_per_second", [np.nan]))),
    }
    (out / "run.json").write_text(json.dumps(run, indent=1))
    return model, hist
