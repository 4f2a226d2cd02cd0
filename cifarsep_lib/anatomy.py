"""A built model, layer by layer: what each layer sees, holds and costs.

Notebook 03 reads the base model and SepNet with these helpers (notebook 02 a toy model):

* ``receptive_fields``: each layer's output shape, window, jump and receptive field;
* ``layer_costs``: each layer's parameters, multiply-adds and activations for one image
  (the counts of ``theory``'s formulas, which the tests check them against);
* ``cost_by_resolution``: those costs summed per feature-map size (where the work is);
* figures of each (every function returns its matplotlib Figure).

They read a functional Keras model's layers and nothing else, so they run the same under
every Keras backend.
"""

from __future__ import annotations

import keras
import matplotlib.pyplot as plt
import numpy as np

from .layers import SpatiallySeparableConv2D

# --------------------------------------------------------------------------------------
# Receptive fields and per-layer costs of a model
# --------------------------------------------------------------------------------------

# Layers that change neither the receptive field nor the spacing of positions.
_PASS_THROUGH = (
    keras.layers.InputLayer,
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Softmax,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.Normalization,
    keras.layers.Rescaling,
    keras.layers.Add,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Dense,
)
_CONVS = (
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Conv2D,
    SpatiallySeparableConv2D,
)
_POOLS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)


def _square(value, what: str, layer) -> int:
    values = (value, value) if isinstance(value, int) else tuple(value)
    if values[0] != values[1]:
        raise ValueError(f"{layer.name}: only square {what}s are supported, got {values}")
    return int(values[0])


def _geometry(layer) -> tuple[int, int, str]:
    """(effective kernel size, stride, padding) of a layer that moves a window over the image."""
    if isinstance(layer, SpatiallySeparableConv2D):
        return layer.kernel_size, layer.strides, layer.padding
    if isinstance(layer, _CONVS):
        k = _square(layer.kernel_size, "kernel", layer)
        d = _square(layer.dilation_rate, "dilation", layer)
        return d * (k - 1) + 1, _square(layer.strides, "stride", layer), layer.padding
    if isinstance(layer, _POOLS):
        return _square(layer.pool_size, "pool", layer), _square(layer.strides, "stride", layer), layer.padding
    raise TypeError(f"{layer.name}: no window geometry for {type(layer).__name__}")


def _out_size(n: int, k: int, s: int, padding: str) -> int:
    return -(-n // s) if padding == "same" else (n - k) // s + 1


def _inbound(layer) -> list[str]:
    """Names of the layers feeding ``layer`` (it must be used once in the model)."""
    nodes = layer._inbound_nodes
    if len(nodes) != 1:
        raise ValueError(f"{layer.name} is used {len(nodes)} times; shared layers are not supported")
    return [t._keras_history.operation.name for t in nodes[0].input_tensors]


def _walk(model, input_size: int):
    """Yield ``(layer, row, in_row)`` for every layer of a functional model, in order.

    ``row`` holds the layer's output geometry (name, type, output_shape, kernel, stride,
    jump, rf, params); ``in_row`` is the geometry of its (first) input.
    """
    if not isinstance(input_size, int):
        raise TypeError("input_size must be an int (square images)")
    done: dict[str, dict] = {}
    for layer in model.layers:
        channels = layer.output.shape[-1]
        if isinstance(layer, keras.layers.InputLayer):
            row = {"size": input_size, "kernel": 1, "stride": 1, "jump": 1, "rf": 1}
            in_row = None  # the full row of this layer, filled in below
        else:
            sources = [done[name] for name in _inbound(layer)]
            in_row = sources[0]
            if isinstance(layer, (*_CONVS, *_POOLS)):
                k, s, padding = _geometry(layer)
                size = _out_size(in_row["size"], k, s, padding) if in_row["size"] else None
                row = {
                    "size": size,
                    "kernel": k,
                    "stride": s,
                    "jump": in_row["jump"] * s,
                    "rf": in_row["rf"] + (k - 1) * in_row["jump"],
                }
            elif isinstance(layer, _PASS_THROUGH):
                # An Add sees everything any of its inputs sees.
                widest = max(sources, key=lambda r: r["rf"])
                row = {"size": in_row["size"], "kernel": 1, "stride": 1, "jump": widest["jump"], "rf": widest["rf"]}
            else:
                raise NotImplementedError(
                    f"receptive field of {layer.name} ({type(layer).__name__}) is not implemented"
                )
        flat = len(layer.output.shape) == 2
        shape = (channels,) if flat else (row["size"], row["size"], channels)
        row = {
            "name": layer.name,
            "type": type(layer).__name__,
            "output_shape": shape,
            "kernel": row["kernel"],
            "stride": row["stride"],
            "jump": row["jump"],
            "rf": row["rf"],
            "params": int(layer.count_params()) if layer.built else 0,
            "size": row["size"],
        }
        done[layer.name] = row
        yield layer, row, in_row or row


def receptive_fields(model, input_size: int = 32) -> list[dict]:
    """Per-layer receptive field of a functional model of the series (square images).

    Returns one dict per layer, in order, with ``name``, ``type``, ``output_shape``
    (``(H, W, C)`` for ``input_size`` x ``input_size`` images, ``(C,)`` after pooling
    to a vector), ``kernel`` (effective window size, 1 for pass-through layers),
    ``stride``, ``jump`` (input pixels between neighbouring output positions),
    ``rf`` (receptive field: the side of the input square one output value sees) and
    ``params``.

    The rule, layer by layer: ``rf_out = rf_in + (kernel - 1) * jump_in`` and
    ``jump_out = jump_in * stride``. SeparableConv2D, DepthwiseConv2D and Conv2D use their
    kernel, stride and dilation; SpatiallySeparableConv2D (k x 1 then 1 x k) counts as a
    k x k window with its stride; max/average pooling use their pool size and stride.
    BatchNorm, activations, Dropout, Normalization, Rescaling, global pooling and Dense
    pass it through (so after global pooling ``rf`` is still that of one position,
    although the average covers the whole image); Add takes the largest of its inputs.
    """
    return [{k: v for k, v in row.items() if k != "size"} for _, row, _ in _walk(model, input_size)]


def layer_costs(model, input_size: int = 32) -> list[dict]:
    """Per-layer cost of one ``input_size`` x ``input_size`` image through a model of the series.

    Returns one dict per layer: ``name``, ``type``, ``output_shape``, ``params``,
    ``mult_adds`` (multiply-adds of convolutions and Dense layers; 0 elsewhere) and
    ``activations`` (values in the layer's output: the elementwise work of BatchNorm,
    ReLU, Dropout, Add... is proportional to it). Convolutions are counted at the
    positions of their real outputs, whatever their padding.
    """
    rows = []
    for layer, row, in_row in _walk(model, input_size):
        out_positions = row["size"] ** 2 if len(row["output_shape"]) == 3 else 1
        c_out = row["output_shape"][-1]
        c_in = in_row["output_shape"][-1]
        mult_adds = 0
        taps = _square(layer.kernel_size, "kernel", layer) ** 2 if isinstance(layer, _CONVS[:3]) else 0
        if isinstance(layer, keras.layers.SeparableConv2D):
            m = layer.depth_multiplier
            mult_adds = out_positions * (taps * c_in * m + c_in * m * c_out)
        elif isinstance(layer, keras.layers.DepthwiseConv2D):
            mult_adds = out_positions * taps * c_in * layer.depth_multiplier
        elif isinstance(layer, keras.layers.Conv2D):
            mult_adds = out_positions * taps * c_in * c_out
        elif isinstance(layer, SpatiallySeparableConv2D):
            # The k x 1 step strides only down the rows: it runs at the output's rows times the
            # input's columns, the 1 x k step at the output's positions.
            k1_positions = row["size"] * in_row["size"]
            mult_adds = layer.kernel_size * layer.mid_filters * (k1_positions * c_in + out_positions * c_out)
        elif isinstance(layer, keras.layers.Dense):
            mult_adds = c_in * c_out
        rows.append(
            {
                "name": row["name"],
                "type": row["type"],
                "output_shape": row["output_shape"],
                "params": row["params"],
                "mult_adds": int(mult_adds),
                "activations": int(np.prod(row["output_shape"])),
            }
        )
    return rows


# Layers whose work is one cheap operation per value (no multiply-adds to speak of).
_ELEMENTWISE = (
    keras.layers.BatchNormalization,
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.Dropout,
    keras.layers.Add,
    keras.layers.Normalization,
    keras.layers.Rescaling,
)


def cost_by_resolution(model, input_size: int = 32) -> list[dict]:
    """``layer_costs`` summed per feature-map size: where a model spends its work.

    Returns one dict per spatial size, largest first: ``resolution`` (e.g. ``"32x32"``),
    ``conv_layers`` (convolution and Dense layers there), ``mult_adds`` and
    ``elementwise`` (values passed through BatchNorm, activations, Dropout, Add,
    normalization: memory-bound work that a CPU does far more slowly per value than a
    multiply-add inside a convolution).
    """
    groups: dict[str, dict] = {}
    for layer, row in zip(model.layers, layer_costs(model, input_size), strict=True):
        shape = row["output_shape"]
        key = f"{shape[0]}x{shape[1]}" if len(shape) == 3 else "vector"
        group = groups.setdefault(key, {"resolution": key, "conv_layers": 0, "mult_adds": 0, "elementwise": 0})
        group["mult_adds"] += row["mult_adds"]
        group["conv_layers"] += int(row["mult_adds"] > 0)
        if isinstance(layer, _ELEMENTWISE):
            group["elementwise"] += row["activations"]
    return list(groups.values())


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------


def plot_receptive_fields(rows: list[dict], image_size: int = 32, title: str = "receptive field per layer"):
    """Receptive field (bars) and jump (line) of the window layers in ``receptive_fields`` rows."""
    shown = [r for r in rows if r["kernel"] > 1 or r["type"] in {c.__name__ for c in (*_CONVS, *_POOLS)}]
    names = [r["name"] for r in shown]
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(shown) + 2), 4))
    colors = ["tab:green" if "Pool" in r["type"] else "tab:blue" for r in shown]
    bars = ax.bar(names, [r["rf"] for r in shown], color=colors)
    for bar, r in zip(bars, shown, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, r["rf"] + 0.5, str(r["rf"]), ha="center", fontsize=8)
    ax.axhline(image_size, color="gray", ls="--", lw=1)
    ax.text(-0.4, image_size - 0.5, f"image size {image_size}", ha="left", va="top", fontsize=8, color="gray")
    ax.plot(names, [r["jump"] for r in shown], "o-", color="tab:red", label="jump (pixels between positions)")
    ax.set_ylim(0, 1.3 * max(image_size, *(r["rf"] for r in shown)))
    ax.set_ylabel("input pixels")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    fig.tight_layout()
    return fig


def plot_receptive_field_boxes(rows: list[dict], names=None, image=None, image_size: int = 32):
    """Squares the size of each layer's receptive field, centred on the image.

    ``names`` picks the layers (default: every layer with a window larger than 1). ``image``
    (``image_size`` x ``image_size``, 0-255) is drawn underneath when given, else a grid.
    """
    by_name = {r["name"]: r for r in rows}
    if names is None:
        names = [r["name"] for r in rows if r["kernel"] > 1]
    fig, ax = plt.subplots(figsize=(5, 5))
    if image is not None:
        ax.imshow(np.clip(np.asarray(image), 0, 255).astype("uint8"), extent=(0, image_size, image_size, 0))
    else:
        ax.imshow(
            np.indices((image_size, image_size)).sum(0) % 2,
            cmap="Greys",
            alpha=0.08,
            vmin=0,
            vmax=1,
            extent=(0, image_size, image_size, 0),
        )
    ax.add_patch(plt.Rectangle((0, 0), image_size, image_size, fill=False, color="gray", lw=1, ls="--"))
    cmap = plt.get_cmap("viridis")
    for i, name in enumerate(names):
        rf = by_name[name]["rf"]
        # An odd field is centred on a pixel, an even one (after pooling) between two.
        centre = image_size / 2 + (0.5 if rf % 2 else 0.0)
        color = cmap(i / max(1, len(names) - 1))
        ax.add_patch(
            plt.Rectangle(
                (centre - rf / 2, centre - rf / 2), rf, rf, fill=False, lw=2, color=color, label=f"{name}: {rf}x{rf}"
            )
        )
    centre = image_size / 2
    lim = max(image_size, max(by_name[n]["rf"] for n in names)) / 2 + 1
    ax.set_xlim(centre - lim, centre + lim)
    ax.set_ylim(centre + lim, centre - lim)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    ax.set_title("what one value in the middle of each layer sees", fontsize=10)
    fig.tight_layout()
    return fig


def plot_layer_params(model, title: str | None = None):
    """Parameters of each layer that has any, trainable and non-trainable stacked."""
    layers = [layer for layer in model.layers if layer.count_params() > 0]
    names = [layer.name for layer in layers]
    trainable = [sum(int(np.prod(w.shape)) for w in layer.trainable_weights) for layer in layers]
    frozen = [sum(int(np.prod(w.shape)) for w in layer.non_trainable_weights) for layer in layers]
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(layers) + 2), 4))
    colors = ["tab:red" if isinstance(layer, keras.layers.Conv2D) else "tab:blue" for layer in layers]
    ax.bar(names, trainable, color=colors, label="trainable")
    ax.bar(names, frozen, bottom=trainable, color="lightgray", label="non-trainable (BatchNorm statistics)")
    for i, (t, f) in enumerate(zip(trainable, frozen, strict=True)):
        ax.text(i, t + f, f"{t + f:,}", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_ylabel("parameters")
    ax.set_title(title or f"{model.name}: {model.count_params():,} parameters")
    ax.tick_params(axis="x", rotation=60, labelsize=8)
    ax.set_ylim(0, 1.25 * max(t + f for t, f in zip(trainable, frozen, strict=True)))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_cost_by_resolution(models_, input_size: int = 32):
    """Multiply-adds and elementwise values per feature-map size, one bar per model."""
    tables = {m.name: {r["resolution"]: r for r in cost_by_resolution(m, input_size)} for m in models_}
    resolutions = []
    for table in tables.values():
        resolutions += [res for res in table if res not in resolutions and res != "vector"]
    resolutions.sort(key=lambda res: -int(res.split("x")[0]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(tables)
    for ax, key, label in zip(
        axes,
        ("mult_adds", "elementwise"),
        ("multiply-adds per image", "values through elementwise layers per image"),
        strict=True,
    ):
        for i, (name, table) in enumerate(tables.items()):
            values = [table.get(res, {}).get(key, 0) for res in resolutions]
            ax.bar(np.arange(len(resolutions)) + (i - (len(tables) - 1) / 2) * width, values, width, label=name)
        ax.set_xticks(np.arange(len(resolutions)), resolutions)
        ax.set_xlabel("feature-map size")
        ax.set_title(label, fontsize=10)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
