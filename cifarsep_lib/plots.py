"""Figures the notebooks share (matplotlib and seaborn; each function returns its Figure)."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np


def image_grid(images, titles=None, ncols: int = 8, size: float = 1.3, title_colors=None, suptitle=None):
    """Show uint8 or 0-255 float images in a grid, with optional per-image titles."""
    images = np.asarray(images)
    n = len(images)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * size, nrows * size * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(np.clip(images[i], 0, 255).astype("uint8"), interpolation="nearest")
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            ax.set_title(titles[i], fontsize=7, color=color)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------
# Data exploration
# ---------------------------------------------------------------------------

_CHANNEL_COLORS = ("tab:red", "tab:green", "tab:blue")
_CHANNEL_NAMES = ("red", "green", "blue")


def class_samples_grid(
    images, labels, class_names=None, per_class: int = 8, classes=None, seed: int = 0, size=1.1, title=None
):
    """One row per class of ``per_class`` random images of that class, the class name on the left.

    Args:
        images: uint8 images ``(N, H, W, 3)``.
        labels: class indices ``(N,)`` or ``(N, 1)``.
        class_names: names indexed by class (default: CIFAR-10's).
        per_class: images per row.
        classes: the classes to show, in order (default: all classes present).
        seed: which images are drawn (the draw is reproducible).
        size: inches per image.
        title: the figure's title, if any.
    """
    from .data import CLASS_NAMES

    names = CLASS_NAMES if class_names is None else class_names
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    rows = list(np.unique(labels) if classes is None else classes)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(rows), per_class, figsize=(per_class * size, len(rows) * size), squeeze=False)
    for r, c in enumerate(rows):
        pool = np.flatnonzero(labels == c)
        picked = rng.choice(pool, size=min(per_class, len(pool)), replace=False)
        for j, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(picked):
                ax.imshow(images[picked[j]], interpolation="nearest")
        axes[r, 0].set_ylabel(names[c], rotation=0, ha="right", va="center", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout(pad=0.3)
    return fig


def class_balance(splits: dict, class_names=None, ax=None):
    """Grouped bar chart of images per class, one colour per split.

    Args:
        splits: ``{"train": y_train, "test": y_test, ...}`` (labels of each split).
        class_names: names indexed by class (default: CIFAR-10's).
    """
    import pandas as pd
    import seaborn as sns

    from .data import CLASS_NAMES

    names = list(CLASS_NAMES if class_names is None else class_names)
    rows = []
    for split, labels in splits.items():
        counts = np.bincount(np.asarray(labels).reshape(-1), minlength=len(names))
        rows += [{"class": names[c], "split": split, "images": int(n)} for c, n in enumerate(counts)]
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 3.5))
    else:
        fig = ax.figure
    sns.barplot(data=pd.DataFrame(rows), x="class", y="images", hue="split", ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="{:,.0f}", fontsize=7)
    ax.set_ylim(0, 1.25 * max(r["images"] for r in rows))  # headroom for the legend
    ax.legend(title=None, ncols=len(splits), loc="upper center")
    ax.set_xlabel("")
    ax.set_ylabel("images per class")
    ax.set_title("Class balance")
    fig.tight_layout()
    return fig


def pixel_histograms(images, ax=None, title="Pixel values per channel"):
    """Histogram of the 256 pixel values of each colour channel (one curve per channel).

    Args:
        images: uint8 images ``(N, H, W, 3)`` (0-255 integers; other values are rounded).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    else:
        fig = ax.figure
    values = np.arange(256)
    for c in range(3):
        counts = np.bincount(images[..., c].ravel(), minlength=256)
        share = counts / counts.sum()
        mean = float(np.dot(values, share))
        ax.plot(values, share, color=_CHANNEL_COLORS[c], lw=1.2, label=f"{_CHANNEL_NAMES[c]} (mean {mean:.1f})")
        ax.fill_between(values, share, color=_CHANNEL_COLORS[c], alpha=0.12)
        ax.axvline(mean, color=_CHANNEL_COLORS[c], ls="--", lw=0.8)
    ax.set_xlim(0, 255)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("pixel value")
    ax.set_ylabel("share of pixels")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def class_means(images, labels, num_classes: int = 10) -> np.ndarray:
    """The mean image of each class, float64 ``(num_classes, H, W, 3)`` in 0-255 units (NaN for an absent class)."""
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    means = np.full((num_classes, *images.shape[1:]), np.nan)
    for c in range(num_classes):
        members = labels == c
        if members.any():
            means[c] = images[members].mean(axis=0, dtype=np.float64)
    return means


def class_means_grid(images, labels, class_names=None, ncols: int = 5, size: float = 1.8):
    """The mean image of each class, side by side (a blurry picture of "the typical" image of each class)."""
    from .data import CLASS_NAMES

    names = list(CLASS_NAMES if class_names is None else class_names)
    means = class_means(images, labels, num_classes=len(names))
    fig = image_grid(np.nan_to_num(means), titles=names, ncols=ncols, size=size, suptitle="Mean image of each class")
    for ax in fig.axes:
        ax.title.set_fontsize(10)
    return fig


def schedule_figure(schedule, total_steps: int, steps_per_epoch: int | None = None):
    """The learning rate of ``training.lr_schedule`` (warm-up, then cosine decay) over a run.

    The x axis is in epochs if ``steps_per_epoch`` is given, in steps otherwise.
    """
    steps = np.arange(total_steps + 1)
    lrs = [float(schedule(int(s))) for s in steps]
    x = steps / steps_per_epoch if steps_per_epoch else steps
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(x, lrs)
    ax.set_xlabel("epoch" if steps_per_epoch else "step")
    ax.set_ylabel("learning rate")
    ax.set_title("Warm-up, then cosine decay")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def history_figure(history: dict):
    """Loss and accuracy per epoch, training and validation, from a Keras history dict."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        ax.plot(epochs, history[key], "o-", label="training (augmented)")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], "o-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def results_figure(results: dict, base_dir=".", cores: int = 2):
    """Test accuracy against training CPU-minutes (the shipped runs' fixed-epoch test points)
    and against parameter count (the shipped models), from ``trained/results.json``.

    Colour says which network a run trained (``model`` in results.json), so the legend names
    a handful of networks however many runs are shipped. On the left every CPU run is a thin
    line and each network's most accurate run a bold one, so that the best curve per network
    stands out of the crowd of shorter or earlier runs. Only runs whose ``hardware`` is a
    CPU on ``cores`` cores (or not given) go on the minutes axis: a GPU run's minutes would not
    compare, nor would those of a run pinned to one core of two (``taskset``, side by side with
    another run) or of runs that shared the CPU unpinned ("2 cores shared by 3 runs"); all still
    appear on the parameters axis, a GPU run as a square. The main model (``main_model``) is the
    star. Minutes run on a log scale, so that ten-minute runs and five-hour ones both show their
    shape, with the series' two time budgets, 10 and 60 minutes, dotted."""
    import json
    from pathlib import Path

    from matplotlib.lines import Line2D

    def network(entry):
        return entry.get("model", entry["name"])

    def on_cpu(entry):
        return entry.get("hardware", "CPU").startswith("CPU")

    def on_minutes_axis(entry):
        # "CPU (x86_64, 2 cores)"; "1 of 2 cores" for a run under taskset; "2 cores shared by 3 runs"
        # for runs side by side unpinned: minutes of the last two kinds are not a whole CPU's
        hardware = entry.get("hardware", "")
        used = re.search(r"(\d+)(?: of \d+)? cores?\b", hardware)
        shared = "shared by" in hardware
        return on_cpu(entry) and not shared and (used is None or int(used.group(1)) == cores)

    models = results["models"]
    networks = list(dict.fromkeys(network(entry) for entry in models))
    palette = plt.get_cmap("tab10").colors
    # Past ten networks the colours come round again with dashed lines; there are seven now.
    color = {net: palette[i % len(palette)] for i, net in enumerate(networks)}
    dashes = {net: ("-", "--")[(i // len(palette)) % 2] for i, net in enumerate(networks)}

    curves = {}
    for entry in models:
        points_file = Path(base_dir) / f"{entry['name']}_test_points.json"
        if on_minutes_axis(entry) and points_file.is_file():
            curves[entry["name"]] = json.loads(points_file.read_text())
    best_of_network = {}
    for entry in models:
        if entry["name"] in curves:
            best = best_of_network.get(network(entry))
            if best is None or entry["test_accuracy"] > best["test_accuracy"]:
                best_of_network[network(entry)] = entry
    best_names = {entry["name"] for entry in best_of_network.values()}

    fig, (ax_time, ax_params) = plt.subplots(1, 2, figsize=(12, 4.6))
    for entry in models:
        net = network(entry)
        if entry["name"] in curves:
            points = curves[entry["name"]]
            minutes = [p["train_seconds"] / 60 for p in points]
            accuracy = [100 * p["test_accuracy"] for p in points]
            bold = entry["name"] in best_names
            ax_time.plot(
                minutes,
                accuracy,
                ls=dashes[net],
                color=color[net],
                marker="o" if bold else None,
                ms=4,
                lw=2.2 if bold else 0.9,
                alpha=1.0 if bold else 0.45,
                zorder=3 if bold else 2,
                label=entry["name"],
            )
        main = entry["name"] == results.get("main_model")
        marker = "*" if main else ("o" if on_cpu(entry) else "s")
        ax_params.scatter(
            entry["params"],
            100 * entry["test_accuracy"],
            s=200 if main else 45,
            color=color[net],
            marker=marker,
            edgecolors="black" if main else "none",
            alpha=1.0 if main else 0.8,
            zorder=3 if main else 2,
            label=entry["name"],
        )
    for ax in (ax_time, ax_params):
        ax.axhline(84, color="grey", ls="--", lw=1)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    # Runs here last from 2 minutes to over 5 hours: on a linear axis the short ones would
    # crowd into the left edge.
    ax_time.set_xscale("log")
    ax_time.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda m, _: f"{m:g}"))
    for budget in (10, 60):
        ax_time.axvline(budget, color="grey", ls=":", lw=1)
    ax_time.set_xlabel(f"training time (minutes, {cores}-core CPU, log scale)")
    ax_time.set_title("Accuracy against CPU-minutes (bold: each network's best run)")
    ax_params.margins(x=0.1, y=0.15)
    ax_params.axvline(100_000, color="red", ls=":", lw=1)
    # Six-digit tick labels ran into one another across a 12-inch figure.
    ax_params.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda n, _: f"{n / 1000:g}K"))
    ax_params.set_xlabel("parameters")
    ax_params.set_title("Accuracy against parameters (limit: 100K)")
    # One legend entry per network, then what the shapes mean: its length follows the
    # networks, not the runs, which grow every session.
    handles = [Line2D([], [], color=color[net], ls=dashes[net], lw=2.2, label=net) for net in networks]
    shapes = [("o", "CPU run"), ("s", "GPU run")]
    if any(entry["name"] == results.get("main_model") for entry in models):
        shapes.append(("*", "main model"))
    handles += [Line2D([], [], ls="", marker=m, color="grey", ms=8, label=text) for m, text in shapes]
    ax_params.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=9)
    fig.tight_layout()
    return fig
