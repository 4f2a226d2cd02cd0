"""Backend smoke test: the library trains, evaluates, saves and reloads under whatever
Keras backend is active. CI runs it a second time under JAX in an environment without
TensorFlow (``KERAS_BACKEND=jax``), which proves the library does not need TensorFlow there."""

import os
import sys

import keras
import numpy as np
import pytest

from cifarsep_lib import data, evaluation, input_pipeline, training


@pytest.mark.parametrize("ema_momentum", [None, 0.9])  # weight averaging swaps weights per backend
def test_train_evaluate_save_reload_on_real_data(tmp_path, data_dir, ema_momentum):
    recipe = training.Recipe(epochs=1, batch_size=64, train_subset=512, val_size=500, seed=0, ema_momentum=ema_momentum)
    # A test point at the last epoch evaluates between Keras' final EMA swap and the end of
    # fit; under JAX that once deleted the averaged weights (callbacks.SwapEMAWeights).
    model, hist = training.train(
        recipe, out_dir=tmp_path / "run", data_dir=str(data_dir), verbose=0, test_at_epochs=(1,) if ema_momentum else ()
    )
    assert np.isfinite(hist["loss"][0])
    _, (x_test, y_test) = data.load_cifar10(data_dir)
    report = evaluation.evaluate_model(model, x_test[:500], y_test[:500])
    assert report["conv2d_layers"] == 0 and 0.0 <= report["accuracy"] <= 1.0
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = evaluation.load_model(path)
    np.testing.assert_allclose(
        evaluation.predict(reloaded, x_test[:64]), evaluation.predict(model, x_test[:64]), atol=1e-6
    )


def test_training_without_a_validation_split_keeps_the_last_epoch(tmp_path, data_dir):
    """``val_size=0`` under every backend; with two workers (JAX, PyTorch) the model is
    built on training images, since there is no validation set (``build_before_fit``)."""
    recipe = training.Recipe(epochs=1, batch_size=64, train_subset=256, val_size=0, seed=0, batchnorm_images=64)
    _, hist = training.train(
        recipe, out_dir=tmp_path / "run", data_dir=str(data_dir), tensorboard=False, verbose=0, workers=2
    )
    assert "val_accuracy" not in hist and hist["batchnorm_seconds"][0] > 0
    assert (tmp_path / "run" / "best.keras").is_file()


class _SizeProbe(keras.layers.Layer):
    """Identity layer that counts the training batches it sees at 16x16 and at 32x32."""

    def build(self, input_shape):
        self.counts = self.add_weight(shape=(2,), initializer="zeros", trainable=False, name="counts")

    def call(self, x, training=False):
        if training:
            side = keras.ops.shape(x)[1]
            seen = [keras.ops.cast(side == 16, "float32"), keras.ops.cast(side == 32, "float32")]
            self.counts.assign_add(keras.ops.stack(seen))
        return x


def _size_probe_model():
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(_SizeProbe(name="probe")(keras.layers.Rescaling(1 / 255)(inputs)))
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))


def test_progressive_resizing_trains_the_first_epochs_on_small_images(tmp_path, data_dir, monkeypatch):
    """With ``low_res_epochs=2`` of 3, every training batch of epochs 1-2 is 16x16 and every
    one of epoch 3 is 32x32, counted inside the model, under every backend's input pipeline
    (``tf.data`` under TensorFlow, ``PyDataset`` otherwise): a batch prepared before the
    switch (e.g. prefetched) would show up as a 16x16 batch in epoch 3."""
    from cifarsep_lib import models

    monkeypatch.setitem(models.MODELS, "size_probe", _size_probe_model)
    recipe = training.Recipe(
        model="size_probe", epochs=3, batch_size=64, train_subset=256, val_size=500, seed=0, low_res_epochs=2
    )
    model, _ = training.train(recipe, out_dir=tmp_path / "run", data_dir=str(data_dir), tensorboard=False, verbose=0)
    steps = 256 // 64
    assert keras.ops.convert_to_numpy(model.get_layer("probe").counts).tolist() == [2 * steps, steps]


class _FlipProbe(keras.layers.Layer):
    """Identity layer that counts, per image, the training batches in which it came flipped.

    Image ``i`` carries its number in the red and green values of its top-left pixel and a
    marker (blue 255) in the same pixel; flipped, both sit in the top-right pixel instead."""

    def __init__(self, n_images, **kwargs):
        super().__init__(**kwargs)
        self.n_images = n_images

    def build(self, input_shape):
        self.times_flipped = self.add_weight(shape=(self.n_images,), initializer="zeros", trainable=False)

    def call(self, x, training=False):
        if training:
            flipped = keras.ops.cast(x[:, 0, -1, 2] > x[:, 0, 0, 2], "float32")
            corner = x[:, 0, 0, :2] + x[:, 0, -1, :2]  # the pixel without the marker is black
            number = keras.ops.cast(keras.ops.round(corner[:, 0] + 256.0 * corner[:, 1]), "int32")
            per_image = keras.ops.one_hot(number, self.n_images) * flipped[:, None]
            self.times_flipped.assign_add(keras.ops.sum(per_image, axis=0))
        return x


def test_alternating_flips_show_every_image_once_each_way_in_two_epochs(tmp_path, monkeypatch):
    """With ``alternating_flips`` every training image comes flipped in exactly one of two
    consecutive epochs, counted inside the model under every backend's input pipeline.
    With random flips, all 300 images doing so would be a 1-in-2^300 chance."""
    from cifarsep_lib import models

    n = 300
    x = np.zeros((n, 32, 32, 3), "uint8")
    x[:, 0, 0, 0], x[:, 0, 0, 1], x[:, 0, 0, 2] = np.arange(n) % 256, np.arange(n) // 256, 255
    labels = np.arange(n) % 10
    monkeypatch.setattr(training.cdata, "load_cifar10", lambda data_dir=None: ((x, labels), (x[:10], labels[:10])))

    def probe_model():
        inputs = keras.Input((32, 32, 3))
        probed = _FlipProbe(n, name="probe")(inputs)
        features = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(probed))
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(features))

    monkeypatch.setitem(models.MODELS, "flip_probe", probe_model)
    recipe = training.Recipe(
        model="flip_probe", epochs=2, batch_size=64, val_size=0, translate=0, seed=0, alternating_flips=True
    )
    model, _ = training.train(recipe, out_dir=tmp_path / "run", tensorboard=False, verbose=0)
    times = keras.ops.convert_to_numpy(model.get_layer("probe").times_flipped)
    np.testing.assert_array_equal(times, np.ones(n))


def test_no_tensorflow_needed_outside_tensorflow_backend():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("scripts/test.sh runs this file under JAX and PyTorch")
    import importlib
    import pkgutil

    import cifarsep_lib

    # Import every module of the library: where TensorFlow is not installed (scripts/test.sh)
    # a module that needs it fails here; where it is, it shows up in sys.modules.
    for module in pkgutil.iter_modules(cifarsep_lib.__path__):
        importlib.import_module(f"cifarsep_lib.{module.name}")
    assert "tensorflow" not in sys.modules, "cifarsep_lib imported TensorFlow under " + os.environ.get(
        "KERAS_BACKEND", ""
    )


def test_saliency_gradients_under_active_backend():
    from cifarsep_lib import analysis, models

    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    maps = analysis.saliency_maps(models.sepnet(), images)
    assert maps.shape == (2, 32, 32) and np.all(np.isfinite(maps)) and maps.max() > 0


class _RecordsItsBatches(keras.Model):
    """A model that notes the first feature of every sample it trains on (run eagerly)."""

    seen: list

    def train_step(self, *args):
        data = args[-1]  # (data,) under TensorFlow and PyTorch, (state, data) under JAX
        self.seen.append(keras.ops.convert_to_numpy(data[0])[:, 0].astype(int).tolist())
        return super().train_step(*args)


@pytest.mark.parametrize("workers", [1, 4])
def test_every_epoch_is_one_pass_over_one_shuffle(workers):
    """Every epoch of ``fit`` trains on each image exactly once, in a new order each epoch,
    under every backend. With several workers that needs ``input_pipeline.build_before_fit``:
    without it, Keras 3.15's enqueuer under JAX and PyTorch starts every epoch 11 batches early, so that
    an epoch straddles two shuffles (this test then fails; README, "Epoch boundaries")."""
    n, batch = 80, 4  # 20 batches: more than Keras' queue of 10, so a shift would show
    x = np.arange(n, dtype="float32").reshape(n, 1).repeat(2, 1)
    ds = input_pipeline.AugmentedBatches(x, np.arange(n) % 10, batch, None, shuffle=True, seed=0, workers=workers)
    inputs = keras.Input((2,))
    model = _RecordsItsBatches(inputs, keras.layers.Dense(10, activation="softmax")(inputs))
    model.compile("sgd", "categorical_crossentropy", run_eagerly=True)
    if workers > 1:
        input_pipeline.build_before_fit(model, input_pipeline.AugmentedBatches(x[:8], np.arange(8), 8, None, False, 0))
    model.seen = []
    model.fit(ds, epochs=3, verbose=0, shuffle=False)
    epochs = [sum(model.seen[e * 20 : (e + 1) * 20], []) for e in range(3)]
    assert len(model.seen) == 60
    assert all(sorted(ids) == list(range(n)) for ids in epochs)
    assert epochs[0] != epochs[1] != epochs[2]
