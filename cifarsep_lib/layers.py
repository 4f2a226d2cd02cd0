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
