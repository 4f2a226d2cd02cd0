"""The whitening stem: fixed 2x2 patch whitening as a depthwise separable convolution."""

import keras
import numpy as np
import pytest
from keras import ops

from cifarsep_lib import models, rules, whitening


def _correlated_images(n=64, size=16, seed=0):
    """Smooth random images: neighbouring pixels and the three channels are correlated,
    like photographs, so that whitening has something to undo."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(n, size + 1, size + 1, 1))
    smooth = noise[:, 1:, 1:] + noise[:, :-1, 1:] + noise[:, 1:, :-1] + 0.3 * rng.normal(size=(n, size, size, 1))
    mix = np.array([[1.0, 0.8, 0.6]])
    return (smooth * mix + 0.2 * rng.normal(size=(n, size, size, 3))).astype("float32")


def _adapted(images, filters=24, epsilon=1e-6):
    layer = whitening.PatchWhitening(filters, epsilon=epsilon)
    layer.adapt(images)
    return layer


def test_depthwise_half_lays_out_each_patch_in_patch_vector_order():
    """Before the 1x1 mixing, each output position holds its 2x2 patch, in ``patch_vectors``' order."""
    images = _correlated_images(4)
    layer = _adapted(images)
    depthwise = ops.depthwise_conv(images, layer.depthwise_kernel, strides=2, padding="valid")
    patches = whitening.patch_vectors(images, 2)  # every position; the layer keeps every second one
    expected = patches.reshape(4, 15, 15, 12)[:, ::2, ::2]
    np.testing.assert_allclose(ops.convert_to_numpy(depthwise), expected, atol=1e-5)


def test_adapted_layer_outputs_uncorrelated_unit_variance_channels_and_their_negatives():
    images = _correlated_images(256)
    raw = whitening.patch_vectors(images, 2)
    assert np.abs(np.corrcoef(raw.T) - np.eye(12)).max() > 0.5  # the input is far from white
    out = ops.convert_to_numpy(_adapted(images)(images)).reshape(-1, 24)
    white = out[:, :12]
    np.testing.assert_allclose(np.cov(white.T), np.eye(12), atol=0.06)  # stride-2 positions of the data it saw
    np.testing.assert_allclose(out[:, 12:], -white, atol=1e-5)


def test_fewer_filters_keep_the_components_with_most_variance():
    images = _correlated_images(128)
    full = ops.convert_to_numpy(_adapted(images, 24)(images))
    few = ops.convert_to_numpy(_adapted(images, 8)(images))
    np.testing.assert_allclose(np.abs(few[..., :4]), np.abs(full[..., :4]), atol=1e-4)
    # Which components those are, found without principal_components: each kept filter is
    # v / sqrt(variance + epsilon) with |v| = 1, so 1 / |filter|^2 - epsilon is its variance,
    # and the four kept must be the four largest, largest first.
    patches = whitening.patch_vectors(images.astype("float64"), 2)
    largest = np.linalg.eigvalsh(np.cov(patches.T, bias=True))[::-1][:4]
    kept = ops.convert_to_numpy(_adapted(images, 8).pointwise_kernel)[0, 0, :, :4]
    np.testing.assert_allclose(1 / np.sum(kept.astype("float64") ** 2, axis=0) - 1e-6, largest, rtol=1e-4)


def test_filters_must_be_even_and_fit_the_patch():
    with pytest.raises(ValueError, match="even"):
        whitening.PatchWhitening(7)
    with pytest.raises(ValueError, match="components"):
        whitening.PatchWhitening(26).build((None, 32, 32, 3))


def test_whitening_stem_is_frozen_through_training():
    model = models.build("sepnet_fast_w")
    images = np.random.default_rng(0).uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    assert whitening.adapt_whitening(model, images) == 1
    stem = model.get_layer("stem")
    before = [ops.convert_to_numpy(w).copy() for w in stem.weights]
    assert stem.trainable_weights == []
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    model.fit(images, np.arange(32) % 10, epochs=1, batch_size=16, verbose=0)
    for old, new in zip(before, stem.weights, strict=True):
        np.testing.assert_array_equal(old, ops.convert_to_numpy(new))


def test_models_without_a_whitening_stem_are_left_alone():
    assert whitening.adapt_whitening(models.build("sepnet_fast_s2"), np.zeros((4, 32, 32, 3), "float32")) == 0


def test_whitening_model_passes_the_rules_and_round_trips_through_a_keras_file(tmp_path):
    model = models.build("sepnet_fast_w")
    report = rules.check_rules(model, verbose=False)
    assert report.passed and report.params < models.build("sepnet_fast_s2").count_params()
    images = np.random.default_rng(1).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    whitening.adapt_whitening(model, images)
    model.save(tmp_path / "w.keras")
    loaded = keras.saving.load_model(tmp_path / "w.keras")
    assert isinstance(loaded.get_layer("stem"), whitening.PatchWhitening)
    assert loaded.get_layer("stem").trainable is False
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(images)), ops.convert_to_numpy(model(images)), atol=1e-5)
