"""Custom layers: the spatially separable convolution.

A k x k kernel that is the outer product of a column and a row (a *rank-1* kernel)
can be applied as a k x 1 convolution followed by a 1 x k one. That costs 2k instead
of k^2 weights per input/output channel pair. ``SpatiallySeparableConv2D`` is that pair
of convolutions, written with ``keras.ops.conv`` so that it is not a ``Conv2D`` layer and
runs under every Keras backend.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cifarsep")
class SpatiallySeparableConv2D(keras.layers.Layer):
    """A k x 1 convolution followed by a 1 x k convolution (no ``Conv2D`` inside).

    Args:
        filters: output channels.
        kernel_size: k, the length of both the column and the row kernel.
        mid_filters: channels between the two convolutions (default: ``filters``).
        padding: ``"same"`` or ``"valid"``.
        use_bias: add a bias after the second convolution.

    With ``mid_filters == 1`` and one input channel the layer computes exactly a
    k x k convolution whose kernel is ``outer(column, row)``.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        mid_filters: int | None = None,
        padding: str = "same",
        use_bias: bool = True,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.mid_filters = int(mid_filters or filters)
        self.padding = padding
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        in_channels = input_shape[-1]
        k = self.kernel_size
        self.column_kernel = self.add_weight(
            name="column_kernel",
            shape=(k, 1, in_channels, self.mid_filters),
            initializer=self.kernel_initializer,
        )
        self.row_kernel = self.add_weight(
            name="row_kernel",
            shape=(1, k, self.mid_filters, self.filters),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros") if self.use_bias else None

    def call(self, inputs):
        x = ops.conv(inputs, self.column_kernel, padding=self.padding)
        x = ops.conv(x, self.row_kernel, padding=self.padding)
        if self.bias is not None:
            x = x + self.bias
        return x

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        if self.padding == "valid":
            shrink = self.kernel_size - 1
            h = None if h is None else h - shrink
            w = None if w is None else w - shrink
        return (n, h, w, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            mid_filters=self.mid_filters,
            padding=self.padding,
            use_bias=self.use_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="cifarsep")
class MixedDepthwiseConv2D(keras.layers.Layer):
    """A depthwise convolution whose channel groups use different kernels (MixConv-style).

    The channels are split into equal groups: the first passes through unchanged when
    ``keep_first_group`` is true, and each further group gets its own per-channel k x k
    kernel, one ``(kernel_size, dilation_rate)`` pair of ``kernels`` per group. Small
    kernels see detail, large ones context, for the parameters of a depthwise convolution
    (k*k per channel): the default groups see 1, 3, 5 and 7 pixels across. Like every
    depthwise convolution it never mixes channels; a 1x1 step after it does.

    Dilated kernels (``dilation_rate`` > 1) see further for the same parameters, but
    grouped convolutions with dilation are reported to run much slower than plain ones
    under JAX on GPUs (jax-ml/jax issue 26266), so the default has none.
    """

    def __init__(self, kernels=((3, 1), (5, 1), (7, 1)), keep_first_group: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.kernels = [tuple(int(v) for v in k) for k in kernels]
        self.keep_first_group = keep_first_group
        self.convs = [
            keras.layers.DepthwiseConv2D(
                k,
                dilation_rate=d,
                padding="same",
                use_bias=False,
                depthwise_initializer="he_normal",
                name=f"dw{k}x{k}d{d}",
            )
            for k, d in self.kernels
        ]

    def _group_size(self, channels: int) -> int:
        groups = len(self.kernels) + int(self.keep_first_group)
        if channels % groups:
            raise ValueError(f"{channels} channels do not split into {groups} equal groups")
        return channels // groups

    def build(self, input_shape):
        size = self._group_size(input_shape[-1])
        for conv in self.convs:
            conv.build((*input_shape[:-1], size))

    def call(self, inputs):
        size = self._group_size(inputs.shape[-1])
        first = int(self.keep_first_group)
        groups = [inputs[..., :size]] if first else []
        for i, conv in enumerate(self.convs):
            start = (i + first) * size
            groups.append(conv(inputs[..., start : start + size]))
        return ops.concatenate(groups, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(kernels=[list(k) for k in self.kernels], keep_first_group=self.keep_first_group)
        return config


@keras.saving.register_keras_serializable(package="cifarsep")
class GatedGELU(keras.layers.Layer):
    """Splits the channels in two halves ``a, b`` and returns ``gelu(a) * b`` (a GEGLU gate).

    After a 1x1 expansion to ``2h`` channels this gives ``h`` channels in which each unit
    is switched by another: more expressive per parameter than a plain activation.
    """

    def call(self, inputs):
        a, b = ops.split(inputs, 2, axis=-1)
        return ops.gelu(a) * b

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)
