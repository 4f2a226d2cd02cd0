"""Training: the series' recipe, its optimizer and schedule, and one ``train()`` entry point.

The recipe (``Recipe`` defaults) is what the README's results use: Nesterov SGD with
a linear warm-up then cosine decay (``keras.optimizers.schedules.CosineDecay``),
decoupled weight decay, label smoothing, random flips and random shifts (bilinear,
borders reflected; Keras preprocessing layers), batch 256, and BatchNorm statistics recomputed
on clean training images before each validation (``batchnorm_images``,
``batchnorm.PreciseBatchNorm``). Options, off by default: weight averaging
(``ema_momentum``), progressive resizing (``low_res_epochs``,
``input_pipeline.LowResolutionStart``) and alternating instead of random flips
(``alternating_flips``, ``input_pipeline.AlternatingFlip``). ``assignment_recipe()`` is the
course assignment's own: Adam at a constant learning rate, no augmentation, batch 128.

``train()`` puts together what three neighbouring modules provide: the batches
(``input_pipeline``), the callbacks of a run (``callbacks``: its clock, time budget, test
points, checkpoints) and the devices it runs on (``devices``). Multi-device (data-parallel)
training: ``train(..., distribution=...)`` replicates the model on every local device and
splits each batch across them (see ``train`` and ``scaled_recipe`` for how batch size and
learning rate scale with the number of devices).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import keras
import numpy as np

from . import batchnorm, distillation, evaluation, whitening
from . import data as cdata
from . import models as cmodels
from .callbacks import (
    BackupAfterLogs,
    SafeCheckpoint,
    SwapEMAWeights,
    TestAccuracyAt,
    Throughput,
    TimeBudget,
    diverged,
)
from .devices import check_even_split, describe_device, describe_machine, distribution_kind, distribution_scope
from .input_pipeline import AlternatingFlip, LowResolutionStart, augmentation, build_before_fit, make_dataset, mixing


@dataclasses.dataclass
class Recipe:
    """Hyper-parameters of a training run; the defaults are the series' recipe."""

    model: str = "sepnet"
    epochs: int | None = None  # as given; the run's length is `epoch_count`
    default_epochs: int = 150  # epochs when neither `epochs` nor `minutes` is given (the main model's run)
    batch_size: int = 256
    # 150 epochs at peak 0.4 since 2026-12-07: 91.69 % mean validation accuracy over the last ten epochs,
    # against 91.10 % for 100 at 0.2 and 91.18 % for 150 at 0.2 (benchmarks/README.md, "Half as many
    # epochs again at the doubled peak learning rate"); the runs shipped before then name --peak-lr 0.2
    # and, where they relied on the default, --epochs 100 in their recorded commands.
    peak_lr: float = 0.4
    warmup_fraction: float = 0.15
    final_lr_fraction: float = 0.01
    momentum: float = 0.9
    # Decoupled (Keras): kernels shrink by learning rate x weight_decay per step, outside the momentum, so
    # the first sessions' 0.0005 was five times weaker than the classic CIFAR recipe's L2. 0.0025 since
    # 2026-12-05: 89.94 and 90.00 % after 100 epochs on two seeds, against 88.07-89.05 % for six runs with
    # 0.0005 (benchmarks/README.md, "The recipe's weight decay becomes 0.0025"); the runs shipped before
    # then name --weight-decay 0.0005 in their recorded commands.
    weight_decay: float = 0.0025
    label_smoothing: float = 0.1
    translate: float = 0.125  # 4 pixels of a 32-pixel image
    rotate: float = 0.0  # random rotations of up to this many degrees (0: none)
    whole_pixel_shifts: bool = False  # True: shifts by whole pixels (pad-and-crop); False: bilinear, fractional
    erasing: float = 0.0  # probability that a training image has a random rectangle erased (0: none)
    alternating_flips: bool = False  # True: each image flipped every other epoch (AlternatingFlip), not at random
    # MixUp's alpha: images and labels blended with random partners' (input_pipeline.mixing; 0: none)
    mixup: float = 0.0
    # 0: no validation split; train on all 50,000 images and keep the last epoch's model
    # (nothing to select on; for timed runs whose figure is a test point, not a selection)
    val_size: int = 5_000
    train_subset: int | None = None  # use only this many training images (quick runs)
    seed: int = 0
    optimizer: str = "sgd"  # "sgd": the warm-up + cosine schedule above; "adam": constant peak_lr
    augment: bool = True  # augment the training images: flips and shifts, and the rotation, erasing and MixUp above
    ema_momentum: float | None = None  # average the weights (see compile_model); None: off
    low_res_epochs: int = 0  # progressive resizing: train the first epochs on downscaled images (LowResolutionStart)
    low_res_size: int = 16  # their size in pixels
    # layers.FusedBatchNormalization (True) or Keras' own BatchNormalization (False): the same arithmetic,
    # TensorFlow's fused kernel; on this 2-core CPU 1.06x faster per step on 2026-11-27, 1.4-1.5x on
    # 2026-12-02, and ahead in all four seeds of ten minutes that day (benchmarks/README.md).
    # None: the fused layer wherever the network has it (the series' networks), Keras' own in the
    # base models; see `batchnorm_is_fused`
    fused_batchnorm: bool | None = None
    # >0: recompute BatchNorm statistics on this many clean training images before each
    # validation (batchnorm.PreciseBatchNorm); 0: keep the moving averages of training.
    # 5,000 since 2026-12-06 (benchmarks/README.md, "Recomputed BatchNorm statistics become the
    # recipe's default"); the runs shipped before then without it name --batchnorm-images 0
    # in their recorded commands.
    batchnorm_images: int = 5_000
    minutes: float | None = None  # a time budget: train this many minutes (epochs: at most), see TimeBudget
    # knowledge distillation (see the distillation module): .keras files of trained networks whose
    # flip-TTA probabilities on the training images, averaged, are mixed into the targets with this weight
    teachers: tuple[str, ...] = ()
    teacher_weight: float = 0.5

    def __post_init__(self):
        # A budget of 0 would count as "timed" for the schedule and the epoch cap but as no
        # budget for TimeBudget: ten thousand epochs at a constant rate.
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be positive (or None for no time budget), not {self.minutes}")
        # A negative alpha makes MixUp's Beta draw NaN, which would surface as a "diverged" run.
        if self.mixup < 0:
            raise ValueError(f"mixup is MixUp's alpha, 0 (off) or positive, not {self.mixup}")
        if self.mixup and not self.augment:
            raise ValueError("mixup needs augment=True (a recipe without augmentation would drop it silently)")

    @property
    def epoch_count(self) -> int:
        """Epochs the schedule spans and the run trains at most.

        ``epochs`` if given. Otherwise ``default_epochs``, or under a time budget
        (``minutes``) a number out of reach, so that time ends the run: the default 80
        epochs once ended a 60-minute run of sepnet_fast on a fast day after 58 minutes.
        Resolved when read, not when built, so ``dataclasses.replace(recipe, minutes=60)``
        drops the default too.
        """
        if self.epochs is not None:
            return self.epochs
        return self.default_epochs if self.minutes is None else EPOCH_CAP_UNDER_A_BUDGET

    @property
    def batchnorm_is_fused(self) -> bool:
        """Whether the run's network gets ``layers.FusedBatchNormalization``.

        ``fused_batchnorm`` if given (True for a base model is an error, from ``models.build``);
        otherwise whether the network has that variant. Resolved when read, like ``epoch_count``,
        so ``dataclasses.replace(recipe, model="base_model")`` keeps Keras' own there.
        """
        if self.fused_batchnorm is not None:
            return self.fused_batchnorm
        return cmodels.has_fused_batchnorm_variant(self.model)


WHITENING_IMAGES = 5_000  # clean training images whose 2x2 patches set a whitening stem
VAL_BATCH = 1_000  # validation images per batch (under data parallelism, split across the replicas)
EPOCH_CAP_UNDER_A_BUDGET = 10_000  # epochs of a time-budgeted run that names none: out of reach, so time ends it


def assignment_recipe(**overrides) -> Recipe:
    """The course assignment's recipe for its base model, as its public write-ups run it.

    Adam at Keras' default learning rate (0.001, constant), plain cross-entropy, no weight
    decay, no augmentation, batch 128, 50 epochs, BatchNorm's moving averages as trained.
    ``overrides`` replace fields (e.g. ``epochs``); with ``minutes`` and no ``epochs``, the
    time budget alone ends the run (``Recipe.epoch_count``).
    """
    assignment = dict(
        model="base_model",
        default_epochs=50,
        batch_size=128,
        optimizer="adam",
        peak_lr=1e-3,
        weight_decay=0.0,
        label_smoothing=0.0,
        augment=False,
        batchnorm_images=0,  # the moving averages, as Keras keeps them
    )
    return Recipe(**{**assignment, **overrides})


RECIPES = {"series": Recipe, "assignment": assignment_recipe}


def scaled_recipe(recipe: Recipe, n_devices: int) -> Recipe:
    """A copy of ``recipe`` for ``n_devices`` data-parallel replicas: ``batch_size * n``, ``peak_lr * n``.

    ``Recipe.batch_size`` is the *global* batch, split evenly across the replicas. Keeping
    the per-device batch constant (each device does the work it did alone) multiplies the
    global batch by ``n``; the linear scaling rule then multiplies the peak learning rate
    by ``n`` too (the warm-up, already part of the recipe, keeps the first steps stable).
    Epochs, warm-up fraction and the other fields are unchanged; with ``n`` times larger
    batches each epoch has ``n`` times fewer steps.
    """
    n = int(n_devices)
    if n < 1 or n != n_devices:
        raise ValueError(f"n_devices must be a positive integer, got {n_devices!r}")
    return dataclasses.replace(recipe, batch_size=recipe.batch_size * n, peak_lr=recipe.peak_lr * n)


def lr_schedule(recipe: Recipe, steps_per_epoch: int):
    """Linear warm-up to ``peak_lr`` then cosine decay to ``final_lr_fraction * peak_lr``."""
    total = max(1, recipe.epoch_count * steps_per_epoch)
    warmup = int(recipe.warmup_fraction * total)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=recipe.peak_lr * recipe.final_lr_fraction,
        decay_steps=max(1, total - warmup),
        alpha=recipe.final_lr_fraction,
        warmup_target=recipe.peak_lr,
        warmup_steps=warmup,
    )


def lr_by_fraction(recipe: Recipe):
    """The recipe's learning rate as a function of the fraction of training done, 0 to 1.

    The same warm-up and cosine decay as ``lr_schedule``, over a fraction of the run
    instead of a step count: ``TimeBudget`` feeds it the fraction of the time budget spent,
    before every step. It is plain Python arithmetic on purpose. Evaluating the Keras
    schedule eagerly and converting its result to a float took 51 ms per call under JAX
    on the 2-core CPU (0.8 ms under TensorFlow), because each of its dozen operations is
    dispatched on its own and the conversion waits for the device; on an H200 a step
    that did this ran at 122 ms instead of 11 ms
    (``benchmarks/gpu_h200_callbacks_2026-11-28.txt``).
    """
    peak, alpha, warmup = recipe.peak_lr, recipe.final_lr_fraction, recipe.warmup_fraction
    start = peak * alpha  # lr_schedule's initial_learning_rate

    def lr_at(fraction: float) -> float:
        done = min(max(fraction, 0.0), 1.0)
        if done < warmup:  # linear warm-up from start to peak
            return start + (peak - start) * done / warmup
        decayed = (done - warmup) / (1.0 - warmup) if warmup < 1.0 else 1.0
        return peak * ((1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * decayed)) + alpha)

    return lr_at


def compile_model(model: keras.Model, recipe: Recipe, steps_per_epoch: int, jit_compile="auto") -> keras.Model:
    """Compile ``model`` with the recipe's optimizer, loss and metrics.

    ``jit_compile`` goes to ``model.compile``, where ``"auto"`` resolves per backend and
    device (off on a CPU-only TensorFlow machine, on under JAX). Pass it here rather than
    setting ``model.jit_compile`` afterwards: that attribute takes the string ``"auto"``
    as it is, and every backend then reads it as true.
    """
    # Weight averaging: the optimizer keeps an exponential moving average of the weights
    # (``new = m * old + (1 - m) * weights`` after every step); validation, checkpoints and
    # test points use it (``SwapEMAWeights`` in ``_callbacks``) and the model ends with it.
    ema = dict(use_ema=True, ema_momentum=recipe.ema_momentum) if recipe.ema_momentum is not None else {}
    if recipe.optimizer == "adam":
        optimizer = keras.optimizers.Adam(learning_rate=recipe.peak_lr, weight_decay=recipe.weight_decay or None, **ema)
    elif recipe.optimizer == "sgd":
        # With a time budget the rate is a plain variable that ``TimeBudget`` sets before
        # every step; a schedule object would tie it to a step count known in advance.
        timed = recipe.minutes is not None
        optimizer = keras.optimizers.SGD(
            learning_rate=lr_by_fraction(recipe)(0.0) if timed else lr_schedule(recipe, steps_per_epoch),
            momentum=recipe.momentum,
            nesterov=True,
            weight_decay=recipe.weight_decay,
            **ema,
        )
    else:
        raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose 'sgd' or 'adam'")
    if recipe.weight_decay:
        # Decay the convolution and dense kernels only, not BatchNorm scales or biases.
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=recipe.label_smoothing),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


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


@dataclasses.dataclass
class LoggedSoFar:
    """What an interrupted run logged before ``BackupAndRestore`` resumes it."""

    epochs: int = 0
    train_seconds: float = 0.0
    best_val_accuracy: float | None = None
    test_points: list = dataclasses.field(default_factory=list)


def read_history(out: Path) -> list[dict[str, float]]:
    """The rows of ``out/history.csv`` (one per finished epoch, over every session), as floats.

    Keras' ``CSVLogger`` writes "NA" for the validation columns of a run without
    validation (``Recipe.val_size=0``); they read as NaN.
    """
    with open(Path(out) / "history.csv", newline="") as f:
        return [
            {key: float(value) if value != "NA" else math.nan for key, value in row.items()}
            for row in csv.DictReader(f)
        ]


# What Keras' ``BackupAndRestore`` writes beside the weights: {"epoch": epochs finished, ...}.
BACKUP_METADATA = "training_metadata.json"


def backed_up_epochs(out: Path) -> int:
    """The number of epochs the backup in ``out/backup`` holds (0 when it holds none)."""
    metadata = out / "backup" / BACKUP_METADATA
    return json.loads(metadata.read_text())["epoch"] if metadata.is_file() else 0


def logged_so_far(out: Path) -> LoggedSoFar | None:
    """The logs of the interrupted run in ``out`` (``None`` when training starts afresh).

    A run resumes when ``out/backup`` exists (``BackupAndRestore`` deletes it when training
    completes). Without this, a resumed run would restart its training clock at zero,
    overwrite the earlier test points and let its first epoch replace a better
    ``best.keras``. Only the epochs the backup holds count: the logs of an epoch the run
    was killed in before its backup (``callbacks.BackupAfterLogs``) are left out, as the
    resumed run trains that epoch again.
    """
    if not (out / "backup").is_dir() or not (out / "history.csv").is_file():
        return None
    epochs = backed_up_epochs(out)
    rows = read_history(out)[:epochs]
    points_file = out / "test_points.json"
    points = json.loads(points_file.read_text()) if points_file.is_file() else []
    return LoggedSoFar(
        epochs=len(rows),
        train_seconds=sum(row["epoch_seconds"] for row in rows),
        best_val_accuracy=max(
            (row["val_accuracy"] for row in rows if not math.isnan(row["val_accuracy"])), default=None
        ),
        test_points=[point for point in points if point["epoch"] <= epochs],
    )


def keep_logs_of(out: Path, resumed: LoggedSoFar) -> None:
    """Cut ``out``'s history and test points back to the epochs of ``resumed`` (``logged_so_far``),
    so that the resumed run appends its epochs after them, none twice."""
    history = out / "history.csv"
    lines = history.read_text().splitlines(keepends=True)
    history.write_text("".join(lines[: 1 + resumed.epochs]))  # the header, then one row per epoch
    points_file = out / "test_points.json"
    if points_file.is_file():
        points_file.write_text(json.dumps(resumed.test_points, indent=1))


def _time_budget(recipe: Recipe, clock: Throughput, train_seconds: float) -> list:
    """``[TimeBudget]`` for a recipe with ``minutes`` (its learning-rate curve for SGD, none
    for Adam's constant rate), ``[]`` for one without."""
    if recipe.minutes is None:
        return []
    lr_at = lr_by_fraction(recipe) if recipe.optimizer == "sgd" else None
    return [TimeBudget(60.0 * recipe.minutes, clock, lr_at, train_seconds)]


def _callbacks(
    out: Path,
    n_train: int,
    test_set,
    test_at_epochs,
    tensorboard: bool,
    recipe: Recipe | None = None,
    low_res=None,
    clean_train_images=None,
    validating: bool = True,
    flips=None,
) -> list:
    """The callbacks of a training run, in the order they must run (``Throughput`` first of the loggers).

    When ``recipe`` averages the weights (``ema_momentum``), ``SwapEMAWeights`` puts the average
    into the model for validation and, at each epoch's end, for the checkpoint and test
    points after it. ``BackupAfterLogs`` comes last, after every logger, and swaps the
    training weights back for its save, so the backup holds the training weights and their
    average in their own places. ``low_res`` (a
    ``LowResolutionStart``, or None) and ``flips`` (an ``AlternatingFlip``, or None) go
    first, so the epoch's images have their size and flips before anything else in the
    epoch runs. ``recipe.minutes`` adds a ``TimeBudget``
    right after ``Throughput``, whose clock it reads. ``recipe.batchnorm_images`` adds a
    ``PreciseBatchNorm`` on ``clean_train_images`` (``batchnorm.clean_sample``) after the weight
    averaging (it recomputes the statistics of the weights about to be validated) and
    after ``Throughput`` (its seconds are not training time). ``validating=False`` (no
    validation data) makes best.keras the last epoch's model.
    """
    resumed = logged_so_far(out)
    if resumed is None:  # a fresh run: logs left by an earlier, finished run in ``out`` go
        for stale in ("history.csv", "test_points.json"):
            (out / stale).unlink(missing_ok=True)
    else:
        keep_logs_of(out, resumed)
        print(f"Resuming after epoch {resumed.epochs} ({resumed.train_seconds:.0f} s of training so far)")
    resumed = resumed or LoggedSoFar()
    recipe = recipe or Recipe()
    throughput = Throughput(n_train, recipe.batch_size)
    ema = SwapEMAWeights(swap_on_epoch=True) if recipe.ema_momentum is not None else None
    callbacks = [
        *[c for c in (low_res, flips) if c is not None],
        keras.callbacks.TerminateOnNaN(),
        throughput,
        *_time_budget(recipe, throughput, resumed.train_seconds),
        *([ema] if ema is not None else []),
        *([batchnorm.PreciseBatchNorm(clean_train_images)] if recipe.batchnorm_images else []),
        # Without validation data there is nothing to select on: best.keras is the last epoch's.
        SafeCheckpoint(
            str(out / "best.keras"),
            monitor="val_accuracy",
            save_best_only=validating,
            initial_value_threshold=resumed.best_val_accuracy,
        ),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
    ]
    if test_at_epochs:
        callbacks.append(
            TestAccuracyAt(
                *test_set, test_at_epochs, out / "test_points.json", resumed.test_points, resumed.train_seconds
            )
        )
    if tensorboard and keras.backend.backend() != "tensorflow":
        print("TensorBoard logging needs TensorFlow; skipped under the", keras.backend.backend(), "backend")
    elif tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "tb"), write_graph=False))
    # Last, so that an epoch is backed up only once everything above has logged it.
    callbacks.append(BackupAfterLogs(str(out / "backup"), ema))
    return callbacks


def _distilled_targets(recipe: Recipe, x_train, y_train, x_val, y_val) -> np.ndarray:
    """The training targets mixed with the teachers' probabilities; prints how good the teachers are."""
    start = time.perf_counter()
    teachers = [evaluation.load_model(path) for path in recipe.teachers]  # once, for both image sets
    probs = distillation.teacher_probabilities(teachers, x_train)
    report = f"on the training images {evaluation.accuracy(probs, y_train):.2%}"
    if len(x_val):
        report += f", validation {evaluation.accuracy(distillation.teacher_probabilities(teachers, x_val), y_val):.2%}"
    print(
        f"Distilling from {len(recipe.teachers)} teacher(s), weight {recipe.teacher_weight:g} "
        f"(flip-TTA ensemble accuracy {report}; {time.perf_counter() - start:.0f} s)"
    )
    return distillation.soft_targets(y_train, probs, recipe.teacher_weight)


def train(
    recipe: Recipe | None = None,
    out_dir: str | Path = "runs/sepnet",
    data_dir: str | None = None,
    tensorboard: bool = True,
    test_at_epochs=(),
    verbose: int | str = "auto",
    deterministic: bool = False,
    distribution: str | None = None,
    workers: int = 1,
):
    """Train a model of the series with the recipe; return ``(model, history dict)``.

    Writes into ``out_dir``: ``best.keras`` (best validation accuracy; the last epoch's
    model when ``recipe.val_size`` is 0 and there is no validation split), ``final.keras``,
    ``history.csv``, ``history.json``, ``run.json`` (recipe, device, wall time),
    TensorBoard logs under ``tb/`` and a ``backup/`` folder that lets the same command
    resume after an interruption (removed when training completes); a resumed run
    continues the interrupted one's history, test points and training clock, and keeps
    its best checkpoint unless it beats it (``logged_so_far``). Training afresh into the
    folder of a finished run replaces that run's logs.

    ``deterministic=True`` also makes TensorFlow's kernels deterministic (slower), so
    that two runs with the same seed give identical histories on the same machine.

    ``distribution`` (``None``/``"none"``, ``"mirrored"``, ``"tpu"``, ``"data_parallel"``)
    trains data-parallel on all local devices, see ``distribution_scope``: TensorFlow's
    ``MirroredStrategy`` (local GPUs, or logical CPU devices) or ``TPUStrategy``, JAX's
    ``keras.distribution.DataParallel``. The model is built and compiled under it; each
    replica holds a copy of the weights, gets ``batch_size / n`` images of every batch,
    and the gradients are averaged across replicas every step. The number of replicas
    is printed and recorded in ``run.json`` (``"replicas"``).

    Scaling: ``recipe.batch_size`` is the *global* batch. Keep the per-device batch
    constant, i.e. multiply the batch by the number of devices ``n``, and scale the
    peak learning rate linearly with the global batch (``peak_lr * n``):
    ``scaled_recipe(recipe, n)`` does both. Under JAX every batch, the last (partial)
    one included, must split evenly across the devices. BatchNorm statistics are
    computed per replica under TensorFlow and over the global batch under JAX.

    ``workers``: threads preparing the training batches under JAX or PyTorch (see
    ``make_dataset``); TensorFlow's ``tf.data`` sizes its own. One is enough (on the H100
    more were no faster); with more, training starts with one validation pass
    (``build_before_fit``), which keeps every epoch one pass over one shuffle.
    """
    recipe = recipe or Recipe()
    distribution = distribution_kind(distribution)  # an unknown one fails before the data loads
    out = Path(out_dir)
    check_writable(out)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    (x_all, y_all), (x_test, y_test) = cdata.load_cifar10(data_dir)
    (x_train, y_train), (x_val, y_val) = cdata.train_val_split(x_all, y_all, recipe.val_size, recipe.seed)
    x_train, y_train = cdata.subset(x_train, y_train, recipe.train_subset, recipe.seed)
    if recipe.teachers:
        y_train = _distilled_targets(recipe, x_train, y_train, x_val, y_val)
    # Seeded after the teachers have been loaded (which draws random numbers), so that a student
    # starts from the weights that the same command without teachers starts from.
    keras.utils.set_random_seed(recipe.seed)

    alternate = recipe.augment and recipe.alternating_flips
    augmenter = (
        augmentation(
            recipe.translate, recipe.seed, recipe.rotate, recipe.erasing, recipe.whole_pixel_shifts, flip=not alternate
        )
        if recipe.augment
        else None
    )
    flips = AlternatingFlip(len(x_train), recipe.seed) if alternate else None
    low_res = LowResolutionStart(recipe.low_res_size, recipe.low_res_epochs) if recipe.low_res_epochs else None
    train_ds = make_dataset(
        x_train,
        y_train,
        recipe.batch_size,
        augmenter,
        shuffle=True,
        seed=recipe.seed,
        workers=workers,
        low_res=low_res,
        flips=flips,
        # Its own seed: with the shift layer's seed, each batch's MixUp partners would follow the
        # order of its vertical shifts (both draw from identical stateless seeds, step for step).
        # (mixup is 0 whenever augment is off: __post_init__ refuses the pair.)
        mixer=mixing(recipe.mixup, recipe.seed + 1),
    )
    val_ds = make_dataset(x_val, y_val, VAL_BATCH) if len(x_val) else None
    steps = int(np.ceil(len(x_train) / recipe.batch_size))
    with distribution_scope(distribution) as replicas:
        if replicas > 1 and keras.backend.backend() == "jax":
            check_even_split(replicas, recipe.batch_size, len(x_train), len(x_val), VAL_BATCH)
        model = compile_model(cmodels.build(recipe.model, fused_batchnorm=recipe.batchnorm_is_fused), recipe, steps)
        # A whitening stem (models.sepnet_fast_w) is set from clean training images, never trained.
        whitening.adapt_whitening(model, batchnorm.clean_sample(x_train, WHITENING_IMAGES, recipe.seed))

        device, machine = describe_device(), describe_machine()
        print(f"Training {recipe.model} ({model.count_params():,} params) on {device}")
        print(f"Machine: {machine}")
        if distribution != "none":
            print(
                f"Data-parallel ({distribution}) on {replicas} replica(s): "
                f"{recipe.batch_size / replicas:g} images per replica per step of {recipe.batch_size}"
            )
        length = f"{recipe.epoch_count} epochs of {steps} steps"
        if recipe.minutes is not None:
            length = f"{recipe.minutes:g} minutes of training (at most {length})"
        print(f"{len(x_train):,} training / {len(x_val):,} validation images, {length}")

        test_set = (x_test, y_test) if test_at_epochs else None
        clean = batchnorm.clean_sample(x_train, recipe.batchnorm_images, recipe.seed)
        callbacks = _callbacks(
            out, len(x_train), test_set, test_at_epochs, tensorboard, recipe, low_res, clean, val_ds is not None, flips
        )
        if isinstance(train_ds, keras.utils.PyDataset) and train_ds.workers > 1:
            build_before_fit(
                model,
                val_ds if val_ds is not None else make_dataset(x_train[:VAL_BATCH], y_train[:VAL_BATCH], VAL_BATCH),
            )

        start = time.perf_counter()
        history = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=recipe.epoch_count,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the input pipeline shuffles, seeded
        )
        wall = time.perf_counter() - start
        if diverged(history.history.get("loss", [0.0])[-1], model):
            raise FloatingPointError(
                f"training diverged (loss or weights not finite) at epoch {len(history.history['loss'])}; "
                f"the best checkpoint so far is {out / 'best.keras'}. Try a lower --peak-lr."
            )
        model.save(out / "final.keras")
        hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
        hist["epoch"] = [int(e) for e in history.epoch]
        (out / "history.json").write_text(json.dumps(hist, indent=1))
        run = {
            "recipe": dataclasses.asdict(recipe),
            "epoch_count": recipe.epoch_count,  # what the recipe resolved to (its `epochs` may be None)
            "batchnorm_is_fused": recipe.batchnorm_is_fused,  # likewise (its `fused_batchnorm` may be None)
            "device": device,
            "machine": machine,  # the CPU model: speeds only compare on the same one
            "backend": keras.backend.backend(),
            "keras": keras.__version__,
            "params": model.count_params(),
            "wall_seconds_this_session": wall,
            "mean_images_per_second": float(np.mean(hist.get("images_per_second", [np.nan]))),
            "distribution": distribution,
            "replicas": replicas,
            "workers": workers,
        }
        (out / "run.json").write_text(json.dumps(run, indent=1))
        return model, hist
