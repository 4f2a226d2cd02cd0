"""A whitening first layer (airbench's), written as a depthwise separable convolution.

airbench's first layer is a 2x2 convolution whose filters are not learned: they are the
principal components of the training images' 2x2 patches, each divided by its standard
deviation, and the same filters negated, so that a ReLU after them loses nothing. The
layer decorrelates neighbouring pixels and colours before anything is learned, which is
worth most in short runs.

A full 2x2 convolution is a ``Conv2D``, which the assignment forbids. But a depthwise
2x2 convolution with 4 filters per channel, each a one-hot 2x2 kernel, outputs every
channel's 2x2 patch as it is (3 channels x 4 pixels = 12 values per position); a 1x1
convolution of those 12 values can then compute any 2x2 filter. So ``PatchWhitening``
is a ``SeparableConv2D`` (depthwise k x k, then 1x1) that steps ``k`` pixels, with its
depthwise half fixed to the one-hot kernels and its pointwise half set by ``adapt`` from
training images, like Keras' ``Normalization.adapt``. It is frozen (``trainable=False``):
nothing in it is trained, and because it is the first layer with weights, TensorFlow
computes no gradient through it either.
"""

from __future__ import annotations

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="cifarsep")
class PatchWhitening(keras.layers.SeparableConv2D):
    """Non-overlapping ``patch_size`` x ``patch_size`` patches, whitened (see the module).

    Args:
        filters: output channels, even: ``filters // 2`` principal components of the
            patches and their negatives, the components with the most variance first.
            At most twice the values in a patch (24 for 2x2 patches of RGB images).
        patch_size: k, the side of a patch and the step between patches.
        epsilon: added to each component's variance before dividing by its square root,
            so that components with almost no variance are not blown up into noise.

    The weights are placeholders until ``adapt`` (or loading a saved model) sets them.
    """

    def __init__(self, filters: int = 24, patch_size: int = 2, epsilon: float = 5e-4, **kwargs):
        for fixed in ("kernel_size", "strides", "padding", "depth_multiplier", "use_bias", "trainable"):
            kwargs.pop(fixed, None)  # set by the layer itself (a saved config repeats them)
        if filters % 2:
            raise ValueError(f"filters must be even (components and their negatives), got {filters}")
        super().__init__(
            filters,
            patch_size,
            strides=patch_size,
            padding="valid",
            depth_multiplier=patch_size * patch_size,
            use_bias=False,
            trainable=False,
            **kwargs,
        )
        self.patch_size = int(patch_size)
        self.epsilon = float(epsilon)

    def build(self, input_shape):
        super().build(input_shape)
        k, channels = self.patch_size, input_shape[-1]
        if self.filters > 2 * channels * k * k:
            raise ValueError(
                f"{self.filters} filters: a {k}x{k} patch of {channels} channels has only "
                f"{channels * k * k} components, {2 * channels * k * k} filters with their negatives"
            )
        # Depthwise filter m of every channel picks pixel (m // k, m % k) of the patch, so that
        # output channel c * k * k + m is that pixel of channel c (Keras' depthwise ordering).
        one_hot = np.eye(k * k, dtype="float32").reshape(k, k, 1, k * k)
        self.depthwise_kernel.assign(np.repeat(one_hot, channels, axis=2))

    def adapt(self, images) -> None:
        """Set the 1x1 filters from ``images`` (N, H, W, C), as this layer sees them.

        The statistics are those of every ``k`` x ``k`` patch (overlapping, all positions),
        centred: the principal components, each scaled to unit variance.
        """
        images = np.asarray(keras.ops.convert_to_numpy(images), dtype="float64")
        if not self.built:
            self.build(images.shape)
        patches = patch_vectors(images, self.patch_size)
        components, variances = principal_components(patches)
        n = self.filters // 2
        whiten = components[:, :n] / np.sqrt(variances[:n] + self.epsilon)
        pointwise = np.concatenate([whiten, -whiten], axis=1)
        self.pointwise_kernel.assign(pointwise[None, None].astype("float32"))

    def get_config(self):
        config = super().get_config()
        config.update(patch_size=self.patch_size, epsilon=self.epsilon)
        return config


def patch_vectors(images: np.ndarray, k: int) -> np.ndarray:
    """Every k x k patch of ``images`` (N, H, W, C) as a row of ``C * k * k`` values.

    The values are ordered channel first, then pixel (row-major inside the patch): the
    order in which ``PatchWhitening``'s depthwise half lays them out.
    """
    windows = np.lib.stride_tricks.sliding_window_view(images, (k, k), axis=(1, 2))  # N, H', W', C, k, k
    return windows.reshape(-1, images.shape[-1] * k * k)


def principal_components(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors (columns) and eigenvalues of the covariance of ``vectors``, largest first,
    each eigenvector signed so that its largest entry is positive."""
    centred = vectors - vectors.mean(axis=0)
    variances, components = np.linalg.eigh(centred.T @ centred / len(centred))
    order = np.argsort(variances)[::-1]
    components = components[:, order]
    # An eigenvector's sign is arbitrary: make each one's largest entry positive, so the
    # same images always give the same filters.
    signs = np.sign(components[np.abs(components).argmax(axis=0), np.arange(components.shape[1])])
    return components * signs, variances[order]


def adapt_whitening(model, images) -> int:
    """``adapt`` every ``PatchWhitening`` layer of ``model`` on ``images`` (raw model inputs).

    Each layer is adapted on what reaches it (e.g. after the model's normalisation).
    Returns how many layers were adapted (0 for models without one).
    """
    layers = [layer for layer in model.layers if isinstance(layer, PatchWhitening)]
    for layer in layers:
        reaching = keras.Model(model.inputs, layer.input)
        layer.adapt(reaching.predict(images, batch_size=500, verbose=0))
    return len(layers)
