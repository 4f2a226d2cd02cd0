"""Loading CIFAR-10: the official download, or a local copy in the official binary layout.

The loader returns what ``keras.datasets.cifar10.load_data()`` returns:
``(x_train, y_train), (x_test, y_test)`` with uint8 images of shape ``(N, 32, 32, 3)``
and integer labels 0-9 of shape ``(N, 1)``, in one fixed order whatever the source.

Why a fixed order: the course's offline copy holds the official images in another order
than the official archive, and a seeded split (``train_val_split``) picks images by
position. So that a seed holds out the same validation images everywhere, the ones the
shipped models never trained on, ``load_cifar10`` puts every copy in the offline copy's
order (``in_series_order``), recognising each image by a fingerprint of its pixels; the
60,000 fingerprints ship with the library (``cifar10_order.npz``, no image data).

Sources, in order of precedence:

1. ``data_dir=`` argument, a folder that holds ``cifar-10-batches-bin/``;
2. the ``CIFARSEP_DATA`` environment variable, the same kind of folder;
3. the official binary archive, downloaded once by ``keras.utils.get_file`` (which
   checks its published MD5 hash and caches it under ``~/.keras/datasets``).

Nothing is unpickled: the binary layout is parsed with numpy only.

``without_autotune`` is the one option every ``tf.data`` pipeline of the series sets.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
NUM_CLASSES = 10

# Published per-channel statistics of the 50,000 training images (pixels scaled to 0-1).
TRAIN_MEAN = (0.49139968, 0.48215841, 0.44653091)
TRAIN_STD = (0.24703223, 0.24348513, 0.26158784)

RECORD_BYTES = 1 + 32 * 32 * 3  # one label byte, then the R, G and B planes
RECORDS_PER_BATCH = 10_000
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
BATCHES_DIR = "cifar-10-batches-bin"

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
# The MD5 published on https://www.cs.toronto.edu/~kriz/cifar.html for the binary version.
OFFICIAL_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"

ENV_VAR = "CIFARSEP_DATA"

# Pixel fingerprints of the training then the test images, in the series' order
# (scripts/make_cifar10_order.py writes it from the offline copy).
ORDER_FILE = Path(__file__).with_name("cifar10_order.npz")


class CifarDataError(RuntimeError):
    """A CIFAR-10 folder or file is missing or malformed; the message says how to fix it."""


def _fix_hint() -> str:
    return (
        f"Point {ENV_VAR} (or data_dir=) at a folder holding {BATCHES_DIR}/ from the official "
        f"binary archive {OFFICIAL_URL}, or unset it to download that archive automatically."
    )


def read_batch(path: str | Path, expected_records: int | None = RECORDS_PER_BATCH):
    """Parse one binary batch file into ``(images uint8 (N,32,32,3), labels uint8 (N,))``.

    Raises:
        CifarDataError: the file is missing, not a whole number of 3,073-byte records,
            holds the wrong number of records, or has a label above 9.
    """
    path = Path(path)
    if not path.is_file():
        raise CifarDataError(f"CIFAR-10 batch file missing: {path}. {_fix_hint()}")
    size = path.stat().st_size
    if size % RECORD_BYTES:
        raise CifarDataError(
            f"{path} has {size:,} bytes, not a whole number of {RECORD_BYTES:,}-byte records: "
            f"the file is truncated or corrupt. Download the archive again. {_fix_hint()}"
        )
    n = size // RECORD_BYTES
    if expected_records is not None and n != expected_records:
        kind = "truncated" if n < expected_records else "oversized"
        raise CifarDataError(
            f"{path} holds {n:,} records, expected {expected_records:,} ({kind} file). "
            f"Download the archive again. {_fix_hint()}"
        )
    records = np.fromfile(path, dtype=np.uint8).reshape(n, RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.size and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise CifarDataError(
            f"{path}: record {bad} has label {labels[bad]}, but CIFAR-10 labels are 0-9. "
            f"This is not a CIFAR-10 binary batch (CIFAR-100 uses another layout). {_fix_hint()}"
        )
    # Each record stores the red plane, then green, then blue, each 32 rows of 32.
    images = records[:, 1:].reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _check_class_balance(labels: np.ndarray, per_class: int, where: str) -> None:
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    if not np.all(counts == per_class):
        raise CifarDataError(
            f"{where}: images per class are {counts.tolist()}, expected {per_class:,} each. "
            f"The copy is incomplete or mixed with other data. {_fix_hint()}"
        )


def load_from_folder(data_dir: str | Path):
    """Load CIFAR-10 from ``data_dir/cifar-10-batches-bin/`` in the files' order, validating its structure.

    ``load_cifar10`` then puts it in the series' order (``in_series_order``).

    Structure, not checksums, is validated (a user's own download and the course's
    offline copy hold the same images in different orders): every file present,
    10,000 records of 3,073 bytes per file, labels 0-9, 5,000 / 1,000 images per class.
    """
    root = Path(data_dir).expanduser()
    batches = root / BATCHES_DIR
    if not batches.is_dir():
        if root.name == BATCHES_DIR and root.is_dir():
            batches = root  # the user pointed at the batches folder itself
        else:
            raise CifarDataError(f"CIFAR-10 folder not found: {batches}. {_fix_hint()}")
    parts = [read_batch(batches / name) for name in TRAIN_FILES]
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_test, y_test = read_batch(batches / TEST_FILE)
    _check_class_balance(y_train, 5_000, f"{batches} (training batches)")
    _check_class_balance(y_test, 1_000, str(batches / TEST_FILE))
    return (x_train, y_train.reshape(-1, 1)), (x_test, y_test.reshape(-1, 1))


def download_official(cache_dir: str | None = None) -> Path:
    """Fetch and extract the official binary archive; return the folder holding ``cifar-10-batches-bin``.

    ``keras.utils.get_file`` verifies the published MD5, re-downloads a corrupt or
    partial file, and caches the result so later calls touch no network.
    """
    import keras  # imported here so that importing this module never touches Keras or the network

    try:
        archive = keras.utils.get_file(
            fname="cifar-10-binary.tar.gz",
            origin=OFFICIAL_URL,
            file_hash=OFFICIAL_MD5,
            hash_algorithm="md5",
            extract=True,
            cache_dir=cache_dir,
        )
    except Exception as err:  # get_file raises a bare Exception for network failures
        raise CifarDataError(
            f"could not download or verify CIFAR-10 from {OFFICIAL_URL}: {err}. Without internet access, "
            f"set {ENV_VAR} to a folder holding {BATCHES_DIR}/ (a copy of the extracted archive)."
        ) from err
    archive = Path(archive)
    # Keras 3 returns the extraction folder; older versions return the archive path.
    for candidate in (archive, archive.parent, *archive.parent.glob("*")):
        if (candidate / BATCHES_DIR).is_dir():
            return candidate
    raise CifarDataError(f"Downloaded {OFFICIAL_URL} but found no {BATCHES_DIR}/ beside {archive}.")


def resolve_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The local folder to read from (argument, then ``CIFARSEP_DATA``), or None to download."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else None


def load_cifar10(data_dir: str | Path | None = None):
    """Load CIFAR-10 as ``(x_train, y_train), (x_test, y_test)``, like ``keras.datasets.cifar10``.

    Args:
        data_dir: folder holding ``cifar-10-batches-bin/``. Defaults to ``$CIFARSEP_DATA``;
            when neither is set, the official archive is downloaded and cached.
    """
    folder = resolve_data_dir(data_dir)
    if folder is None:
        folder = download_official()
    (x_train, y_train), (x_test, y_test) = load_from_folder(folder)
    return in_series_order(x_train, y_train, "train"), in_series_order(x_test, y_test, "test")


def fingerprints(images) -> np.ndarray:
    """One 64-bit fingerprint (BLAKE2b) of each image's pixels: ``(N,)`` uint64."""
    flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)
    digests = b"".join(hashlib.blake2b(row.tobytes(), digest_size=8).digest() for row in flat)
    return np.frombuffer(digests, dtype="<u8")


def in_series_order(x, y, part: str):
    """``(x, y)`` reordered to the series' order of CIFAR-10's ``part`` ("train" or "test").

    Every image is found by its fingerprint among those in ``ORDER_FILE``. Images that
    are not all there (synthetic test data, a re-encoded copy) keep their own order; when
    only some are found, a warning says that seeded splits then differ from the series'.
    """
    with np.load(ORDER_FILE) as order:
        reference = order[part]
    found = fingerprints(x)
    if np.array_equal(found, reference):
        return x, y
    by_print = np.argsort(found)
    where = np.searchsorted(found[by_print], reference).clip(0, len(found) - 1)
    matched = found[by_print][where] == reference
    if len(found) == len(reference) and matched.all():
        order = by_print[where]
        return x[order], y[order]
    if matched.any():
        warnings.warn(
            f"{matched.sum():,} of CIFAR-10's {len(reference):,} {part} images found in this copy, not all: "
            "kept its own order, so a seeded validation split holds out other images than the "
            "series' runs did (the shipped models may have trained on some of them)",
            stacklevel=2,
        )
    return x, y


def without_autotune(dataset):
    """``dataset`` with tf.data's autotuning thread switched off (TensorFlow only).

    Why: with autotuning on, ``fit`` sometimes sat idle for seconds after the last
    step of a pass over a ``tf.data`` dataset, at random: 6-8 s after 12-15 s of steps
    in short fits on this 2-core CPU; ``predict`` on an array (Keras builds such a
    pipeline for it) once took 10.4 s instead of ~5.5 (``scripts/
    benchmark_input_pipeline.py`` measures both). Deleting an iterator seems to wait
    for the autotuning thread's next wake-up, and in TensorFlow's source that thread
    sleeps for periods that double as it runs, up to a minute. ``fit`` makes a new
    iterator every epoch, so real epochs paid it too. ``AUTOTUNE`` buffer sizes and
    parallelism then take tf.data's fixed defaults, which fed augmented batches as fast
    here (13,000-21,000 images/s, far more than training consumes).
    ``input_pipeline.make_dataset`` and ``evaluation.predict_array`` use it.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def train_val_split(x, y, val_size: int = 5_000, seed: int = 0):
    """Carve a seeded, class-stratified validation split from the training set.

    Returns ``(x_train, y_train), (x_val, y_val)``; with the default 5,000 images the
    split is 45,000 / 5,000 with exactly 500 validation images per class. ``val_size``
    must be a multiple of the number of classes (0 holds nothing out).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(y).reshape(-1)
    classes = np.unique(labels)
    if val_size < 0 or val_size % len(classes):
        # Rounding down would quietly validate on fewer images, or on none at all.
        raise ValueError(
            f"val_size must be a non-negative multiple of the {len(classes)} classes (the split is stratified), "
            f"got {val_size}"
        )
    per_class = val_size // len(classes)
    smallest = min(int(np.sum(labels == c)) for c in classes)
    if per_class > smallest:
        # Slicing would quietly take the whole smallest class, and leave nothing of it to train on.
        raise ValueError(f"val_size {val_size} needs {per_class} images per class; the smallest class has {smallest}")
    val_idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes])
    val_idx = rng.permutation(val_idx)
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return (x[mask], y[mask]), (x[val_idx], y[val_idx])


def subset(x, y, n: int | None, seed: int = 0):
    """A seeded random subset of ``n`` examples (all of them when ``n`` is None)."""
    if n is None or n >= len(x):
        return x, y
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[idx], y[idx]
