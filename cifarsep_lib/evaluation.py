"""Predictions and test-set evaluation of saved models.

``predict`` accepts what a learner has at hand (one image or a batch, uint8 or float,
any size) and checks it before it reaches the model, so a mistake gets a clear message
rather than an error from deep inside the backend.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import keras
import numpy as np

from . import data as cdata
from . import layers as _layers  # noqa: F401  (registers custom layers for loading)
from . import rules


def prepare_images(images) -> np.ndarray:
    """Validate and convert images to a float32 batch ``(N, 32, 32, 3)`` of 0-255 values.

    Accepts a single image ``(H, W, 3)`` or a batch ``(N, H, W, 3)``, uint8 (0-255) or
    float (0-255, or 0-1 which is rescaled). Other sizes are resized to 32x32 with a warning.

    Raises:
        ValueError: wrong number of dimensions or channels, an empty batch, NaN or inf values.
    """
    arr = np.asarray(images)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"images must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected one image (H, W, 3) or a batch (N, H, W, 3); got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError("the batch of images is empty")
    if arr.shape[-1] != 3:
        raise ValueError(
            f"expected 3 colour channels (RGB) last, got shape {arr.shape}; "
            "convert grayscale or RGBA images to RGB first"
        )
    arr = arr.astype("float32")
    if not np.all(np.isfinite(arr)):
        raise ValueError("images contain NaN or infinite values")
    if arr.max() <= 1.0 and not np.issubdtype(np.asarray(images).dtype, np.integer):
        arr = arr * 255.0  # floats in 0-1: the usual convention for decoded photos
    if arr.shape[1:3] != (32, 32):
        warnings.warn(f"resizing images from {arr.shape[1:3]} to (32, 32)", stacklevel=2)
        arr = keras.ops.convert_to_numpy(keras.ops.image.resize(arr, (32, 32), antialias=True))
    return arr


def predict_array(model, x, batch_size: int = 500) -> np.ndarray:
    """``model.predict`` on an array of prepared images, in batches of ``batch_size``.

    Under TensorFlow the array goes through a ``tf.data`` pipeline without autotuning
    (``data.without_autotune``): given the array itself, ``predict`` builds one with
    autotuning on, which at random idles for seconds after the last batch.
    """
    if keras.backend.backend() != "tensorflow":
        return model.predict(x, batch_size=batch_size, verbose=0)
    import tensorflow as tf

    batches = cdata.without_autotune(tf.data.Dataset.from_tensor_slices(x).batch(batch_size))
    return model.predict(batches, verbose=0)


def predict(model, images, tta: bool = False, batch_size: int = 500) -> np.ndarray:
    """Class probabilities ``(N, 10)`` for ``images`` (see ``prepare_images``).

    With ``tta=True`` the prediction is the mean over the image and its mirror image.
    """
    x = prepare_images(images)
    probs = predict_array(model, x, batch_size)
    if tta:
        probs = (probs + predict_array(model, x[:, :, ::-1], batch_size)) / 2
    return probs


def accuracy(probs, labels) -> float:
    """Fraction of rows of ``probs`` whose arg-max equals ``labels``."""
    return float(np.mean(np.argmax(probs, axis=1) == np.asarray(labels).reshape(-1)))


def load_model(path) -> keras.Model:
    """Load a ``.keras`` model of the series (custom layers are registered on import)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return keras.saving.load_model(path, compile=False)


def evaluate_model(model, x_test, y_test, tta: bool = False, batch_size: int = 500) -> dict:
    """Test accuracy (and flip-TTA accuracy when asked), parameters and Conv2D count."""
    x = prepare_images(x_test)  # once, for both the plain and the mirrored pass
    probs = predict_array(model, x, batch_size)
    report = rules.rules_report(model)
    result = {
        "model": model.name,
        "accuracy": accuracy(probs, y_test),
        "params": report.params,
        "conv2d_layers": len(report.conv2d),
        "test_images": int(len(x_test)),
    }
    if tta:
        flipped = predict_array(model, x[:, :, ::-1], batch_size)
        result["accuracy_tta"] = accuracy((probs + flipped) / 2, y_test)
    return result


def evaluate_file(path, tta: bool = False, data_dir=None, batch_size: int = 500) -> dict:
    """Load the model at ``path`` and evaluate it on the CIFAR-10 test set."""
    model = load_model(path)
    _, (x_test, y_test) = cdata.load_cifar10(data_dir)
    result = evaluate_model(model, x_test, y_test, tta=tta, batch_size=batch_size)
    result["file"] = str(path)
    return result
