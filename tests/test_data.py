import shutil
import warnings

import numpy as np
import pytest
from conftest import make_fake_cifar, write_batch

from cifarsep_lib import data


def test_record_layout_is_parsed_plane_by_plane(tmp_path):
    images = write_batch(tmp_path / "b.bin", [3, 7], seed=1)
    x, y = data.read_batch(tmp_path / "b.bin", expected_records=2)
    assert x.shape == (2, 32, 32, 3) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, [3, 7])
    # The first pixel byte of a record is the red value of the top-left pixel.
    raw = np.fromfile(tmp_path / "b.bin", np.uint8).reshape(2, -1)
    assert x[1, 0, 0, 0] == raw[1, 1] and x[1, 0, 0, 1] == raw[1, 1 + 1024]


def test_loader_matches_keras_shapes_and_dtypes(fake_cifar):
    (x_train, y_train), (x_test, y_test) = data.load_cifar10(fake_cifar)
    assert x_train.shape == (50_000, 32, 32, 3) and x_test.shape == (10_000, 32, 32, 3)
    assert y_train.shape == (50_000, 1) and y_test.shape == (10_000, 1)
    assert x_train.dtype == np.uint8 and y_train.max() == 9


def test_environment_variable_selects_folder(fake_cifar, monkeypatch):
    monkeypatch.setenv("CIFARSEP_DATA", str(fake_cifar))
    (x, _), _ = data.load_cifar10()
    assert len(x) == 50_000


def test_missing_folder_says_how_to_fix(tmp_path):
    with pytest.raises(data.CifarDataError, match="CIFARSEP_DATA") as err:
        data.load_cifar10(tmp_path / "nowhere")
    assert "cifar-10-batches-bin" in str(err.value)


def _broken_copy(src, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    return dst, dst / "cifar-10-batches-bin"


def test_missing_batch_file_is_named(fake_cifar, tmp_path):
    root, batches = _broken_copy(fake_cifar, tmp_path)
    (batches / "data_batch_3.bin").unlink()
    with pytest.raises(data.CifarDataError, match="data_batch_3.bin"):
        data.load_cifar10(root)


def test_truncated_file_is_named(fake_cifar, tmp_path):
    root, batches = _broken_copy(fake_cifar, tmp_path)
    path = batches / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.CifarDataError, match=r"data_batch_2.bin.*truncated or corrupt"):
        data.load_cifar10(root)


@pytest.mark.parametrize("records, word", [(9_999, "truncated"), (10_001, "oversized")])
def test_wrong_record_count(tmp_path, records, word):
    write_batch(tmp_path / "b.bin", np.zeros(records, dtype=np.uint8))
    with pytest.raises(data.CifarDataError, match=word):
        data.read_batch(tmp_path / "b.bin")


def test_label_above_nine(tmp_path):
    write_batch(tmp_path / "b.bin", [1, 2, 10])
    with pytest.raises(data.CifarDataError, match=r"record 2 has label 10"):
        data.read_batch(tmp_path / "b.bin", expected_records=3)


def test_unbalanced_classes_are_reported(tmp_path):
    root = make_fake_cifar(tmp_path)
    write_batch(root / "cifar-10-batches-bin" / "test_batch.bin", np.zeros(10_000, dtype=np.uint8))
    with pytest.raises(data.CifarDataError, match="images per class"):
        data.load_cifar10(root)


def test_split_is_seeded_stratified_and_disjoint():
    x = np.arange(1000).reshape(-1, 1)
    y = np.repeat(np.arange(10), 100).reshape(-1, 1)
    (xt, yt), (xv, yv) = data.train_val_split(x, y, val_size=100, seed=3)
    assert len(xt) == 900 and len(xv) == 100
    assert np.all(np.bincount(yv.ravel()) == 10)
    assert not set(xt.ravel()) & set(xv.ravel())
    (_, _), (xv2, _) = data.train_val_split(x, y, val_size=100, seed=3)
    np.testing.assert_array_equal(xv, xv2)
    (_, _), (xv4, _) = data.train_val_split(x, y, val_size=100, seed=4)
    assert set(xv4.ravel()) != set(xv.ravel())


@pytest.mark.parametrize("val_size", [5, 105, -10])
def test_split_refuses_a_size_it_cannot_stratify(val_size):
    """Rounding down would validate on 100 images for 105, and on none at all for 5."""
    x = np.arange(1000).reshape(-1, 1)
    y = np.repeat(np.arange(10), 100).reshape(-1, 1)
    with pytest.raises(ValueError, match="multiple of the 10 classes"):
        data.train_val_split(x, y, val_size=val_size)


def test_split_refuses_more_than_a_class_holds():
    """Slicing would take all 100 images of each class for 2,000, and leave none to train on."""
    x = np.arange(1000).reshape(-1, 1)
    y = np.repeat(np.arange(10), 100).reshape(-1, 1)
    with pytest.raises(ValueError, match="smallest class has 100"):
        data.train_val_split(x, y, val_size=2_000)


def test_real_copy_loads_with_published_statistics(data_dir):
    (x_train, y_train), (x_test, _) = data.load_cifar10(data_dir)
    assert x_train.shape == (50_000, 32, 32, 3) and x_test.shape == (10_000, 32, 32, 3)
    pixels = x_train.reshape(-1, 3).astype("float64") / 255
    np.testing.assert_allclose(pixels.mean(axis=0), data.TRAIN_MEAN, atol=1e-6)
    np.testing.assert_allclose(pixels.std(axis=0), data.TRAIN_STD, atol=1e-6)


def test_download_uses_official_archive_and_hash(monkeypatch, tmp_path):
    import keras

    calls = {}

    def fake_get_file(**kwargs):
        calls.update(kwargs)
        make_fake_cifar(tmp_path / "extracted")
        return str(tmp_path / "extracted")

    monkeypatch.delenv("CIFARSEP_DATA", raising=False)
    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    (x, _), _ = data.load_cifar10()
    assert len(x) == 50_000
    assert calls["origin"] == data.OFFICIAL_URL and calls["file_hash"] == data.OFFICIAL_MD5


def test_import_does_not_import_keras_or_tensorflow():
    import subprocess
    import sys

    code = "import sys, cifarsep_lib.data; print('keras' in sys.modules, 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_failed_download_explains_offline_option(monkeypatch):
    import keras

    def offline(**kwargs):
        raise Exception("URL fetch failure: Name or service not known")

    monkeypatch.delenv("CIFARSEP_DATA", raising=False)
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(data.CifarDataError, match="could not download.*set CIFARSEP_DATA"):
        data.load_cifar10()


def test_offline_copy_is_in_series_order(data_dir):
    """The committed fingerprints are the offline copy's, image for image: its order is the series'."""
    (x_train, _), (x_test, _) = data.load_from_folder(data_dir)
    with np.load(data.ORDER_FILE) as order:
        np.testing.assert_array_equal(data.fingerprints(x_train), order["train"])
        np.testing.assert_array_equal(data.fingerprints(x_test), order["test"])


def test_a_copy_in_another_order_loads_in_series_order(data_dir, monkeypatch):
    """The official archive holds the same images in another order; a seed must split them alike."""
    (x_train, y_train), (x_test, y_test) = data.load_from_folder(data_dir)
    shuffle_train = np.random.default_rng(0).permutation(len(x_train))
    shuffle_test = np.random.default_rng(1).permutation(len(x_test))
    shuffled = (x_train[shuffle_train], y_train[shuffle_train]), (x_test[shuffle_test], y_test[shuffle_test])
    monkeypatch.setattr(data, "load_from_folder", lambda folder: shuffled)
    (x2, y2), (xt2, yt2) = data.load_cifar10(data_dir)
    np.testing.assert_array_equal(x2, x_train)
    np.testing.assert_array_equal(y2, y_train)
    np.testing.assert_array_equal(xt2, x_test)
    np.testing.assert_array_equal(yt2, y_test)


def test_a_copy_with_other_pixels_keeps_its_order_and_says_so(data_dir):
    (x, y), _ = data.load_from_folder(data_dir)
    x, y = x[::-1].copy(), y[::-1].copy()
    x[0, 0, 0, 0] ^= 1  # one pixel off in one image: the copy is no longer the official one
    with pytest.warns(UserWarning, match="49,999 of CIFAR-10's 50,000 train images"):
        x2, y2 = data.in_series_order(x, y, "train")
    assert x2 is x and y2 is y


def test_other_images_keep_their_order_silently(fake_cifar):
    (x, y), _ = data.load_from_folder(fake_cifar)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x2, y2 = data.in_series_order(x, y, "train")
    assert x2 is x and y2 is y
