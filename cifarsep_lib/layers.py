"""Custom layers: the spatially separable convolution, and a faster BatchNorm for TensorFlow.

A k x k kernel that is the outer product of a column and a row (a *rank-1* kernel)
can be applied as a k x 1 convolution followed by a 1 x k one. That costs 2k instead
of k^2 weights per input/output channel pair. ``SpatiallySeparableConv2D`` is that pair
of convolutions, written with ``keras.ops.conv`` so that it is not a ``Conv2D`` layer and
runs under every Keras backend.

``FusedBatchNormalization`` is Keras' ``BatchNormalization`` (same weights, same
arithmetic) whose training steps on the TensorFlow backend run TensorFlow's fused
batch-norm kernels: one op forwards and one backwards instead of the separate mean,
variance and normalisation ops Keras 3 emits. On the 2-core development CPU that made
a training step 1.06x faster on 2026-11-27 and 1.4-1.5x on 2026-12-02 (``scripts/benchmark_layers.py``,
``benchmarks/cpu_fused_bn_and_strided_stem_2026-11-27.txt``,
``benchmarks/cpu_ten_minutes_fused_bn_in_turns_2026-12-02.txt``). The training recipe builds
the series' networks with it (``training.Recipe.fused_batchnorm``); under JAX or PyTorch it
runs its parent's code, so the same saved model loads and trains there. It is the only
TensorFlow-only code in the models.
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
        strides: s, the step of both convolutions along their own axis (the column
            kernel steps s rows, the row kernel s columns), so the output is 1/s the size.
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
        strides: int = 1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.mid_filters = int(mid_filters or filters)
        self.padding = padding
        self.strides = int(strides)
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
        s = self.strides
        x = ops.conv(inputs, self.column_kernel, strides=(s, 1), padding=self.padding)
        x = ops.conv(x, self.row_kernel, strides=(1, s), padding=self.padding)
        if self.bias is not None:
            x = x + self.bias
        return x

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        shrink = self.kernel_size - 1 if self.padding == "valid" else 0

        def size(length):  # the output length of a strided convolution
            return None if length is None else (length - shrink + self.strides - 1) // self.strides

        return (n, size(h), size(w), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            mid_filters=self.mid_filters,
            padding=self.padding,
            strides=self.strides,
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


def _tf_fused_batch_norm(x, gamma, beta, epsilon):
    """TensorFlow's fused training-mode batch norm: ``(normalised x, batch mean, batch variance)``.

    The op normalises with the biased batch variance (divided by n, like Keras) but
    returns the unbiased one (divided by n - 1); it is scaled back here, so the moving
    statistics get exactly what Keras' own layer gives them.
    """
    import tensorflow as tf  # only reached under the TensorFlow backend

    zeros = tf.zeros_like(gamma)
    y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
        x=x,
        scale=gamma,
        offset=beta,
        mean=zeros,  # ignored in training mode, but the op wants tensors of the right shape
        variance=zeros,
        epsilon=epsilon,
        exponential_avg_factor=1.0,
        data_format="NHWC",
        is_training=True,
    )
    n = tf.cast(tf.size(x) // tf.size(gamma), variance.dtype)
    return y, mean, variance * (n - 1.0) / n


@keras.saving.register_keras_serializable(package="cifarsep")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` that trains with TensorFlow's fused kernel.

    Used only where it computes the same thing as the parent: TensorFlow backend,
    training mode, 4-D float32 channels-last inputs, no mask, no renorm or
    synchronisation, with both scale and centre (under XLA, ``jit_compile``, too).
    Everything else (inference, other backends) is the parent's code. Outputs, gradients
    and moving statistics match the parent's to float32 rounding; weights and config are
    the parent's, so a trained model's weights load into either.
    """

    def _fusable(self, inputs, training, mask) -> bool:
        return (
            bool(training)
            and self.trainable
            and keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.scale
            and self.center
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and keras.backend.standardize_dtype(inputs.dtype) == "float32"
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        y, mean, variance = _tf_fused_batch_norm(inputs, self.gamma, self.beta, self.epsilon)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return y
