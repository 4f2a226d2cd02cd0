import json
import subprocess
import sys

import numpy as np
import pytest

from cifarsep_lib import evaluation, models


def test_prepare_accepts_single_uint8_image():
    x = evaluation.prepare_images(np.full((32, 32, 3), 255, np.uint8))
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32 and x.max() == 255


def test_prepare_rescales_unit_floats():
    x = evaluation.prepare_images(np.full((2, 32, 32, 3), 0.5, np.float32))
    assert np.allclose(x, 127.5)


@pytest.mark.parametrize(
    "dtype, value, expected", [(np.uint8, 1, 1.0), (np.float32, 200.0, 200.0), (np.float64, 1.0, 255.0)]
)
def test_prepare_rescales_only_unit_floats(dtype, value, expected):
    """A dark uint8 image (max 1) and a 0-255 float image keep their values; floats in 0-1 are scaled."""
    assert evaluation.prepare_images(np.full((32, 32, 3), value, dtype)).max() == expected


def test_prepare_resizes_other_sizes_with_warning():
    with pytest.warns(UserWarning, match="resizing"):
        x = evaluation.prepare_images(np.zeros((1, 64, 48, 3), np.uint8))
    assert x.shape == (1, 32, 32, 3)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 32, 32, 4)), "3 colour channels"),
        (np.zeros((2, 32, 32)), "3 colour channels"),
        (np.zeros((0, 32, 32, 3)), "empty"),
        (np.full((1, 32, 32, 3), np.nan), "NaN"),
        (np.zeros((32, 3)), "expected one image"),
        (np.array([["a"]]), "numeric"),
    ],
)
def test_prepare_rejects_bad_input_clearly(images, message):
    with pytest.raises(ValueError, match=message):
        evaluation.prepare_images(images)


def test_predict_returns_probabilities_and_tta_averages():
    model = models.sepnet()
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    p = evaluation.predict(model, x)
    assert p.shape == (3, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    flipped = evaluation.predict(model, x[:, :, ::-1])
    np.testing.assert_allclose(evaluation.predict(model, x, tta=True), (p + flipped) / 2, atol=1e-5)


def test_predict_array_matches_keras_predict_in_every_batching(monkeypatch):
    """The same probabilities as ``model.predict`` on the array, with a last partial batch;
    under TensorFlow fed by a ``tf.data`` pipeline whose autotuning is off."""
    import keras

    model = models.sepnet_fast()
    x = np.random.default_rng(0).integers(0, 256, (7, 32, 32, 3)).astype("float32")
    expected = model.predict(x, batch_size=7, verbose=0)
    np.testing.assert_allclose(evaluation.predict_array(model, x, batch_size=3), expected, atol=1e-5)
    if keras.backend.backend() == "tensorflow":
        given = []
        predict = model.predict
        monkeypatch.setattr(model, "predict", lambda data, **kw: given.append(data) or predict(data, **kw))
        evaluation.predict_array(model, x, batch_size=3)
        assert given[0].options().autotune.enabled is False


def test_saved_model_reloads_in_fresh_process_with_identical_predictions(tmp_path):
    model = models.sepnet()
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "p.npy", model.predict(x, verbose=0))
    code = (
        "import numpy as np, cifarsep_lib.evaluation as ev;"
        f"m = ev.load_model(r'{path}'); x = np.load(r'{tmp_path / 'x.npy'}');"
        f"print(float(np.abs(m.predict(x, verbose=0) - np.load(r'{tmp_path / 'p.npy'}')).max()))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out.strip().splitlines()[-1]) == 0.0


def test_evaluate_cli_prints_json_last_line(tmp_path, fake_cifar):
    path = tmp_path / "m.keras"
    models.sepnet().save(path)
    proc = subprocess.run(
        [sys.executable, "-m", "cifarsep_lib", "evaluate", str(path), "--tta", "--data-dir", str(fake_cifar)],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["params"] < 100_000 and report["conv2d_layers"] == 0
    assert 0.0 <= report["accuracy"] <= 1.0 and "accuracy_tta" in report
    assert report["test_images"] == 10_000 and report["file"] == str(path)  # that file, on the whole test set


def test_missing_model_file():
    with pytest.raises(FileNotFoundError, match="nowhere.keras"):
        evaluation.load_model("nowhere.keras")
