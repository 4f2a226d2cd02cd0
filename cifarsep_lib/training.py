"""Training: input pipeline, the series' recipe, callbacks, and one ``train()`` entry point.

The recipe (``Recipe`` defaults) is what the README's results use: Nesterov SGD with
a linear warm-up then cosine decay (``keras.optimizers.schedules.CosineDecay``),
decoupled weight decay, label smoothing, random flips and pad-and-crop style
translations (Keras preprocessing layers), batch 256. Options, off by default: weight
averaging (``ema_momentum``), progressive resizing (``low_res_epochs``,
``LowResolutionStart``), BatchNorm statistics recomputed before each validation
(``batchnorm_images``, ``batchnorm.PreciseBatchNorm``) and alternating instead of random
flips (``alternating_flips``, ``AlternatingFlip``). ``assignment_recipe()`` is the
course assignment's own: Adam at a constant learning rate, no augmentation, batch 128.

Multi-device (data-parallel) training: ``train(..., distribution=...)`` replicates the
model on every local device and splits each batch across them (see ``train`` and
``scaled_recipe`` for how batch size and learning rate scale with the number of devices).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import platform
import shutil
import threading
import time
from pathlib import Path

import keras
import numpy as np

from . import batchnorm, evaluation, whitening
from . import data as cdata
from . import models as cmodels


@dataclasses.dataclass
class Recipe:
    """Hyper-parameters of a training run; the defaults are the series' recipe."""

    model: str = "sepnet"
    epochs: int | None = None  # as given; the run's length is `epoch_count`
    default_epochs: int = 80  # epochs when neither `epochs` nor `minutes` is given (the shipped sepnet run)
    batch_size: int = 256
    peak_lr: float = 0.2
    warmup_fraction: float = 0.15
    final_lr_fraction: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    translate: float = 0.125  # 4 pixels of a 32-pixel image
    rotate: float = 0.0  # random rotations of up to this many degrees (0: none)
    whole_pixel_shifts: bool = False  # True: shifts by whole pixels (pad-and-crop); False: bilinear, fractional
    erasing: float = 0.0  # probability that a training image has a random rectangle erased (0: none)
    alternating_flips: bool = False  # True: each image flipped every other epoch (AlternatingFlip), not at random
    # 0: no validation split; train on all 50,000 images and keep the last epoch's model
    # (nothing to select on; for timed runs whose figure is a test point, not a selection)
    val_size: int = 5_000
    train_subset: int | None = None  # use only this many training images (quick runs)
    seed: int = 0
    optimizer: str = "sgd"  # "sgd": the warm-up + cosine schedule above; "adam": constant peak_lr
    augment: bool = True  # random flips and translations of the training images
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
    # validation (batchnorm.PreciseBatchNorm); 0: keep the moving averages of training
    batchnorm_images: int = 0
    minutes: float | None = None  # a time budget: train this many minutes (epochs: at most), see TimeBudget

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
EPOCH_CAP_UNDER_A_BUDGET = 10_000  # epochs of a time-budgeted run that names none: out of reach, so time ends it


def assignment_recipe(**overrides) -> Recipe:
    """The course assignment's recipe for its base model, as its public write-ups run it.

    Adam at Keras' default learning rate (0.001, constant), plain cross-entropy, no weight
    decay, no augmentation, batch 128, 50 epochs. ``overrides`` replace fields (e.g. ``epochs``);
    with ``minutes`` and no ``epochs``, the time budget alone ends the run (``Recipe.epoch_count``).
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


DISTRIBUTIONS = ("none", "mirrored", "tpu", "data_parallel")


def _tf_strategy(kind: str):
    """The ``tf.distribute`` strategy for ``kind``: all TensorFlow-specific code lives here.

    ``"tpu"``: ``TPUStrategy`` on the TPU attached to this runtime (Colab, TPU VMs).
    Otherwise ``MirroredStrategy`` over all local GPUs or, without GPUs, over the logical
    CPU devices (several only if configured with ``tf.config.set_logical_device_configuration``
    before TensorFlow initialises; else one, and nothing is gained).
    """
    import tensorflow as tf

    if kind == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()  # Colab TPU runtime
        except ValueError:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")  # TPU VM
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


@contextlib.contextmanager
def _jax_distribution(kind: str):
    """Make ``keras.distribution.DataParallel`` over the local devices current; restore the previous one after."""
    devices = keras.distribution.list_devices("tpu" if kind == "tpu" else None)
    if not devices:
        raise RuntimeError("distribution='tpu' but JAX sees no TPU devices")
    previous = keras.distribution.distribution()
    dist = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(dist)
    try:
        yield dist
    finally:
        keras.distribution.set_distribution(previous)


@contextlib.contextmanager
def distribution_scope(distribution: str | None):
    """Context for building, compiling and fitting a model under ``distribution``; yields the replica count.

    ``None``/``"none"``: no distribution, yields 1. Under TensorFlow, ``"mirrored"`` and
    ``"data_parallel"`` mean ``MirroredStrategy``, ``"tpu"`` ``TPUStrategy`` (its ``scope()``
    is entered). Under JAX, all three mean ``keras.distribution.DataParallel`` over the local
    devices (TPU devices only for ``"tpu"``), set globally and restored on exit.
    """
    kind = (distribution or "none").lower()
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    backend = keras.backend.backend()
    if kind == "none":
        yield 1
    elif backend == "tensorflow":
        strategy = _tf_strategy(kind)
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    elif backend == "jax":
        with _jax_distribution(kind) as dist:
            yield dist.num_model_replicas
    else:
        raise NotImplementedError(
            f"distribution={distribution!r} is supported under the tensorflow and jax backends, not {backend}"
        )


def accelerators() -> list[str]:
    """Names of the non-CPU devices the active backend sees (empty on a CPU-only machine).

    ``keras.distribution.list_devices`` covers TensorFlow and JAX; Keras has no
    distribution support for PyTorch, so that backend is asked directly.
    """
    if keras.backend.backend() == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [d for d in keras.distribution.list_devices() if not d.lower().startswith("cpu")]


def describe_device() -> str:
    """A human-readable name of the device Keras trains on (GPU name, or CPU)."""
    accel = accelerators()
    if accel and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        return ", ".join(names) or ", ".join(accel)
    if accel and keras.backend.backend() == "jax":
        import jax

        return ", ".join(d.device_kind for d in jax.devices() if d.platform != "cpu")  # e.g. NVIDIA H100 80GB HBM3
    if accel and keras.backend.backend() == "torch":
        import torch

        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    if accel:
        return ", ".join(accel)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def augmentation(
    translate: float = 0.125,
    seed: int | None = None,
    rotate: float = 0.0,
    erasing: float = 0.0,
    whole_pixel_shifts: bool = False,
    flip: bool = True,
) -> keras.Sequential | None:
    """Random horizontal flip and a random shift of up to ``translate`` of the image size (0: none).

    The shift reflects the border back in, like the classic pad-by-4-and-crop. Keras draws
    it from a continuous range and interpolates bilinearly, so most shifts fall between
    pixels and blur the image a little; ``whole_pixel_shifts`` rounds them to whole pixels
    instead (nearest-neighbour), as pad-and-crop does, so training images stay as sharp
    as the test images.

    ``rotate`` > 0 adds a random rotation of up to that many degrees either way (also
    reflecting the border), applied before the shift. ``erasing`` > 0 then erases, with
    that probability per image, a random rectangle (each side 14-57 % of the image's,
    Keras' ``RandomErasing``) and fills it with the mean CIFAR-10 grey: the network has
    to recognise objects from their parts (Cutout, random erasing).

    ``flip=False`` leaves the flips out (``AlternatingFlip`` does them instead); with
    nothing else asked for there is then no augmentation at all, and the result is None.
    """
    steps = [keras.layers.RandomFlip("horizontal", seed=seed)] if flip else []
    if rotate:
        steps.append(keras.layers.RandomRotation(rotate / 360.0, fill_mode="reflect", seed=seed))
    if translate:  # 0: flips only (no layer, no cost)
        interpolation = "nearest" if whole_pixel_shifts else "bilinear"
        steps.append(
            keras.layers.RandomTranslation(
                translate, translate, fill_mode="reflect", interpolation=interpolation, seed=seed
            )
        )
    if erasing:
        # factor=(p, p): every image is erased with probability p (a single float would
        # draw each image's probability between 0 and p). The fill is the mean CIFAR-10
        # grey, close to what the model's normalisation maps to zero. One value, not one per
        # channel: Keras 3.15's RandomErasing fails under JAX with a per-channel fill.
        mean_grey = 255.0 * float(np.mean(cdata.TRAIN_MEAN))
        steps.append(keras.layers.RandomErasing(factor=(erasing, erasing), fill_value=mean_grey, seed=seed))
    return keras.Sequential(steps, name="augmentation") if steps else None


class AlternatingFlip(keras.callbacks.Callback):
    """Derandomised horizontal flips (airbench's "alternating flip").

    Random flips leave it to chance whether an image is seen both ways round in two
    consecutive epochs: about half the time it is shown the same way twice, which teaches
    the network nothing new. Here each training image gets one random coin toss (seeded)
    that decides whether it is flipped in the first epoch, and from then on it is
    flipped in every other epoch: any two consecutive epochs show every image once each
    way round. On a short schedule, such as the ten-minute runs on the CPU, where each
    image is seen only 15-20 times, that matters most.

    Like ``LowResolutionStart``, this is a callback (it reads the epoch number at the
    start of every epoch, also when ``BackupAndRestore`` resumes a run) that the input
    pipeline asks, batch by batch, through ``flip`` (numpy, for ``PyDataset``) or
    ``flip_tf`` (a TensorFlow graph, for ``tf.data``). The batches come with the index of
    each image in the training set, which is what the coin toss is looked up by.
    """

    def __init__(self, n_images: int, seed: int = 0):
        super().__init__()
        self.first_flipped = np.random.default_rng(seed).random(n_images) < 0.5
        self.odd_epoch = False
        self._tf_odd = self._tf_first = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # tf.data runs the pipeline as a graph, which reads the epoch's parity from this variable.
            self._tf_odd = tf.Variable(False, trainable=False, name="odd_epoch")
            self._tf_first = tf.constant(self.first_flipped)

    def on_epoch_begin(self, epoch, logs=None):
        self.odd_epoch = epoch % 2 == 1
        if self._tf_odd is not None:
            self._tf_odd.assign(self.odd_epoch)

    def flipped(self, indices) -> np.ndarray:
        """Whether the images with these training-set indices are flipped in this epoch."""
        return self.first_flipped[indices] != self.odd_epoch

    def flip(self, images: np.ndarray, indices) -> np.ndarray:
        """``images`` (a numpy batch, NHWC) with this epoch's flips applied."""
        mask = self.flipped(indices)
        out = images.copy()
        out[mask] = out[mask][:, :, ::-1]
        return out

    def flip_tf(self, images, indices):
        """The same as a TensorFlow graph, for a ``tf.data`` pipeline (TensorFlow backend only)."""
        import tensorflow as tf

        mask = tf.not_equal(tf.gather(self._tf_first, indices), self._tf_odd)
        return tf.where(mask[:, None, None, None], tf.reverse(images, axis=[2]), images)


class LowResolutionStart(keras.callbacks.Callback):
    """Progressive resizing: train the first ``epochs`` epochs on images downscaled to ``size`` pixels.

    The models are fully convolutional, so they train on 16x16 images as well as on
    32x32 ones, and on a CPU, where the cost grows with the number of pixels, an epoch
    at 16x16 takes a fraction of the time (``scripts/benchmark.py --low-res-sizes``).
    The last epochs train at full size, so the network ends adapted to the object scale
    and BatchNorm statistics of the images it will see. Validation is always at full size.

    The training pipeline downscales each augmented batch (antialiased bilinear) while
    the flag is on; this callback sets the flag at the start of every epoch, also when
    ``BackupAndRestore`` resumes a run in the middle. That every batch of an epoch has the
    epoch's size is tested under each backend with one worker (the default); with
    ``workers > 1`` (JAX, PyTorch) batches queued ahead across the switch are not checked.
    """

    def __init__(self, size: int, epochs: int):
        super().__init__()
        self.size, self.epochs = int(size), int(epochs)
        self.active = self.epochs > 0
        self._tf_flag = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            # tf.data runs the pipeline as a graph, which reads the flag from this variable.
            self._tf_flag = tf.Variable(self.active, trainable=False, name="low_resolution")

    def on_epoch_begin(self, epoch, logs=None):
        self.active = epoch < self.epochs
        if self._tf_flag is not None:
            self._tf_flag.assign(self.active)

    def downscale(self, images):
        """``images`` (a numpy batch) downscaled while the flag is on, else unchanged."""
        if not self.active:
            return images
        return keras.ops.convert_to_numpy(keras.ops.image.resize(images, (self.size, self.size), antialias=True))

    def downscale_tf(self, images):
        """The same as a TensorFlow graph, for a ``tf.data`` pipeline (TensorFlow backend only)."""
        import tensorflow as tf

        def small():
            return tf.image.resize(images, (self.size, self.size), method="bilinear", antialias=True)

        return tf.cond(self._tf_flag, small, lambda: images)


def one_hot(labels) -> np.ndarray:
    """Integer labels, of shape ``(N,)`` or ``(N, 1)`` as CIFAR-10 stores them, as float32
    one-hot rows ``(N, 10)``: the targets label smoothing needs (it smooths one-hot targets)."""
    return keras.utils.to_categorical(np.asarray(labels).reshape(-1), cdata.NUM_CLASSES).astype("float32")


class _AugmentedBatches(keras.utils.PyDataset):
    """Backend-neutral batches: optionally shuffled each epoch, optionally augmented with Keras layers.

    The augmentation layers run on ``chunk_size`` images at a time (a few thousand), not on
    each batch: called eagerly, as here, every call pays a fixed cost per operation (on a
    GPU: launching a dozen small kernels, waiting for them, copying the result back), and
    a few large calls per epoch pay it far less often than one call per batch. Every image
    still gets its own random flip and shift.

    With ``workers > 1`` Keras prepares batches in that many threads while the model
    trains on earlier ones. The augmentation layers draw their random transforms from one
    seed generator, so only one thread at a time augments a chunk (the lock).
    """

    def __init__(
        self,
        x,
        y,
        batch_size,
        augmenter,
        shuffle,
        seed,
        workers: int = 1,
        chunk_size: int = 4096,
        low_res=None,
        flips=None,
    ):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.x, self.y, self.batch_size, self.low_res, self.flips = x, one_hot(y), batch_size, low_res, flips
        self.augmenter, self.shuffle, self.rng = augmenter, shuffle, np.random.default_rng(seed)
        # Whole batches per chunk, so that no batch straddles two chunks.
        self.chunk_batches = max(1, chunk_size // batch_size)
        self.order = self._new_order()
        self._augment_lock = threading.Lock()
        self._chunks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _new_order(self):
        return self.rng.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))

    def __len__(self):
        return int(np.ceil(len(self.x) / self.batch_size))

    def _augmented_chunk(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of chunk ``c`` of this epoch's order, the images augmented."""
        with self._augment_lock:
            if c not in self._chunks:
                size = self.chunk_batches * self.batch_size
                idx = self.order[c * size : (c + 1) * size]
                images = self.x[idx].astype("float32")
                if self.flips is not None:
                    images = self.flips.flip(images, idx)
                if self.augmenter is not None:
                    images = keras.ops.convert_to_numpy(self.augmenter(images, training=True))
                if self.low_res is not None:
                    images = self.low_res.downscale(images)
                # The labels are taken with the images, so a new epoch's order cannot mismatch them.
                self._chunks[c] = (images, self.y[idx])
                for old in [k for k in self._chunks if k < c - 1]:  # keep memory to two chunks
                    del self._chunks[old]
            return self._chunks[c]

    def __getitem__(self, i):
        if self.augmenter is None and self.flips is None:
            idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
            images = self.x[idx].astype("float32")
            return (self.low_res.downscale(images) if self.low_res is not None else images), self.y[idx]
        c, k = divmod(i, self.chunk_batches)
        images, labels = self._augmented_chunk(c)
        batch = slice(k * self.batch_size, (k + 1) * self.batch_size)
        return images[batch], labels[batch]

    def on_epoch_end(self):
        self.order = self._new_order()
        with self._augment_lock:
            self._chunks.clear()


def build_before_fit(model: keras.Model, dataset) -> None:
    """Build a compiled model's loss and metrics by evaluating it on ``dataset`` once.

    Call it before ``fit`` on a ``PyDataset`` with several workers. Otherwise ``fit``
    takes one batch from the training data to build them, and (Keras 3.15, measured
    under JAX and PyTorch) the batches queued behind that one are then served as the
    start of epoch 1, so every epoch starts 11 batches early and straddles two shuffles
    of the data. Evaluating on the validation set first costs one validation pass and
    compiles the evaluation step that validation needs anyway.
    """
    model.evaluate(dataset, verbose=0)


def make_dataset(
    x,
    y,
    batch_size: int,
    augmenter=None,
    shuffle: bool = False,
    seed: int = 0,
    workers: int = 1,
    low_res=None,
    flips=None,
):
    """Batches of ``(float32 images 0-255, one-hot labels)`` for ``fit``/``evaluate``.

    ``low_res``: a ``LowResolutionStart`` callback that downscales the (augmented) batches
    while it is active; ``flips``: an ``AlternatingFlip`` callback that flips the images
    before ``augmenter`` (which should then not flip them again). Pass the same callbacks
    to ``fit``.

    Under the TensorFlow backend this is a ``tf.data`` pipeline (augmentation runs in
    its threads, overlapping the training step) with tf.data's autotuning switched off,
    see ``data.without_autotune``; under JAX or PyTorch it is a
    ``keras.utils.PyDataset`` doing the same work, in ``workers`` threads. One is enough:
    the augmentation runs in large chunks and is serialised anyway (four were no faster on
    an H100); with more, see ``build_before_fit``.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # Each image travels with its index in x, which AlternatingFlip looks its coin toss up by.
        ds = tf.data.Dataset.from_tensor_slices((x, one_hot(y), tf.range(len(x))))
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

        def as_float(images, labels, indices):
            images = tf.cast(images, "float32")
            return (flips.flip_tf(images, indices) if flips is not None else images), labels

        ds = ds.batch(batch_size).map(as_float)
        if augmenter is not None:
            ds = ds.map(lambda a, b: (augmenter(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
        if low_res is not None:
            ds = ds.map(lambda a, b: (low_res.downscale_tf(a), b), num_parallel_calls=tf.data.AUTOTUNE)
        return cdata.without_autotune(ds.prefetch(tf.data.AUTOTUNE))
    return _AugmentedBatches(x, y, batch_size, augmenter, shuffle, seed, workers, low_res=low_res, flips=flips)


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
    rate before every step from the fraction of the budget spent (``lr_by_fraction``:
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


class SafeCheckpoint(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` that never overwrites the last good file with a diverged (NaN) model.

    ``TerminateOnNaN`` stops an epoch early, but Keras still ends that epoch with
    ``on_epoch_end``; a plain checkpoint would then save the broken weights. The epoch's
    loss alone is not enough: it averages losses computed *before* each update, so the
    epoch's last updates can overflow the weights while the logged loss is still finite
    (seen on a 2-core Intel Xeon at a learning rate of 1e12). The weights are checked too.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and not np.isfinite(logs.get("loss", 0.0)):
            return
        if not all(np.isfinite(keras.ops.convert_to_numpy(w)).all() for w in self.model.weights):
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


def _check_even_split(replicas: int, batch_size: int, n_train: int, n_val: int, val_batch: int = 1000) -> None:
    """Under JAX's DataParallel every batch must split evenly across the devices; fail early if not."""
    sizes = {"batch_size": batch_size, "last training batch": n_train % batch_size or batch_size}
    sizes["last validation batch"] = n_val % val_batch or min(n_val, val_batch)
    uneven = {name: size for name, size in sizes.items() if size % replicas}
    if uneven:
        raise ValueError(
            f"data-parallel training on {replicas} devices needs every batch divisible by {replicas}; "
            f"these are not: {uneven}. Choose a batch size, --train-subset and --val-size that are."
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


def logged_so_far(out: Path) -> LoggedSoFar | None:
    """The logs of the interrupted run in ``out`` (``None`` when training starts afresh).

    A run resumes when ``out/backup`` exists (``BackupAndRestore`` deletes it when training
    completes). Without this, a resumed run would restart its training clock at zero,
    overwrite the earlier test points and let its first epoch replace a better
    ``best.keras``.
    """
    if not (out / "backup").is_dir() or not (out / "history.csv").is_file():
        return None
    rows = read_history(out)
    points_file = out / "test_points.json"
    return LoggedSoFar(
        epochs=len(rows),
        train_seconds=sum(row["epoch_seconds"] for row in rows),
        best_val_accuracy=max(
            (row["val_accuracy"] for row in rows if not math.isnan(row["val_accuracy"])), default=None
        ),
        test_points=json.loads(points_file.read_text()) if points_file.is_file() else [],
    )


def _time_budget(recipe: Recipe, clock: Throughput, train_seconds: float) -> list:
    """``[TimeBudget]`` for a recipe with ``minutes`` (its learning-rate curve for SGD, none
    for Adam's constant rate), ``[]`` for one without."""
    if not recipe.minutes:
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
    points after it; ``BackupAndRestore`` comes before it, so the backup holds the
    training weights and their average in their own places. ``low_res`` (a
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
        print(f"Resuming after epoch {resumed.epochs} ({resumed.train_seconds:.0f} s of training so far)")
    resumed = resumed or LoggedSoFar()
    recipe = recipe or Recipe()
    throughput = Throughput(n_train, recipe.batch_size)
    callbacks = [
        *[c for c in (low_res, flips) if c is not None],
        keras.callbacks.BackupAndRestore(str(out / "backup")),
        keras.callbacks.TerminateOnNaN(),
        throughput,
        *_time_budget(recipe, throughput, resumed.train_seconds),
        *([SwapEMAWeights(swap_on_epoch=True)] if recipe.ema_momentum is not None else []),
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
    return callbacks


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
    distribution = (distribution or "none").lower()
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    out = Path(out_dir)
    check_writable(out)
    keras.utils.set_random_seed(recipe.seed)
    if deterministic and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()

    (x_all, y_all), (x_test, y_test) = cdata.load_cifar10(data_dir)
    (x_train, y_train), (x_val, y_val) = cdata.train_val_split(x_all, y_all, recipe.val_size, recipe.seed)
    x_train, y_train = cdata.subset(x_train, y_train, recipe.train_subset, recipe.seed)

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
    )
    val_ds = make_dataset(x_val, y_val, 1000) if len(x_val) else None
    steps = int(np.ceil(len(x_train) / recipe.batch_size))
    with distribution_scope(distribution) as replicas:
        if replicas > 1 and keras.backend.backend() == "jax":
            _check_even_split(replicas, recipe.batch_size, len(x_train), len(x_val))
        model = compile_model(cmodels.build(recipe.model, fused_batchnorm=recipe.batchnorm_is_fused), recipe, steps)
        # A whitening stem (models.sepnet_fast_w) is set from clean training images, never trained.
        whitening.adapt_whitening(model, batchnorm.clean_sample(x_train, WHITENING_IMAGES, recipe.seed))

        device = describe_device()
        print(f"Training {recipe.model} ({model.count_params():,} params) on {device}")
        if distribution != "none":
            print(
                f"Data-parallel ({distribution}) on {replicas} replica(s): "
                f"{recipe.batch_size / replicas:g} images per replica per step of {recipe.batch_size}"
            )
        length = f"{recipe.epoch_count} epochs of {steps} steps"
        if recipe.minutes:
            length = f"{recipe.minutes:g} minutes of training (at most {length})"
        print(f"{len(x_train):,} training / {len(x_val):,} validation images, {length}")

        test_set = (x_test, y_test) if test_at_epochs else None
        clean = batchnorm.clean_sample(x_train, recipe.batchnorm_images, recipe.seed)
        callbacks = _callbacks(
            out, len(x_train), test_set, test_at_epochs, tensorboard, recipe, low_res, clean, val_ds is not None, flips
        )
        if isinstance(train_ds, keras.utils.PyDataset) and train_ds.workers > 1:
            build_before_fit(
                model, val_ds if val_ds is not None else make_dataset(x_train[:1000], y_train[:1000], 1000)
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
            "epoch_count": recipe.epoch_count,  # what the recipe resolved to (its `epochs` may be None)
            "batchnorm_is_fused": recipe.batchnorm_is_fused,  # likewise (its `fused_batchnorm` may be None)
            "device": device,
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
