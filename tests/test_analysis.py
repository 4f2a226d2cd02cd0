"""Tests of cifarsep_lib.analysis: hand-computed confusions, scores, calibration and saliency."""

import keras
import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from cifarsep_lib import analysis

matplotlib.use("Agg")

NAMES3 = ("a", "b", "c")

# Hand example: true labels and predictions of 7 images, 3 classes.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 2, 0, 1])
CM = np.array(
    [
        [1, 1, 0],  # class 0: one right, one called 1
        [0, 2, 0],  # class 1: both right
        [1, 1, 1],  # class 2: one right, one called 0, one called 1
    ]
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_confusion_matrix_hand_example():
    cm = analysis.confusion_matrix(Y_TRUE, Y_PRED, num_classes=3)
    np.testing.assert_array_equal(cm, CM)
    assert cm.sum() == len(Y_TRUE)


def test_confusion_matrix_accepts_column_labels_and_checks_ranges():
    cm = analysis.confusion_matrix(Y_TRUE.reshape(-1, 1), Y_PRED, num_classes=3)
    np.testing.assert_array_equal(cm, CM)
    with pytest.raises(ValueError, match="0..2"):
        analysis.confusion_matrix([0, 3], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="length"):
        analysis.confusion_matrix([0, 1], [0], num_classes=3)


def test_precision_recall_f1_hand_example():
    precision, recall, f1, support = analysis.precision_recall_f1(CM)
    # precision: diagonal / column sums (2, 4, 1); recall: diagonal / row sums (2, 2, 3)
    np.testing.assert_allclose(precision, [1 / 2, 2 / 4, 1 / 1])
    np.testing.assert_allclose(recall, [1 / 2, 2 / 2, 1 / 3])
    np.testing.assert_allclose(f1, [0.5, 2 * 0.5 * 1 / 1.5, 2 * 1 * (1 / 3) / (4 / 3)])
    np.testing.assert_array_equal(support, [2, 2, 3])


def test_precision_of_a_class_never_predicted_is_zero():
    cm = np.array([[2, 0], [1, 0]])  # class 1 is never predicted
    precision, recall, f1, _ = analysis.precision_recall_f1(cm)
    np.testing.assert_allclose(precision, [2 / 3, 0.0])
    np.testing.assert_allclose(recall, [1.0, 0.0])
    assert f1[1] == 0.0


def test_per_class_table():
    table = analysis.per_class_table(CM, NAMES3)
    assert list(table.index) == list(NAMES3)
    assert list(table.columns) == ["precision", "recall", "f1", "support"]
    assert table.loc["b", "recall"] == pytest.approx(1.0)
    assert table.loc["c", "support"] == 3


def test_most_confused_pairs_ordering():
    cm = np.array(
        [
            [5, 3, 0],
            [7, 5, 1],
            [2, 0, 9],
        ]
    )
    pairs = analysis.most_confused_pairs(cm, k=10, class_names=NAMES3)
    assert pairs == [("b", "a", 7), ("a", "b", 3), ("c", "a", 2), ("b", "c", 1)]  # zero cells left out
    assert analysis.most_confused_pairs(cm, k=2, class_names=NAMES3) == pairs[:2]
    sym = analysis.most_confused_pairs(cm, k=10, class_names=NAMES3, symmetric=True)
    assert sym == [("a", "b", 10), ("a", "c", 2), ("b", "c", 1)]


def test_most_confused_pairs_ties_follow_class_order():
    pairs = analysis.most_confused_pairs(CM, class_names=NAMES3)
    assert pairs == [("a", "b", 1), ("c", "a", 1), ("c", "b", 1)]


def test_confident_mistakes_sorted_by_confidence():
    probs = np.array(
        [
            [0.6, 0.4],  # 0: true 1, wrong at 0.6
            [0.1, 0.9],  # 1: true 1, right
            [0.95, 0.05],  # 2: true 1, wrong at 0.95
            [0.2, 0.8],  # 3: true 0, wrong at 0.8
            [0.7, 0.3],  # 4: true 0, right
        ]
    )
    labels = np.array([1, 1, 1, 0, 0])
    np.testing.assert_array_equal(analysis.confident_mistakes(probs, labels), [2, 3, 0])
    assert analysis.confident_mistakes(probs[[1, 4]], labels[[1, 4]]).size == 0
    # Equally confident mistakes keep their order (a stable sort), so the notebook's gallery is reproducible.
    np.testing.assert_array_equal(analysis.confident_mistakes(np.array([[0.9, 0.1]] * 3), [1, 1, 1]), [0, 1, 2])


def _two_class_probs(confidences, predicted):
    """Rows with probability ``conf`` on the predicted class (0 or 1) of a 2-class problem."""
    probs = np.zeros((len(confidences), 2))
    for i, (conf, p) in enumerate(zip(confidences, predicted, strict=True)):
        probs[i, p] = conf
        probs[i, 1 - p] = 1 - conf
    return probs


def test_ece_is_zero_when_perfectly_calibrated():
    # 5 predictions at 0.8 with 4 right, 5 at 0.6 with 3 right: accuracy equals confidence in each bin.
    probs = _two_class_probs([0.8] * 5 + [0.6] * 5, [0] * 10)
    labels = np.array([0, 0, 0, 0, 1] + [0, 0, 0, 1, 1])
    assert analysis.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_hand_computed():
    # Bin (0.8, 0.9]: 2 predictions at 0.85, 1 right -> |0.5 - 0.85| = 0.35, weight 2/5.
    # Bin (0.6, 0.7]: 3 predictions at 0.65, 2 right -> |2/3 - 0.65| = 1/60, weight 3/5.
    probs = _two_class_probs([0.85, 0.85, 0.65, 0.65, 0.65], [0, 1, 1, 0, 1])
    labels = np.array([0, 0, 1, 0, 0])
    expected = 2 / 5 * 0.35 + 3 / 5 * (2 / 3 - 0.65)
    assert expected == pytest.approx(0.15)
    assert analysis.expected_calibration_error(probs, labels) == pytest.approx(expected)

    bins = analysis.reliability_bins(probs, labels, n_bins=10)
    np.testing.assert_array_equal(bins.counts, [0, 0, 0, 0, 0, 0, 3, 0, 2, 0])
    assert bins.accuracy[8] == pytest.approx(0.5)
    assert bins.confidence[6] == pytest.approx(0.65)
    assert np.isnan(bins.accuracy[0])  # empty bins have no accuracy
    assert bins.ece == pytest.approx(expected)


def test_reliability_bins_are_closed_on_the_right():
    probs = _two_class_probs([0.5, 1.0], [0, 0])
    bins = analysis.reliability_bins(probs, np.array([0, 0]), n_bins=2)
    np.testing.assert_array_equal(bins.counts, [1, 1])  # 0.5 belongs to (0, 0.5], 1.0 to (0.5, 1]


def _linear_softmax_model(weights):
    inputs = keras.Input(shape=(32, 32, 3))
    x = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(weights.shape[1], activation="softmax")
    outputs = dense(x)
    dense.set_weights([weights, np.zeros(weights.shape[1], "float32")])
    return keras.Model(inputs, outputs)


def test_saliency_matches_the_analytic_gradient_of_a_linear_softmax_model():
    rng = np.random.default_rng(0)
    w = (rng.normal(size=(32 * 32 * 3, 3)) * 1e-3).astype("float32")
    model = _linear_softmax_model(w)
    image = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)

    # log softmax(xW)_c has gradient W[:, c] - W p with respect to x.
    z = image.reshape(-1).astype(np.float64) @ w
    p = np.exp(z - z.max())
    p /= p.sum()
    c = int(np.argmax(p))
    grad = (w[:, c] - w @ p).reshape(32, 32, 3)
    expected = np.abs(grad).max(axis=-1)

    saliency = analysis.saliency_maps(model, image)
    assert saliency.shape == image.shape[:2]
    np.testing.assert_allclose(saliency, expected, rtol=1e-3, atol=1e-7)

    # An explicit class gives that class's gradient.
    other = (c + 1) % 3
    grad_other = np.abs((w[:, other] - w @ p).reshape(32, 32, 3)).max(axis=-1)
    np.testing.assert_allclose(analysis.saliency_maps(model, image, classes=other), grad_other, rtol=1e-3, atol=1e-7)


def test_saliency_of_a_tiny_conv_model_has_the_image_shape_and_is_nonzero():
    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(None, None, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.SeparableConv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x))
    images = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)

    maps = analysis.saliency_maps(model, images, batch_size=2)  # two batches
    assert maps.shape == (3, 32, 32)
    assert maps.dtype == np.float32
    assert np.all(maps >= 0)
    assert np.all(maps.reshape(3, -1).max(axis=1) > 0)
    single = analysis.saliency_maps(model, images[1])
    assert single.shape == (32, 32)
    np.testing.assert_allclose(single, maps[1], rtol=1e-5, atol=1e-9)

    with pytest.raises(ValueError, match="classes"):
        analysis.saliency_maps(model, images, classes=[0, 1])


def test_figure_functions_return_figures():
    probs = _two_class_probs([0.85, 0.85, 0.65, 0.65, 0.65], [0, 1, 1, 0, 1])
    labels = np.array([0, 0, 1, 0, 0])
    bins = analysis.reliability_bins(probs, labels)
    images = np.random.default_rng(0).integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)

    figures = [
        analysis.plot_confusion_matrix(CM, NAMES3),
        analysis.plot_confusion_matrix(CM, NAMES3, normalize=False),
        analysis.plot_per_class_scores(analysis.per_class_table(CM, NAMES3)),
        analysis.plot_reliability_diagram(bins),
        analysis.plot_predictions(images, labels, probs, [0, 1, 2], class_names=("x", "y")),
        analysis.plot_saliency(images[:3], np.random.default_rng(1).random((3, 32, 32)), titles=["1", "2", "3"]),
    ]
    for fig in figures:
        assert isinstance(fig, Figure)
    # An all-zero map must not divide by zero (numpy would draw NaN with a mere warning).
    blank = analysis.plot_saliency(images[0], np.zeros((32, 32)))
    heat = np.ma.getdata(blank.axes[1].images[-1].get_array())
    assert np.isfinite(heat).all() and not heat.any()


def test_confusion_heatmap_shows_row_percentages():
    fig = analysis.plot_confusion_matrix(CM, NAMES3)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[:3] == ["50", "50", "0"]  # row "a": 1 of 2, 1 of 2, 0
    assert texts[-3:] == ["33", "33", "33"]
