"""The input pipeline: augmentation layers, and batches of images with one-hot labels.

``make_dataset`` is what ``training.train`` feeds to ``fit`` and ``evaluate``: a ``tf.data``
pipeline under TensorFlow, an ``AugmentedBatches`` (a ``keras.utils.PyDataset``) doing the
same work under JAX or PyTorch. ``augmentation`` builds the random flips and shifts, and the
optional rotations and erasing (Keras preprocessing layers); ``mixing`` builds MixUp, which
blends each image and its label with a random partner's. Two callbacks steer the pipeline
epoch by epoch: ``AlternatingFlip`` (each image flipped every other epoch) and
``LowResolutionStart`` (progressive resizing); pass them both to ``make_dataset`` and to
``fit``.
"""

from __future__ import annotations

import threading

import keras
import numpy as np

from . import data as cdata


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
    way round. It should matter most on a short schedule, such as the ten-minute runs on the
    CPU, where each image is seen 12-33 times; over six ten-minute seeds (2026-11-28) it made
    no difference: 82.64 % against 82.71 % with random flips
    (``benchmarks/cpu_ten_minutes_alternating_flips_2026-11-28.txt``).

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


def mixing(alpha: float, seed: int | None = None) -> keras.layers.MixUp | None:
    """Keras' ``MixUp``: each training image blended with a partner, and its label with the partner's by the
    same weight: the image keeps w ~ Beta(``alpha``, ``alpha``), the partner gets 1 - w (small ``alpha``:
    mostly one image). The partner is image π(i) of a random permutation π of the batch (tf.data) or of
    the chunk of whole batches (up to ``chunk_size``, 4,096 images, in ``AugmentedBatches``), now and then
    the image itself. None for 0.

    The network then sees mixtures it must score in proportion, which discourages confident
    answers between the training images (Zhang et al. 2018); xvel/cifar10-tiniest uses it. Training
    accuracy, measured against the mixed labels' larger part, reads lower than without it.
    """
    return keras.layers.MixUp(alpha=alpha, seed=seed) if alpha else None


def _mixed(mixer, images, labels):
    """``(images, labels)`` blended by ``mixer``, a ``MixUp`` layer."""
    out = mixer({"images": images, "labels": labels}, training=True)
    return out["images"], out["labels"]


def one_hot(labels) -> np.ndarray:
    """Integer labels, of shape ``(N,)`` or ``(N, 1)`` as CIFAR-10 stores them, as float32
    one-hot rows ``(N, 10)``: the targets label smoothing needs (it smooths one-hot targets).

    Rows of ``(N, 10)`` floats are targets already (a teacher's probabilities, see
    ``distillation.soft_targets``) and pass through as float32.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == cdata.NUM_CLASSES and np.issubdtype(labels.dtype, np.floating):
        return labels.astype("float32")
    return keras.utils.to_categorical(labels.reshape(-1), cdata.NUM_CLASSES).astype("float32")


class AugmentedBatches(keras.utils.PyDataset):
    """Backend-neutral batches: optionally shuffled each epoch, optionally augmented with Keras layers.

    The augmentation layers run on ``chunk_size`` images at a time (a few thousand), not on
    each batch: called eagerly, as here, every call pays a fixed cost per operation (on a
    GPU: launching a dozen small kernels, waiting for them, copying the result back), and
    a few large calls per epoch pay it far less often than one call per batch. Every image
    still gets its own random flip and shift, and ``mixer`` (MixUp) blends each with a partner
    from its chunk.

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
        mixer=None,
    ):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.x, self.y, self.batch_size, self.low_res, self.flips = x, one_hot(y), batch_size, low_res, flips
        self.mixer = mixer
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
                # The labels are taken with the images, so a new epoch's order cannot mismatch them.
                labels = self.y[idx]
                if self.mixer is not None:
                    images, labels = (keras.ops.convert_to_numpy(t) for t in _mixed(self.mixer, images, labels))
                if self.low_res is not None:
                    images = self.low_res.downscale(images)
                self._chunks[c] = (images, labels)
                for old in [k for k in self._chunks if k < c - 1]:  # keep memory to two chunks
                    del self._chunks[old]
            return self._chunks[c]

    def __getitem__(self, i):
        if self.augmenter is None and self.flips is None and self.mixer is None:
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
    mixer=None,
):
    """Batches of ``(float32 images 0-255, one-hot labels)`` for ``fit``/``evaluate``.

    ``low_res``: a ``LowResolutionStart`` callback that downscales the (augmented) batches
    while it is active; ``flips``: an ``AlternatingFlip`` callback that flips the images
    before ``augmenter`` (which should then not flip them again). Pass the same callbacks
    to ``fit``. ``mixer``: a ``MixUp`` layer (see ``mixing``) that blends each augmented
    image and its label with a random partner's.

    Under the TensorFlow backend this is a ``tf.data`` pipeline (augmentation runs in
    its threads, overlapping the training step) with tf.data's autotuning switched off,
    see ``data.without_autotune``; under JAX or PyTorch it is an
    ``AugmentedBatches`` doing the same work, in ``workers`` threads. One is enough:
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
        if mixer is not None:
            ds = ds.map(lambda a, b: _mixed(mixer, a, b), num_parallel_calls=tf.data.AUTOTUNE)
        if low_res is not None:
            ds = ds.map(lambda a, b: (low_res.downscale_tf(a), b), num_parallel_calls=tf.data.AUTOTUNE)
        return cdata.without_autotune(ds.prefetch(tf.data.AUTOTUNE))
    return AugmentedBatches(
        x, y, batch_size, augmenter, shuffle, seed, workers, low_res=low_res, flips=flips, mixer=mixer
    )
