"""The input pipeline: augmentation layers, batches under each backend, the callbacks that steer them."""

import threading
import time

import keras
import numpy as np
import pytest

from cifarsep_lib import input_pipeline
from cifarsep_lib.data import TRAIN_MEAN


def test_one_hot_accepts_cifar_shaped_labels_and_gives_float_rows():
    labels = np.array([[3], [0], [9], [3]], dtype="uint8")  # (N, 1), as the loader returns them
    rows = input_pipeline.one_hot(labels)
    assert rows.shape == (4, 10) and rows.dtype == np.float32
    np.testing.assert_array_equal(rows.argmax(axis=1), [3, 0, 9, 3])
    np.testing.assert_array_equal(rows.sum(axis=1), 1.0)
    np.testing.assert_array_equal(input_pipeline.one_hot(labels.reshape(-1)), rows)


def test_chunked_augmentation_keeps_every_label_with_its_image():
    """Augmentation runs on chunks of several batches; labels must follow their images
    through shuffling, chunking and the last, partial batch, epoch after epoch."""
    labels = np.arange(100) % 10
    # Constant images stay constant under flips and reflected shifts: the pixel value names the label.
    x = np.broadcast_to((labels * 20).reshape(-1, 1, 1, 1), (100, 32, 32, 3)).astype("uint8")
    calls = []

    def augmenter(batch, training):
        calls.append(len(batch))
        return training_module_augment(batch, training=training)

    training_module_augment = input_pipeline.augmentation(0.125, seed=1, rotate=10)
    ds = input_pipeline.AugmentedBatches(x, labels, 16, augmenter, shuffle=True, seed=0, chunk_size=48)
    for _ in range(2):
        seen = []
        for i in range(len(ds)):
            images, onehot = ds[i]
            np.testing.assert_allclose(images[:, 0, 0, 0], onehot.argmax(1) * 20, atol=1e-3)
            seen += onehot.argmax(1).tolist()
        assert sorted(seen) == sorted(labels.tolist())
        ds.on_epoch_end()
    assert calls == [48, 48, 4] * 2  # three chunks per epoch of 7 batches (16 x 6 + 4 images)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="tf.data pipelines are TensorFlow's")
def test_tf_data_pipelines_run_without_autotuning():
    """With tf.data's autotuning on, fit sometimes idled for seconds after a pass
    (``data.without_autotune``): the training and validation pipelines switch it off,
    and still yield every image once per pass, with its label."""
    labels = np.arange(20) % 10
    x = np.broadcast_to((labels * 20).reshape(-1, 1, 1, 1), (20, 32, 32, 3)).astype("uint8")
    train = input_pipeline.make_dataset(x, labels, 8, input_pipeline.augmentation(seed=0), shuffle=True)
    for ds in (train, input_pipeline.make_dataset(x, labels, 8)):
        assert ds.options().autotune.enabled is False
        batches = [(images.numpy(), onehot.numpy().argmax(1)) for images, onehot in ds]
        for images, batch_labels in batches:
            np.testing.assert_allclose(images[:, 0, 0, 0], batch_labels * 20, atol=1e-3)
        assert sorted(np.concatenate([b for _, b in batches]).tolist()) == sorted(labels.tolist())


def _layer_names(augmentation):
    return [type(layer).__name__ for layer in augmentation.layers]


def test_augmentation_adds_each_transform_only_when_asked():
    assert _layer_names(input_pipeline.augmentation()) == ["RandomFlip", "RandomTranslation"]
    assert _layer_names(input_pipeline.augmentation(translate=0)) == ["RandomFlip"]
    assert _layer_names(input_pipeline.augmentation(rotate=15)) == ["RandomFlip", "RandomRotation", "RandomTranslation"]
    assert input_pipeline.augmentation(rotate=15).layers[1].factor == (-15 / 360, 15 / 360)
    assert _layer_names(input_pipeline.augmentation(erasing=0.5)) == [
        "RandomFlip",
        "RandomTranslation",
        "RandomErasing",
    ]


def test_augmentation_can_leave_the_flips_to_alternating_flip():
    assert _layer_names(input_pipeline.augmentation(flip=False)) == ["RandomTranslation"]
    assert input_pipeline.augmentation(translate=0, flip=False) is None  # nothing left to do


def test_alternating_flip_flips_each_image_every_other_epoch():
    flips = input_pipeline.AlternatingFlip(1000, seed=0)
    first = flips.flipped(np.arange(1000))
    assert 400 < first.sum() < 600  # a fair coin per image
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype("float32")
    for epoch in (1, 2, 3, 1):  # the last: a run resumed in its second epoch
        flips.on_epoch_begin(epoch)
        np.testing.assert_array_equal(flips.flipped(np.arange(1000)), first != (epoch % 2 == 1))
        out = flips.flip(images, np.arange(6))
        for k, flipped in enumerate(flips.flipped(np.arange(6))):
            np.testing.assert_array_equal(out[k], images[k, :, ::-1] if flipped else images[k])
    if keras.backend.backend() == "tensorflow":  # the tf.data version does the same
        np.testing.assert_array_equal(flips.flip_tf(images, np.arange(6)).numpy(), out)


def test_whole_pixel_shifts_move_pixels_without_blending_them():
    """Bilinear fractional shifts make new pixel values (a blur); whole-pixel shifts only move existing ones."""
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)).astype("float32")
    for whole, blends in ((True, False), (False, True)):
        aug = input_pipeline.augmentation(0.0625, seed=3, whole_pixel_shifts=whole)
        out = keras.ops.convert_to_numpy(aug(images, training=True))
        new_values = [not np.isin(out[i], images[i]).all() for i in range(len(images))]
        assert any(new_values) == blends
        assert not np.array_equal(out, images)  # something moved


def test_erasing_fills_one_rectangle_per_image_with_the_mean_grey():
    """With probability 1 every image gets one rectangle, each side 14-57 % of the image's,
    of the mean CIFAR-10 grey; with 0.5 about half the images keep every pixel."""
    black = np.zeros((200, 32, 32, 3), "float32")  # flips and reflected shifts keep it black
    erased = keras.ops.convert_to_numpy(input_pipeline.augmentation(seed=3, erasing=1.0)(black, training=True))
    mean_grey = 255.0 * np.mean(TRAIN_MEAN)
    for image in erased:
        changed = np.any(image != 0, axis=-1)
        rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
        assert changed.sum() == len(rows) * len(cols)  # a filled rectangle
        assert 0.14 * 32 - 1 <= len(rows) <= 0.58 * 32 + 1 and 0.14 * 32 - 1 <= len(cols) <= 0.58 * 32 + 1
        np.testing.assert_allclose(image[changed], mean_grey, rtol=1e-5)
    half = keras.ops.convert_to_numpy(input_pipeline.augmentation(seed=3, erasing=0.5)(black, training=True))
    assert 60 <= int(np.all(half == 0, axis=(1, 2, 3)).sum()) <= 140


def test_low_resolution_start_switches_by_epoch_and_downscales():
    low_res = input_pipeline.LowResolutionStart(size=16, epochs=2)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    active = []
    for epoch in (0, 1, 2, 1):  # the last: a run resumed in its second epoch
        low_res.on_epoch_begin(epoch)
        active.append(low_res.active)
    assert active == [True, True, False, True]
    small = low_res.downscale(images)
    assert small.shape == (4, 16, 16, 3)
    assert small.mean() == pytest.approx(images.mean(), rel=0.01)  # pixel values keep their 0-255 scale
    low_res.on_epoch_begin(2)
    assert low_res.downscale(images) is images


def test_backend_neutral_batches_keep_order_unless_shuffled():
    x = np.arange(10).reshape(10, 1, 1, 1).repeat(32, 1).repeat(32, 2).repeat(3, 3).astype("uint8")
    y = np.arange(10) % 10
    plain = input_pipeline.AugmentedBatches(x, y, 4, None, shuffle=False, seed=0)
    assert [int(plain[i][0][j, 0, 0, 0]) for i in range(3) for j in range(len(plain[i][0]))] == list(range(10))
    shuffled = input_pipeline.AugmentedBatches(x, y, 10, None, shuffle=True, seed=0)
    assert sorted(shuffled[0][0][:, 0, 0, 0].tolist()) == list(range(10))
    assert shuffled[0][0][:, 0, 0, 0].tolist() != list(range(10))


def test_backend_neutral_batches_in_threads_call_the_augmenter_one_at_a_time():
    """workers > 1 prepares batches in threads; the augmentation layers' seed generator is
    shared, so no two threads may run them at once (they would draw the same transforms)."""
    from concurrent.futures import ThreadPoolExecutor

    active, most, calls = [0], [0], [0]
    guard = threading.Lock()

    def augmenter(batch, training):
        with guard:
            active[0] += 1
            calls[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.02)
        with guard:
            active[0] -= 1
        return batch + 1

    x = np.zeros((64, 32, 32, 3), "uint8")
    # chunk_size 8: every batch is its own chunk, so the augmenter is called 8 times.
    ds = input_pipeline.AugmentedBatches(x, np.arange(64) % 10, 8, augmenter, True, 0, workers=4, chunk_size=8)
    assert ds.workers == 4 and not ds.use_multiprocessing  # threads: the data is shared, not copied
    with ThreadPoolExecutor(4) as pool:
        batches = list(pool.map(ds.__getitem__, range(len(ds))))
    assert most[0] == 1 and calls[0] == 8
    assert all(float(xb.min()) == 1.0 and xb.shape == (8, 32, 32, 3) for xb, _ in batches)


def test_one_hot_passes_soft_targets_through_as_float32():
    """A teacher's probabilities (distillation.soft_targets) are targets already."""
    soft = np.full((3, 10), 0.1, dtype="float64")
    rows = input_pipeline.one_hot(soft)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, soft.astype("float32"))


def _blended_epoch(dataset):
    """All (images, labels) of one pass over a pipeline of either kind, as numpy arrays."""
    if isinstance(dataset, input_pipeline.AugmentedBatches):
        batches = [dataset[i] for i in range(len(dataset))]
        dataset.on_epoch_end()
    else:
        batches = [(images.numpy(), labels.numpy()) for images, labels in dataset]
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


@pytest.mark.parametrize("kind", ["backend-neutral", "tf.data"])
def test_mixup_blends_each_image_and_its_label_by_the_same_weight(kind):
    """Every pixel of an image of class k is 20·k, so a blend's mean names the blend of its labels:
    through shuffling, chunks (80 images: two full and a partial one) and two epochs."""
    if kind == "tf.data" and keras.backend.backend() != "tensorflow":
        pytest.skip("tf.data pipelines are TensorFlow's")
    labels = np.arange(200) % 10
    x = np.broadcast_to((labels * 20).reshape(-1, 1, 1, 1), (200, 32, 32, 3)).astype("uint8")
    mixer = input_pipeline.mixing(1.0, seed=0)
    if kind == "tf.data":
        dataset = input_pipeline.make_dataset(x, labels, 40, shuffle=True, mixer=mixer)
    else:
        dataset = input_pipeline.AugmentedBatches(x, labels, 40, None, True, 0, chunk_size=80, mixer=mixer)
    for _ in range(2):
        images, targets = _blended_epoch(dataset)
        assert images.shape == (200, 32, 32, 3) and targets.shape == (200, 10)
        np.testing.assert_allclose(targets.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(images.mean(axis=(1, 2, 3)), targets @ (20.0 * np.arange(10)), atol=0.05)
        blends = ((targets > 0.01) & (targets < 0.99)).any(axis=1)
        assert blends.mean() > 0.5  # Beta(1, 1) weights: most images are real blends of two


def test_mixing_is_off_at_zero():
    assert input_pipeline.mixing(0.0) is None
    assert isinstance(input_pipeline.mixing(0.2, seed=1), keras.layers.MixUp)
