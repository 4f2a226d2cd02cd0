"""Error analysis: where a classifier goes wrong, how sure it is, and what it looks at.

Numbers first (numpy; pandas for the table, the Keras backend for saliency gradients), then
figures (matplotlib / seaborn; each returns its Figure):

* ``confusion_matrix`` and ``plot_confusion_matrix``: which classes are mistaken for which;
* ``precision_recall_f1`` and ``per_class_table``: one row of scores per class;
* ``most_confused_pairs``: the largest off-diagonal cells of the confusion matrix;
* ``confident_mistakes`` and ``plot_predictions``: misclassified images, surest first;
* ``reliability_bins``, ``expected_calibration_error`` and ``plot_reliability_diagram``:
  does a confidence of 0.9 mean "right nine times out of ten"?
* ``saliency_maps`` and ``plot_saliency``: which pixels move the predicted class score.

Conventions: ``labels`` are integer class indices, shape ``(N,)`` or ``(N, 1)`` (as
``data.load_cifar10`` returns them); ``probs`` are class probabilities ``(N, C)``, as
``evaluation.predict`` returns them. Rows of a confusion matrix are true classes,
columns predicted classes.
"""

from __future__ import annotations

import dataclasses

import keras
import matplotlib.pyplot as plt
import numpy as np

from .data import CLASS_NAMES, NUM_CLASSES
from .evaluation import predict_array, prepare_images
from .plots import image_grid


def _labels(labels) -> np.ndarray:
    return np.asarray(labels).reshape(-1).astype(np.int64)


# ---------------------------------------------------------------------------
# Confusions and per-class scores
# ---------------------------------------------------------------------------


def confusion_matrix(labels, predicted, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts ``cm[t, p]`` of images of true class ``t`` predicted as class ``p``.

    Args:
        labels: true class indices ``(N,)`` or ``(N, 1)``.
        predicted: predicted class indices ``(N,)``; pass ``probs.argmax(axis=1)``.
        num_classes: size of the (square) matrix.

    Returns:
        An int64 array ``(num_classes, num_classes)``; row sums are the class supports,
        the diagonal holds the correct predictions.
    """
    t, p = _labels(labels), _labels(predicted)
    if t.shape != p.shape:
        raise ValueError(f"labels and predicted differ in length: {t.shape[0]} vs {p.shape[0]}")
    for name, arr in (("labels", t), ("predicted", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} must lie in 0..{num_classes - 1}, got {arr.min()}..{arr.max()}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def precision_recall_f1(cm) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix.

    * precision[c]: of the images predicted ``c``, the fraction that are ``c`` (column);
    * recall[c]: of the images of class ``c``, the fraction predicted ``c`` (row);
    * F1: their harmonic mean; support: images of class ``c``.

    A score whose denominator is zero (a class never predicted, or absent) is 0, as
    in scikit-learn's default.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return precision, recall, f1, support.astype(np.int64)


def per_class_table(cm, class_names=CLASS_NAMES):
    """A pandas DataFrame with one row per class: precision, recall, f1, support.

    Rows are sorted as ``class_names``; sort it yourself, e.g. ``.sort_values("f1")``.
    (pandas is a dependency of the series.)
    """
    import pandas as pd

    precision, recall, f1, support = precision_recall_f1(cm)
    return pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support},
        index=pd.Index(list(class_names), name="class"),
    )


def most_confused_pairs(cm, k: int = 10, class_names=CLASS_NAMES, symmetric: bool = False) -> list[tuple]:
    """The ``k`` largest off-diagonal cells of ``cm``, largest first.

    Returns a list of ``(true_name, predicted_name, count)``. Ties are broken by the
    order of the classes, so the result is deterministic. Cells with a count of 0 are
    left out.

    With ``symmetric=True``, ``cm[a, b] + cm[b, a]`` is counted once for each unordered
    pair (``a < b``): "cat and dog are confused 250 times, in either direction".
    """
    cm = np.asarray(cm)
    n = cm.shape[0]
    names = list(class_names) if class_names is not None else list(range(n))
    counts = cm + cm.T if symmetric else cm
    cells = [
        (int(counts[t, p]), t, p)
        for t in range(n)
        for p in range(n)
        if t != p and (not symmetric or t < p) and counts[t, p] > 0
    ]
    cells.sort(key=lambda c: (-c[0], c[1], c[2]))
    return [(names[t], names[p], count) for count, t, p in cells[:k]]


def confident_mistakes(probs, labels) -> np.ndarray:
    """Indices of the misclassified images, the most confident mistake first.

    Confidence is the probability of the predicted (arg-max) class. Ties keep the
    original order.
    """
    probs = np.asarray(probs)
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    wrong = np.flatnonzero(predicted != _labels(labels))
    return wrong[np.argsort(-confidence[wrong], kind="stable")]


# ---------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------


@dataclasses.dataclass
class ReliabilityBins:
    """Predictions grouped by confidence, for a reliability diagram.

    Attributes:
        edges: ``n_bins + 1`` bin edges from 0 to 1; bin ``b`` holds confidences in
            ``(edges[b], edges[b + 1]]`` (the first bin also holds 0).
        counts: predictions per bin.
        confidence: mean confidence per bin (NaN for an empty bin).
        accuracy: fraction correct per bin (NaN for an empty bin).
    """

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: the count-weighted mean of ``|accuracy - confidence|``."""
        filled = self.counts > 0
        weights = self.counts[filled] / self.counts.sum()
        return float(np.sum(weights * np.abs(self.accuracy[filled] - self.confidence[filled])))


def reliability_bins(probs, labels, n_bins: int = 10) -> ReliabilityBins:
    """Bin the predictions by confidence (probability of the predicted class).

    A *calibrated* model is right in a fraction of cases equal to its confidence:
    in each bin, ``accuracy`` is close to ``confidence``.
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == _labels(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # side="left" puts a confidence equal to an inner edge in the bin below: bins are (lo, hi].
    which = np.searchsorted(edges[1:-1], confidence, side="left")
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=n_bins) / counts
        accuracy = np.bincount(which, weights=correct, minlength=n_bins) / counts
    return ReliabilityBins(edges=edges, counts=counts, confidence=mean_conf, accuracy=accuracy)


def expected_calibration_error(probs, labels, n_bins: int = 10) -> float:
    """ECE: ``sum_b (n_b / N) * |accuracy_b - confidence_b|`` over ``n_bins`` equal-width bins."""
    return reliability_bins(probs, labels, n_bins).ece


# ---------------------------------------------------------------------------
# Saliency
# ---------------------------------------------------------------------------


def _class_log_prob(model, x, classes):
    """Sum over the batch of ``log p(class_i | x_i)``, in backend-neutral ``keras.ops``.

    The models end in a softmax; the log turns its saturating probability back into a
    score, so that a confident prediction still has a useful gradient.
    """
    probs = model(x, training=False)
    picked = keras.ops.take_along_axis(probs, keras.ops.expand_dims(classes, 1), axis=1)
    return keras.ops.sum(keras.ops.log(keras.ops.maximum(picked, 1e-30)))


def input_gradients(model, x: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Gradient of ``log p(classes[i] | x[i])`` with respect to each input image ``x[i]``.

    Keras 3 has no backend-neutral gradient function, so this is the one place that speaks to
    the backend: TensorFlow's ``GradientTape`` (the series' default backend), with the
    equivalent for JAX and PyTorch (all three run in the series' tests, the JAX and PyTorch
    ones in scripts/test.sh's backend runs). Images in a batch do not interact (BatchNorm runs
    in inference mode), so the gradient of the batch sum is each image's own gradient.

    Args:
        x: float32 images ``(N, H, W, 3)`` as the model takes them (0-255 values).
        classes: int class index per image ``(N,)``.

    Returns:
        A numpy array shaped like ``x``.
    """
    backend = keras.backend.backend()
    classes = np.asarray(classes, dtype="int32")
    if backend == "tensorflow":
        import tensorflow as tf

        xt = tf.convert_to_tensor(x, dtype=tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(xt)  # x is a constant, not a variable: ask the tape to follow it
            score = _class_log_prob(model, xt, tf.constant(classes))
        grads = tape.gradient(score, xt)
    elif backend == "jax":
        import jax

        grads = jax.grad(lambda xj: _class_log_prob(model, xj, classes))(jax.numpy.asarray(x, dtype="float32"))
    elif backend == "torch":
        xt = keras.ops.convert_to_tensor(x, dtype="float32").detach().requires_grad_(True)
        _class_log_prob(model, xt, keras.ops.convert_to_tensor(classes)).backward()
        grads = xt.grad
    else:
        raise NotImplementedError(f"saliency maps need gradients; backend {backend!r} is not supported")
    return keras.ops.convert_to_numpy(grads)


def saliency_maps(model, images, classes=None, batch_size: int = 64) -> np.ndarray:
    """Vanilla gradient saliency (Simonyan et al., 2014), one map per image.

    For each image, the gradient of the class's log-probability with respect to the
    input pixels, reduced over colour channels by the largest absolute value: bright
    pixels are those whose small change would move the class score most.

    Args:
        model: a Keras model taking 0-255 RGB images and returning class probabilities.
        images: one image ``(H, W, 3)`` or a batch ``(N, H, W, 3)`` (see
            ``evaluation.prepare_images``).
        classes: class index per image, or one index for all; default: the model's own top class.

    Returns:
        float32 maps ``(N, 32, 32)`` (``(32, 32)`` for a single image; other sizes are resized first),
        not normalised.
    """
    single = np.asarray(images).ndim == 3
    x = prepare_images(images)
    if classes is None:
        classes = np.asarray(predict_array(model, x, batch_size)).argmax(axis=1)
    classes = _labels(classes)
    if classes.size == 1 and len(x) > 1:
        classes = np.repeat(classes, len(x))
    if len(classes) != len(x):
        raise ValueError(f"got {len(classes)} classes for {len(x)} images")
    grads = np.concatenate(
        [
            input_gradients(model, x[i : i + batch_size], classes[i : i + batch_size])
            for i in range(0, len(x), batch_size)
        ]
    )
    maps = np.abs(grads).max(axis=-1).astype(np.float32)
    return maps[0] if single else maps


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def plot_confusion_matrix(cm, class_names=CLASS_NAMES, normalize: bool = True, ax=None, cmap="Blues"):
    """Seaborn heat map of a confusion matrix (rows: true class, columns: predicted).

    With ``normalize=True`` each row is divided by its support, so the diagonal is the
    per-class recall and a row reads "where the images of this class went" (in %).
    """
    import seaborn as sns

    cm = np.asarray(cm)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7.5, 6.5))
    else:
        fig = ax.figure
    if normalize:
        support = cm.sum(axis=1, keepdims=True)
        values = 100.0 * np.divide(cm, support, out=np.zeros(cm.shape), where=support > 0)
        fmt, label = ".0f", "% of the true class"
    else:
        values, fmt, label = cm, "d", "images"
    sns.heatmap(
        values,
        annot=True,
        fmt=fmt,
        cmap=cmap,
        square=True,
        xticklabels=class_names,
        yticklabels=class_names,
        cbar_kws={"label": label, "shrink": 0.8},
        annot_kws={"fontsize": 8},
        ax=ax,
    )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix" + (" (rows sum to 100%)" if normalize else ""))
    fig.tight_layout()
    return fig


def plot_per_class_scores(table, ax=None):
    """Grouped bars of precision, recall and F1 per class (``per_class_table`` output)."""
    import seaborn as sns

    x_col = table.index.name or "index"
    long = table[["precision", "recall", "f1"]].reset_index().melt(id_vars=x_col, var_name="score")
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 3.8))
    else:
        fig = ax.figure
    sns.barplot(data=long, x=x_col, y="value", hue="score", ax=ax)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("")
    ax.set_ylabel("score")
    ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title("Per-class precision, recall and F1")
    fig.tight_layout()
    return fig


def plot_reliability_diagram(bins: ReliabilityBins, title: str = "Reliability diagram"):
    """Accuracy against confidence per bin, the gap to its mean confidence, and each bin's share of predictions.

    Bars below the diagonal mean over-confidence (the model is right less often than it
    claims); above it, under-confidence. The ECE is in the title.
    """
    edges = bins.edges
    width = np.diff(edges)
    centers = edges[:-1] + width / 2
    filled = bins.counts > 0
    fig, (ax, ax_hist) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(
        centers[filled],
        bins.accuracy[filled],
        width=width[filled],
        color="tab:blue",
        edgecolor="black",
        label="accuracy",
    )
    gap_bottom = np.minimum(bins.accuracy, bins.confidence)[filled]
    gap = np.abs(bins.accuracy - bins.confidence)[filled]
    ax.bar(
        centers[filled],
        gap,
        bottom=gap_bottom,
        width=width[filled],
        color="tab:red",
        alpha=0.35,
        edgecolor="tab:red",
        hatch="//",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(f"{title}\nECE = {100 * bins.ece:.2f}%")
    ax.legend(loc="upper left", fontsize=8)
    ax_hist.bar(centers, bins.counts / max(1, bins.counts.sum()), width=width, color="gray", edgecolor="black")
    ax_hist.set_xlabel("confidence (probability of the predicted class)")
    ax_hist.set_ylabel("share of\npredictions")
    fig.tight_layout()
    return fig


def plot_predictions(images, labels, probs, indices, class_names=CLASS_NAMES, ncols: int = 8, suptitle=None):
    """A grid of ``images[indices]`` titled "true → predicted (confidence)".

    Titles are green for a correct prediction and red for a mistake.
    """
    indices = np.asarray(indices, dtype=np.int64)
    labels = _labels(labels)
    probs = np.asarray(probs)
    predicted = probs.argmax(axis=1)
    titles, colors = [], []
    for i in indices:
        t, p = labels[i], predicted[i]
        titles.append(f"{class_names[t]}\n→ {class_names[p]} ({probs[i, p]:.0%})")
        colors.append("green" if t == p else "red")
    fig = image_grid(
        np.asarray(images)[indices], titles=titles, title_colors=colors, ncols=ncols, size=1.4, suptitle=suptitle
    )
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height * 1.25 + 0.2)  # room for the two-line titles
    fig.tight_layout()
    return fig


def plot_saliency(images, maps, titles=None, cmap: str = "inferno", alpha: float = 0.65):
    """Each image above its saliency map, drawn over a faded grey copy of the image.

    Each map is scaled to 0-1 by its own 99th percentile (one very bright pixel would
    otherwise darken the rest), so brightness compares pixels within an image, not
    across images.
    """
    images = np.asarray(images)
    maps = np.asarray(maps, dtype=np.float64)
    if images.ndim == 3:
        images, maps = images[None], maps[None]
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.6), squeeze=False)
    for i in range(n):
        img = np.clip(images[i], 0, 255).astype("uint8")
        top = np.percentile(maps[i], 99)
        heat = np.clip(maps[i] / top, 0, 1) if top > 0 else np.zeros_like(maps[i])
        axes[0, i].imshow(img, interpolation="nearest")
        axes[1, i].imshow(img.mean(axis=-1), cmap="gray", vmin=0, vmax=255, alpha=0.5, interpolation="nearest")
        axes[1, i].imshow(heat, cmap=cmap, alpha=alpha, vmin=0, vmax=1, interpolation="nearest")
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize=8)
        for ax in axes[:, i]:
            ax.axis("off")
    axes[0, 0].text(-0.15, 0.5, "image", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right")
    axes[1, 0].text(-0.15, 0.5, "saliency", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right")
    fig.tight_layout()
    return fig
