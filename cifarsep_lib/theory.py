"""The theory behind separable convolutions: what one convolution costs, and rank-1 kernels.

Notebooks 02 and 03 use these helpers; ``anatomy`` applies them to a built model, layer by
layer (receptive fields, costs per layer and per feature-map size). Everything here is plain
numpy, so it runs the same under every Keras backend.

* Costs: ``standard_conv_cost``, ``spatially_separable_conv_cost`` and
  ``depthwise_separable_conv_cost`` give the parameters and multiply-adds of one layer;
  ``cost_table`` compares the three.
* Rank-1 kernels: ``rank1_approximation`` splits a 2-D kernel into a column and a row
  (the best such split, by the SVD); ``SOBEL_X`` is a kernel that splits exactly.
* Figures (each function returns its matplotlib Figure): the three costs against channels
  and kernel size, a kernel's rank-1 split, and how a receptive field grows in 1-D.
  ``format_table`` prints a list of dicts as an aligned text table.
"""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

# --------------------------------------------------------------------------------------
# What a convolution costs
# --------------------------------------------------------------------------------------

STANDARD = "standard k x k"
SPATIAL = "spatially separable (k x 1, 1 x k)"
DEPTHWISE = "depthwise separable (k x k dw, 1 x 1 pw)"


def standard_conv_cost(c_in: int, c_out: int, k: int, h: int, w: int, bias: bool = True) -> dict:
    """Parameters and multiply-adds of a standard k x k convolution (``Conv2D``).

    Every output channel has its own k x k x c_in kernel: ``k*k*c_in*c_out`` weights
    (+ ``c_out`` biases). Each of the ``h*w`` output positions (stride 1, ``"same"``
    padding: the output is as large as the input) applies all of them once.
    """
    weights = k * k * c_in * c_out
    return {"kind": STANDARD, "params": weights + (c_out if bias else 0), "mult_adds": h * w * weights}


def spatially_separable_conv_cost(
    c_in: int, c_out: int, k: int, h: int, w: int, mid: int | None = None, bias: bool = True
) -> dict:
    """Parameters and multiply-adds of a k x 1 convolution (to ``mid`` channels) then a 1 x k one.

    This is ``cifarsep_lib.layers.SpatiallySeparableConv2D`` (``mid`` defaults to ``c_out``,
    like its ``mid_filters``): ``k*c_in*mid + k*mid*c_out`` weights (+ ``c_out`` biases,
    added after the second convolution only). Stride 1, ``"same"`` padding.
    """
    mid = c_out if mid is None else mid
    weights = k * c_in * mid + k * mid * c_out
    return {"kind": SPATIAL, "params": weights + (c_out if bias else 0), "mult_adds": h * w * weights}


def depthwise_separable_conv_cost(
    c_in: int, c_out: int, k: int, h: int, w: int, depth_multiplier: int = 1, bias: bool = True
) -> dict:
    """Parameters and multiply-adds of a depthwise k x k convolution then a pointwise 1 x 1 one.

    This is ``keras.layers.SeparableConv2D``: each input channel gets its own k x k filter
    (``k*k*c_in*depth_multiplier`` weights), then a 1 x 1 convolution mixes the channels
    (``c_in*depth_multiplier*c_out`` weights, + ``c_out`` biases). Stride 1, ``"same"`` padding.
    """
    depthwise = k * k * c_in * depth_multiplier
    pointwise = c_in * depth_multiplier * c_out
    weights = depthwise + pointwise
    return {"kind": DEPTHWISE, "params": weights + (c_out if bias else 0), "mult_adds": h * w * weights}


def cost_table(c_in: int, c_out: int, k: int = 3, h: int = 32, w: int = 32, mid: int | None = None) -> list[dict]:
    """The three kinds of convolution side by side, with their cost relative to the standard one.

    Returns one dict per kind: ``kind``, ``params``, ``mult_adds``, ``params_ratio`` and
    ``mult_adds_ratio`` (both divided by the standard convolution's, rounded to 3 digits).
    """
    rows = [
        standard_conv_cost(c_in, c_out, k, h, w),
        spatially_separable_conv_cost(c_in, c_out, k, h, w, mid=mid),
        depthwise_separable_conv_cost(c_in, c_out, k, h, w),
    ]
    base = rows[0]
    for row in rows:
        row["params_ratio"] = round(row["params"] / base["params"], 3)
        row["mult_adds_ratio"] = round(row["mult_adds"] / base["mult_adds"], 3)
    return rows


def format_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """A list of dicts as an aligned plain-text table (integers get thousands separators).

    ``columns`` picks and orders the keys (default: the keys of the first row).
    """
    if not rows:
        return ""
    columns = list(columns or rows[0].keys())

    def cell(value) -> str:
        if isinstance(value, bool) or value is None:
            return str(value)
        if isinstance(value, (int, np.integer)):
            return f"{int(value):,}"
        if isinstance(value, (float, np.floating)):
            return f"{float(value):.3g}"
        if isinstance(value, tuple):
            return "x".join(str(v) for v in value)
        return str(value)

    body = [[cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in body)) for i, c in enumerate(columns)]
    numeric = [all(_looks_numeric(r[i]) for r in body) for i in range(len(columns))]

    def line(values) -> str:
        out = [v.rjust(wd) if num else v.ljust(wd) for v, wd, num in zip(values, widths, numeric, strict=True)]
        return "  ".join(out).rstrip()

    header = line(columns)
    rule = "  ".join("-" * wd for wd in widths)
    return "\n".join([header, rule, *(line(r) for r in body)])


def _looks_numeric(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------
# Rank-1 kernels
# --------------------------------------------------------------------------------------

# The Sobel filter for horizontal changes: a smoothing column [1, 2, 1] times a
# difference row [-1, 0, 1]. It is exactly rank 1, so a 3x1 then 1x3 convolution computes it.
SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def rank1_approximation(kernel2d) -> tuple[np.ndarray, np.ndarray, float]:
    """The best rank-1 approximation ``outer(column, row)`` of a 2-D kernel, by the SVD.

    Returns ``(column, row, relative_error)`` where ``relative_error`` is
    ``||kernel - outer(column, row)|| / ||kernel||`` (Frobenius norms; 0 for a zero kernel).
    The largest singular value is shared equally between ``column`` and ``row``, and the
    sign is chosen so that the column's largest-magnitude entry is positive.

    By the Eckart-Young theorem no other column/row pair gets closer: the error is
    ``sqrt(s2^2 + s3^2 + ...) / sqrt(s1^2 + s2^2 + ...)`` for singular values ``s1 >= s2 >= ...``.
    """
    kernel = np.asarray(kernel2d, dtype=np.float64)
    if kernel.ndim != 2:
        raise ValueError(f"expected a 2-D kernel, got shape {kernel.shape}")
    u, s, vt = np.linalg.svd(kernel)
    scale = math.sqrt(s[0])
    column, row = u[:, 0] * scale, vt[0] * scale
    if column[np.argmax(np.abs(column))] < 0:
        column, row = -column, -row
    norm = float(np.linalg.norm(kernel))
    error = float(np.linalg.norm(kernel - np.outer(column, row)) / norm) if norm > 0 else 0.0
    return column, row, error


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------

_KIND_COLORS = {STANDARD: "tab:red", SPATIAL: "tab:orange", DEPTHWISE: "tab:blue"}


def _cost_curves(xs, rows_for, xlabel: str, title: str):
    fig, (ax_abs, ax_rel) = plt.subplots(1, 2, figsize=(11, 4))
    table = [rows_for(x) for x in xs]
    for i, kind in enumerate((STANDARD, SPATIAL, DEPTHWISE)):
        color = _KIND_COLORS[kind]
        ax_abs.plot(xs, [rows[i]["mult_adds"] for rows in table], "o-", color=color, label=kind, markersize=3)
        ax_rel.plot(xs, [rows[i]["mult_adds_ratio"] for rows in table], "o-", color=color, label=kind, markersize=3)
    ax_abs.set_yscale("log")
    ax_abs.set_ylabel("multiply-adds per image (log scale)")
    ax_rel.set_ylabel("cost / cost of the standard convolution")
    ax_rel.set_ylim(0, 1.1)
    for ax in (ax_abs, ax_rel):
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    ax_rel.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_cost_vs_channels(channels=tuple(range(8, 257, 8)), k: int = 3, size: int = 32):
    """Multiply-adds of the three convolutions as the channel count grows (c_in = c_out)."""
    return _cost_curves(
        list(channels),
        lambda c: cost_table(c, c, k, size, size),
        "channels in = channels out",
        f"{k}x{k} convolutions on a {size}x{size} feature map",
    )


def plot_cost_vs_kernel_size(kernel_sizes=(3, 5, 7, 9, 11), channels: int = 64, size: int = 32):
    """Multiply-adds of the three convolutions as the kernel grows (``channels`` in and out)."""
    return _cost_curves(
        list(kernel_sizes),
        lambda k: cost_table(channels, channels, k, size, size),
        "kernel size k",
        f"{channels} -> {channels} channels on a {size}x{size} feature map",
    )


def _show_matrix(ax, matrix, title, vmax):
    ax.imshow(matrix, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    if matrix.size <= 49:
        for (i, j), v in np.ndenumerate(matrix):
            color = "white" if abs(v) > 0.6 * vmax else "black"
            ax.text(j, i, f"{v:.2g}" if abs(v) >= 5e-3 else "0", ha="center", va="center", fontsize=8, color=color)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_rank1(kernel2d, title: str = "kernel"):
    """A kernel, its best rank-1 approximation, what is left over, and its singular values."""
    kernel = np.asarray(kernel2d, dtype=np.float64)
    column, row, error = rank1_approximation(kernel)
    approx = np.outer(column, row)
    vmax = float(np.abs(kernel).max()) or 1.0
    s = np.linalg.svd(kernel, compute_uv=False)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3))
    _show_matrix(axes[0], kernel, title, vmax)
    _show_matrix(axes[1], approx, "rank-1: outer(column, row)", vmax)
    _show_matrix(axes[2], kernel - approx, f"left over (relative error {error:.2f})", vmax)
    axes[3].bar(np.arange(1, len(s) + 1), s, color="tab:blue")
    axes[3].set_xticks(np.arange(1, len(s) + 1))
    axes[3].set_title("singular values", fontsize=9)
    fig.tight_layout()
    return fig


def plot_receptive_field_1d(layers_spec=(("conv 3", 3, 1), ("conv 3", 3, 1), ("pool 2", 2, 2), ("conv 3", 3, 1))):
    """How one output value's view of the input grows, layer by layer (a 1-D slice).

    ``layers_spec`` is a sequence of ``(label, kernel, stride)``. The top layer's middle
    unit is traced down: every unit it depends on is coloured, with lines to the
    inputs of each coloured unit. ``valid`` windows, so every drawn unit is real.
    """
    spec = list(layers_spec)
    # Enough input positions that the top layer has a few units.
    rf, jump = 1, 1
    for _, k, s in spec:
        rf, jump = rf + (k - 1) * jump, jump * s
    n = rf + 4 * jump
    sizes, starts, jumps = [n], [0.0], [1]
    for _, k, s in spec:
        sizes.append((sizes[-1] - k) // s + 1)
        starts.append(starts[-1] + (k - 1) / 2 * jumps[-1])
        jumps.append(jumps[-1] * s)
    top = len(spec)
    lo = hi = sizes[top] // 2
    used = {top: (lo, hi)}
    for level in range(top, 0, -1):
        _, k, s = spec[level - 1]
        lo, hi = lo * s, hi * s + k - 1
        used[level - 1] = (lo, hi)

    fig, ax = plt.subplots(figsize=(min(14, 0.45 * n + 2), 0.9 * (top + 1) + 0.8))
    for level in range(top, 0, -1):
        _, k, s = spec[level - 1]
        a, b = used[level]
        for i in range(a, b + 1):
            x = starts[level] + i * jumps[level]
            for j in range(i * s, i * s + k):
                xj = starts[level - 1] + j * jumps[level - 1]
                ax.plot([x, xj], [level, level - 1], color="tab:orange", alpha=0.5, lw=1)
    for level in range(top + 1):
        xs = starts[level] + np.arange(sizes[level]) * jumps[level]
        a, b = used[level]
        colors = ["tab:orange" if a <= i <= b else "lightgray" for i in range(sizes[level])]
        ax.scatter(xs, np.full(len(xs), level), c=colors, s=60, zorder=3, edgecolors="black", linewidths=0.5)
        label = "input" if level == 0 else spec[level - 1][0]
        ax.text(-1.5, level, label, ha="right", va="center", fontsize=9)
    # Annotate the receptive field of each level's traced units.
    rf, jump = 1, 1
    for level in range(top + 1):
        if level > 0:
            _, k, s = spec[level - 1]
            rf, jump = rf + (k - 1) * jump, jump * s
        ax.text(n + 0.5, level, f"RF {rf}, jump {jump}", va="center", fontsize=9)
    a, b = used[0]
    ax.axvspan(a - 0.5, b + 0.5, ymin=0, ymax=0.08, color="tab:orange", alpha=0.25)
    ax.set_xlim(-6, n + 5)
    ax.set_ylim(-0.6, top + 0.6)
    ax.axis("off")
    ax.set_title(f"one value at the top sees {b - a + 1} input pixels", fontsize=10)
    fig.tight_layout()
    return fig
