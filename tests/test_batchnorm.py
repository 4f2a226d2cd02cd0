"""Recomputed BatchNorm statistics: what they are set to, what is left alone, and when."""

import keras
import numpy as np
import pytest

from cifarsep_lib import batchnorm, models


def _norm_model(*middle):
    return keras.Sequential([keras.Input((3,)), *middle, keras.layers.BatchNormalization(momentum=0.9)])


def test_statistics_become_the_mean_of_the_batch_statistics():
    rng = np.random.default_rng(0)
    images = (rng.normal(size=(100, 3)) * [1.0, 2.0, 3.0] + [5.0, -1.0, 0.5]).astype("float32")
    model = _norm_model()
    norm = model.layers[-1]
    assert batchnorm.recompute_statistics(model, images, batch_size=25) == 4
    batches = images.reshape(4, 25, 3)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.moving_mean), images.mean(0), rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(norm.moving_variance), batches.var(axis=1).mean(0), rtol=1e-4)
    assert norm.momentum == 0.9  # restored


def test_dropout_is_off_while_statistics_are_taken_and_restored_after():
    images = np.random.default_rng(1).normal(size=(400, 3)).astype("float32")
    dropout = keras.layers.Dropout(0.5)
    model = _norm_model(dropout)
    batchnorm.recompute_statistics(model, images, batch_size=100)
    # Dropout at 0.5 would double the surviving values and roughly double the variance.
    variance = keras.ops.convert_to_numpy(model.layers[-1].moving_variance)
    np.testing.assert_allclose(variance, images.reshape(4, 100, 3).var(axis=1).mean(0), rtol=1e-4)
    assert dropout.rate == 0.5


def test_weights_are_untouched_and_every_layer_of_a_real_network_is_found():
    model = models.build("sepnet_fast")
    trainable = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    norms = batchnorm.batchnorm_layers(model)
    assert len(norms) == sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) > 0
    images = np.random.default_rng(2).uniform(0, 255, size=(64, 32, 32, 3)).astype("float32")
    before = [keras.ops.convert_to_numpy(n.moving_mean).copy() for n in norms]
    batchnorm.recompute_statistics(model, images, batch_size=32)
    for old, new in zip(trainable, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(old, keras.ops.convert_to_numpy(new))
    changed = [
        not np.allclose(b, keras.ops.convert_to_numpy(n.moving_mean)) for b, n in zip(before, norms, strict=True)
    ]
    assert all(changed)


def test_nested_models_are_searched():
    inner = _norm_model()
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.BatchNormalization()])
    assert batchnorm.batchnorm_layers(outer) == [inner.layers[-1], outer.layers[-1]]


def test_the_callback_recomputes_before_validation_so_validation_sees_clean_statistics():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    clean = (rng.normal(size=(50, 3)) + 10.0).astype("float32")  # far from what training sees
    model = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(momentum=0.9), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    seen = {}

    class Spy(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            seen["mean"] = keras.ops.convert_to_numpy(self.model.layers[0].moving_mean).copy()

    precise = batchnorm.PreciseBatchNorm(clean, batch_size=50)
    history = model.fit(x, y, validation_data=(x, y), epochs=1, verbose=0, callbacks=[precise, Spy()])
    np.testing.assert_allclose(seen["mean"], clean.mean(0), rtol=1e-5)
    assert precise.seconds > 0
    assert history.history["batchnorm_seconds"] == [pytest.approx(precise.seconds)]
