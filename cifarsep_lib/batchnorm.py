"""BatchNorm statistics recomputed for the weights a model has now ("precise BatchNorm").

In training, a ``BatchNormalization`` layer normalises each batch by that batch's own mean and
variance, and keeps a moving average of them (momentum 0.9 in sepnet and its deeper variants,
so mostly the last ten or so batches; 0.99 in the sepnet_fast family) to use at inference.
Those averages describe the network as it was over its last steps, on *augmented* images. While
the learning rate is high the weights move fast enough that a few steps make a difference:
early in a run the stored averages cost sepnet up to 16 points of validation accuracy, and even
at the end, with the rate near zero, recomputing them on clean training images gained the
shipped SepNets 0.3-1.0 points (``benchmarks/cpu_batchnorm_statistics_2026-11-28.txt``).

``recompute_statistics`` runs clean training images through the model in training mode
and sets each BatchNorm layer's averages to the mean of the batch statistics it saw; no
weight changes. ``PreciseBatchNorm`` does it before every validation pass of ``fit``, so
validation, checkpoints and test points all see the recomputed statistics. Training
itself is unaffected: it normalises by batch statistics, never by the averages.
"""

from __future__ import annotations

import time

import keras
import numpy as np


def _layers_of(model: keras.Model, kind: type) -> list:
    found = []
    for layer in model.layers:
        if isinstance(layer, kind):
            found.append(layer)
        elif hasattr(layer, "layers"):
            found.extend(_layers_of(layer, kind))
    return found


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every ``BatchNormalization`` layer of ``model``, nested models included."""
    return _layers_of(model, keras.layers.BatchNormalization)


def clean_sample(train_images, n: int, seed: int = 0):
    """The first ``n`` of ``train_images`` in a seeded shuffled order, un-augmented: the
    images ``train()`` recomputes the statistics on (``Recipe.batchnorm_images``)."""
    return train_images[np.random.default_rng(seed).permutation(len(train_images))[:n]]


def recompute_statistics(model: keras.Model, images, batch_size: int = 500) -> int:
    """Set every BatchNorm layer's moving mean and variance from ``images``; return the batches run.

    Each layer ends with the plain mean, over the batches, of the batch means and batch
    variances it computed: batch ``k`` is blended in with momentum ``(k - 1) / k``. Dropout
    is switched off during the pass, so the statistics are those of the network as it runs
    at inference. ``images`` should be un-augmented training images (never test images).
    Momenta and dropout rates are restored afterwards, even if the pass fails.
    """
    norms, dropouts = batchnorm_layers(model), _layers_of(model, keras.layers.Dropout)
    if not norms or len(images) == 0:
        return 0
    momenta, rates = [n.momentum for n in norms], [d.rate for d in dropouts]
    batches = 0
    try:
        for d in dropouts:
            d.rate = 0.0
        for start in range(0, len(images), batch_size):
            batches += 1
            for n in norms:
                n.momentum = (batches - 1) / batches  # the first batch replaces the old averages
            model(images[start : start + batch_size], training=True)
    finally:
        for n, momentum in zip(norms, momenta, strict=True):
            n.momentum = momentum
        for d, rate in zip(dropouts, rates, strict=True):
            d.rate = rate
    return batches


class PreciseBatchNorm(keras.callbacks.Callback):
    """Recomputes the BatchNorm statistics on ``images`` before each validation pass of ``fit``,
    or at the end of each epoch when ``fit`` has no validation data.

    Put it after ``callbacks.Throughput`` (so its seconds do not count as training) and after a
    ``callbacks.SwapEMAWeights`` (so it sees the weights that are validated). Its seconds per epoch
    go into the logs as ``batchnorm_seconds``.
    """

    def __init__(self, images, batch_size: int = 500):
        super().__init__()
        self.images, self.batch_size = np.asarray(images), batch_size
        self.seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.seconds = None

    def _recompute(self):
        start = time.perf_counter()
        recompute_statistics(self.model, self.images, self.batch_size)
        self.seconds = time.perf_counter() - start

    def on_test_begin(self, logs=None):
        self._recompute()

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds is None:  # no validation pass this epoch: the checkpoint still needs them
            self._recompute()
        if logs is not None:
            logs["batchnorm_seconds"] = self.seconds
