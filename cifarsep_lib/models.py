"""The models of the series.

* ``base_model()`` — the course assignment's base network, rebuilt layer for layer
  (32,261 parameters). Its ``trans1`` is a 1x1 ``Conv2D``, which breaks the
  assignment's own "no Conv2D" rule; it is kept as the historical baseline.
* ``base_model_strict()`` — the same network with ``trans1`` as a 1x1
  ``SeparableConv2D`` (a per-channel scale, then the same 1x1 mixing): +96 parameters.
* ``sepnet()`` — the series' own model: a small residual network of separable
  convolutions that downsamples early, because on a CPU the elementwise work at
  32x32 (BatchNorm, ReLU), not the multiply-adds, is what costs.
* ``sepnet_deep()`` and ``sepnet_deep_one_bn()`` — SepNet with a third residual block at 16x16
  (and, in the second, one BatchNorm per block): more capacity where the compute is.
* ``sepnet_fast()`` — SepNet's first, shallower version: faster per image, less accurate.
* ``sepnet_fast_s2()`` — ``sepnet_fast()`` whose stem steps 2 pixels, so that nothing after
  it runs at 32x32: much faster per training step on a CPU, a little less accurate per epoch.
* ``sepnet_fast_8x8()`` and ``sepnet_fast_8x8_lean()`` — lighter still at 16x16, for ten-minute
  runs on slower CPUs: no residual block there, and (lean) three elementwise layers fewer.
* ``mixsepnet()`` — a network for GPUs: three blocks at the full 32x32 resolution and three
  at 16x16, each a mixed-kernel depthwise convolution, a gated 1x1 expansion and a
  depthwise separable projection. Far more work per image than SepNet, for accuracy.

Built here, all models normalise with Keras' own ``BatchNormalization``. The series' networks
can be built with ``layers.FusedBatchNormalization`` instead (``fused_batchnorm=True``): the
same layer trained with TensorFlow's fused kernel, and what the training recipe gives them
(``training.Recipe.fused_batchnorm``). On the 2-core CPU it made a training step 1.06x faster
on 2026-11-27 and 1.4-1.5x on 2026-12-02, and it won all four seeds of that day's ten-minute
runs (``benchmarks/cpu_ten_minutes_fused_bn_in_turns_2026-12-02.txt``).
All models take raw RGB images with pixel values 0-255 (float or uint8 cast to float)
and accept any spatial size (``Input(shape=(None, None, 3))``).
"""

from __future__ import annotations

import inspect

import keras
from keras import layers

from .data import NUM_CLASSES, TRAIN_MEAN, TRAIN_STD
from .layers import FusedBatchNormalization, GatedGELU, MixedDepthwiseConv2D, SpatiallySeparableConv2D
from .whitening import PatchWhitening


def normalize_rgb(name: str = "normalize") -> layers.Layer:
    """Map raw 0-255 pixels to zero mean, unit variance per channel (published CIFAR-10 stats)."""
    return layers.Normalization(
        mean=[255.0 * m for m in TRAIN_MEAN],
        variance=[(255.0 * s) ** 2 for s in TRAIN_STD],
        name=name,
    )


def _base_block(x, filters, index, dropout):
    x = layers.SeparableConv2D(filters, 3, padding="same", name=f"sepconv{index}")(x)
    x = layers.Activation("relu", name=f"relu{index}")(x)
    x = layers.BatchNormalization(name=f"bn{index}")(x)
    return layers.Dropout(dropout, name=f"dropout{index}")(x)


def _base_network(strict: bool, dropout: float = 0.1) -> keras.Model:
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = layers.Rescaling(1.0 / 255, name="rescale")(inputs)
    x = _base_block(x, 64, 1, dropout)  # 32x32, receptive field 3
    x = _base_block(x, 64, 2, dropout)  # 32x32, RF 5
    x = _base_block(x, 96, 3, dropout)  # 32x32, RF 7
    x = layers.MaxPooling2D(name="pool1")(x)  # 16x16, RF 8
    if strict:
        x = layers.SeparableConv2D(32, 1, name="trans1")(x)
    else:
        x = layers.Conv2D(32, 1, name="trans1")(x)  # the assignment's one Conv2D
    x = _base_block(x, 32, 4, dropout)  # 16x16, RF 12
    x = _base_block(x, 64, 5, dropout)  # 16x16, RF 16
    x = layers.MaxPooling2D(name="pool2")(x)  # 8x8, RF 18
    x = _base_block(x, 32, 6, dropout)  # 8x8, RF 26
    x = _base_block(x, 192, 7, dropout)  # 8x8, RF 34
    x = layers.SeparableConv2D(NUM_CLASSES, 1, name="sepconv_out")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Activation("softmax", name="softmax")(x)
    name = "base_model_strict" if strict else "base_model"
    return keras.Model(inputs, outputs, name=name)


def base_model() -> keras.Model:
    """The assignment's base network (32,261 params: 31,173 trainable, 1,088 not)."""
    return _base_network(strict=False)


def base_model_strict() -> keras.Model:
    """The base network with ``trans1`` as a 1x1 SeparableConv2D: no Conv2D, 32,357 params."""
    return _base_network(strict=True)


def _batch_norm_layer(fused: bool) -> type[layers.BatchNormalization]:
    """Keras' own ``BatchNormalization``, or ``FusedBatchNormalization`` (same layer, TensorFlow's fused kernel)."""
    return FusedBatchNormalization if fused else layers.BatchNormalization


def _bn_relu(x, name, momentum, fused=False):
    x = _batch_norm_layer(fused)(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _sep(x, filters, name, strides=1, kernel_size=3, pointwise_initializer="he_normal"):
    return layers.SeparableConv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,  # BatchNorm follows and has its own shift
        depthwise_initializer="he_normal",
        pointwise_initializer=pointwise_initializer,
        name=name,
    )(x)


def _residual_block(x, filters, name, bn_momentum, fused, kernel_size=3, batchnorms=2):
    shortcut = x
    x = _bn_relu(_sep(x, filters, f"{name}_a", kernel_size=kernel_size), f"{name}_a", bn_momentum, fused)
    if batchnorms == 2:
        x = _sep(x, filters, f"{name}_b", kernel_size=kernel_size)
        x = _batch_norm_layer(fused)(momentum=bn_momentum, name=f"{name}_b_bn")(x)
    else:
        # Without the second BatchNorm, nothing would scale the branch down at the start: its
        # last 1x1 weights start at zero instead, so each block begins as the identity (the
        # role of a zero-initialised BatchNorm scale in Goyal et al., 2017) and costs one
        # elementwise layer less. The 1x1 weights still get gradients: their inputs are not zero.
        x = _sep(x, filters, f"{name}_b", kernel_size=kernel_size, pointwise_initializer="zeros")
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def sepnet(
    widths: tuple[int, int, int] = (64, 96, 160),
    stem_filters: int = 24,
    stem_mid_filters: int | None = 8,
    blocks: tuple[int, int, int] = (2, 2, 0),
    bn_momentum: float = 0.9,
    stem_strides: int = 1,
    name: str = "sepnet",
    fused_batchnorm: bool = False,
    whitening_stem: bool = False,
    full_resolution_stage1: bool = False,
    kernel_size: int = 3,
    stem_activation: bool = True,
    block_batchnorms: int = 2,
) -> keras.Model:
    """The series' model: separable convolutions only, under 100K parameters.

    Layout (for 32x32 inputs):

    * stem at 32x32: a 3x1 convolution to ``stem_mid_filters`` channels, then a 1x3 one to
      ``stem_filters`` (a spatially separable convolution);
    * three stages at 16x16, 8x8 and 4x4, each entered by a stride-2 depthwise
      separable convolution and followed by ``blocks[i]`` residual blocks of two
      depthwise separable convolutions;
    * global average pooling and a linear classifier (softmax output).

    Only the stem runs at full resolution, and with few channels: that is where
    BatchNorm and ReLU cost the most on a CPU. The stem's 3x1 step produces only 8
    channels because its output is a full 32x32 map that costs memory traffic forwards and
    backwards. BatchNorm uses ``bn_momentum`` 0.9 instead of Keras' 0.99 so that its
    running statistics (used for validation) keep up with weights that move fast at the
    recipe's high learning rate. ``fused_batchnorm=True`` builds the same network with
    ``layers.FusedBatchNormalization`` instead of Keras' own ``BatchNormalization``.
    ``whitening_stem=True`` replaces the stem by ``whitening.PatchWhitening``: fixed
    whitened 2x2 patches, stepping 2 pixels (``stem_filters`` channels, ``stem_strides``
    and ``stem_mid_filters`` unused); ``train()`` adapts it on training images.
    ``full_resolution_stage1=True`` enters stage 1 with a stride-1 convolution, so that it
    runs at 32x32 (four times the pixels: the layout of classic CIFAR ResNets, and about 2.5x
    slower to train on the 2-core CPU); ``kernel_size`` is the depthwise kernel of the
    residual blocks (3: 3x3).
    ``stem_activation=False`` leaves out the stem's BatchNorm and ReLU, so that the stem and
    the convolution after it are one linear map; ``block_batchnorms=1`` gives each residual
    block one BatchNorm instead of two. Both drop elementwise layers where they cost the most.
    """
    if block_batchnorms not in (1, 2):
        raise ValueError(f"block_batchnorms must be 1 or 2, not {block_batchnorms}")
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = normalize_rgb()(inputs)
    stem_step = 2 if whitening_stem else stem_strides  # pixels between the stem's outputs
    if whitening_stem:
        x = PatchWhitening(stem_filters, patch_size=stem_step, name="stem")(x)
    else:
        x = SpatiallySeparableConv2D(
            stem_filters, 3, mid_filters=stem_mid_filters, strides=stem_step, use_bias=False, name="stem"
        )(x)
    if stem_activation:
        x = _bn_relu(x, "stem", bn_momentum, fused_batchnorm)
    for stage, (filters, n_blocks) in enumerate(zip(widths, blocks, strict=True), start=1):
        # A strided stem has already halved the image: stage 1 then keeps its size.
        strides = 1 if stage == 1 and (stem_step > 1 or full_resolution_stage1) else 2
        x = _bn_relu(_sep(x, filters, f"down{stage}", strides=strides), f"down{stage}", bn_momentum, fused_batchnorm)
        for b in range(n_blocks):
            block = f"stage{stage}_block{b + 1}"
            x = _residual_block(x, filters, block, bn_momentum, fused_batchnorm, kernel_size, block_batchnorms)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


def sepnet_fast(fused_batchnorm: bool = False) -> keras.Model:
    """SepNet's first, shallower version: faster on a CPU, less accurate (87,706 params).

    Widths (64, 128, 192), one residual block in stages 1 and 2, a stem whose two
    convolutions both have 24 channels, and Keras' default BatchNorm momentum (0.99).
    It trains faster per image than ``sepnet()`` (``benchmarks/``, ``trained/*_history.csv``);
    the shipped ``trained/sepnet_fast.keras`` is this architecture.
    """
    return sepnet(
        widths=(64, 128, 192),
        stem_mid_filters=None,
        blocks=(1, 1, 0),
        bn_momentum=0.99,
        name="sepnet_fast",
        fused_batchnorm=fused_batchnorm,
    )


# sepnet_fast_s2's arguments to sepnet(), so that variants of the ten-minute model can say only
# what they change (scripts/benchmark_sepnet_variants.py --family sepnet_fast_s2).
SEPNET_FAST_S2_LAYOUT = {
    "widths": (64, 128, 192),
    "stem_filters": 32,
    "stem_mid_filters": None,
    "blocks": (1, 1, 0),
    "bn_momentum": 0.99,
    "stem_strides": 2,
}


def sepnet_fast_s2(fused_batchnorm: bool = False) -> keras.Model:
    """``sepnet_fast()`` with a stride-2 stem and 32 stem channels (89,738 params).

    The stem's 3x1 and 1x3 convolutions each step 2 pixels, so nothing runs at 32x32 but
    those two convolutions (the 3x1 one on half the rows): the stem's BatchNorm and ReLU
    work on 16x16 maps, and stage 1 is entered by a stride-1 separable convolution.
    The stem gets 32 channels instead of 24 to carry the 27 values of each 3x3 patch
    of RGB pixels. On the 2-core CPU a training step is 1.2-1.3x faster than
    ``sepnet_fast()``'s (``scripts/benchmark_layers.py``), but it ends a little less accurate
    on the same schedule (``benchmarks/cpu_fused_bn_and_strided_stem_2026-11-27.txt``).
    """
    return sepnet(**SEPNET_FAST_S2_LAYOUT, name="sepnet_fast_s2", fused_batchnorm=fused_batchnorm)


# sepnet_fast_s2's layout without the 16x16 residual block, its parameters moved to 8x8 and 4x4.
SEPNET_FAST_8X8_LAYOUT = {**SEPNET_FAST_S2_LAYOUT, "widths": (64, 144, 176), "blocks": (0, 1, 0)}


def sepnet_fast_8x8(fused_batchnorm: bool = False) -> keras.Model:
    """``sepnet_fast_s2()`` without its 16x16 residual block, and 144/176 channels at 8x8/4x4 (90,778 params).

    A candidate ten-minute model for slower CPUs. At 16x16, where most of sepnet_fast_s2's
    training step goes, only the stem and the convolution entering stage 1 remain; the
    parameters saved there widen the 8x8 stage, whose residual block is now the network's
    only one. On the 2-core CPU a training step is about 1.4x faster than sepnet_fast_s2's
    (``python scripts/benchmark_sepnet_variants.py --family sepnet_fast_s2``); whether that
    buys accuracy in ten minutes is measured in the lab journal (``benchmarks/README.md``).
    """
    return sepnet(**SEPNET_FAST_8X8_LAYOUT, name="sepnet_fast_8x8", fused_batchnorm=fused_batchnorm)


def sepnet_fast_8x8_lean(fused_batchnorm: bool = False) -> keras.Model:
    """``sepnet_fast_8x8()`` with three elementwise layers fewer (90,074 params).

    No BatchNorm and ReLU after the stem (the stem and the convolution entering stage 1 form
    one linear map at 16x16), and one BatchNorm instead of two in the residual block, whose
    last 1x1 weights start at zero. On the 2-core CPU a training step is about 1.1x faster
    than sepnet_fast_8x8's. Over seven minutes it ended ahead on all five seeds tried (by 0.5
    points on average); over ten, one seed tied and one won by 1.2 points
    (``benchmarks/cpu_lean_8x8_amd_epyc_2026-12-04.txt``).
    """
    return sepnet(
        **SEPNET_FAST_8X8_LAYOUT,
        stem_activation=False,
        block_batchnorms=1,
        name="sepnet_fast_8x8_lean",
        fused_batchnorm=fused_batchnorm,
    )


def sepnet_fast_w(fused_batchnorm: bool = False) -> keras.Model:
    """``sepnet_fast_s2()`` with airbench's whitening first layer (86,098 params, 336 of them fixed).

    The stem is ``whitening.PatchWhitening``: the 12 principal components of the training
    images' 2x2 patches, scaled to unit variance, and their negatives (24 channels at 16x16),
    as a depthwise separable convolution that is set from data and never trained. Everything
    after it is ``sepnet_fast_s2()``'s, with 24 instead of 32 channels entering stage 1.
    """
    return sepnet(
        widths=(64, 128, 192),
        stem_filters=24,
        blocks=(1, 1, 0),
        bn_momentum=0.99,
        whitening_stem=True,
        name="sepnet_fast_w",
        fused_batchnorm=fused_batchnorm,
    )


# sepnet_deep's arguments to sepnet(): a third residual block at 16x16, 128 channels at 4x4.
SEPNET_DEEP_LAYOUT = {"widths": (64, 96, 128), "blocks": (3, 2, 0)}


def sepnet_deep(fused_batchnorm: bool = False) -> keras.Model:
    """``sepnet()`` with a third residual block at 16x16, paid for by 128 channels at 4x4 (96,234 params).

    An experiment in where SepNet's parameters do the most: its 4x4 stage is a single
    strided convolution whose 160 output channels cost 15,360 pointwise weights and almost
    no compute, while its 16x16 stage, where the compute is, has only two blocks. This
    variant moves capacity to 16x16: two more separable convolutions there, and 128
    channels at 4x4. On the 2-core CPU a training step costs about 1.25x SepNet's
    (``python scripts/benchmark_sepnet_variants.py``); the lab journal
    (``benchmarks/README.md``) compares the two at equal epochs.
    """
    return sepnet(**SEPNET_DEEP_LAYOUT, name="sepnet_deep", fused_batchnorm=fused_batchnorm)


def sepnet_deep_one_bn(fused_batchnorm: bool = False) -> keras.Model:
    """``sepnet_deep()`` with one BatchNorm per residual block instead of two (94,698 params).

    The second convolution of each of its five blocks ends without a BatchNorm; its 1x1 weights
    start at zero instead, so each block starts as the identity (as in ``sepnet_fast_8x8_lean``).
    Five elementwise layers fewer, four of them at 16x16. On the 2-core CPU that bought less than
    hoped: a step 1.05x faster than sepnet_deep's in one paired timing (``python
    scripts/benchmark_sepnet_variants.py``), and in an hour 80 epochs and 88.46 %, no better than
    SepNet's hours (88.55-88.81 %; ``benchmarks/cpu_sepnet_deep_one_bn_2026-12-04.txt``).
    The stem keeps its BatchNorm and ReLU, the network's only ones at 32x32.
    """
    return sepnet(
        **SEPNET_DEEP_LAYOUT,
        block_batchnorms=1,
        name="sepnet_deep_one_bn",
        fused_batchnorm=fused_batchnorm,
    )


def _mix_block(x, dim, hidden, name, bn_momentum, fused):
    """``x + BN(project(gate(expand(BN(mixed_depthwise(x))))))``, the residual branch starting at zero.

    Every 1x1 step follows a depthwise one, so the block is two depthwise separable
    convolutions: (mixed k x k per channel, then the 1x1 expansion) and (3x3 per channel,
    then the 1x1 projection). The last BatchNorm's scale starts at 0, so each block starts
    as the identity and the network as a shallow one, which trains stably at a high rate.
    """
    shortcut = x
    x = MixedDepthwiseConv2D(name=f"{name}_mixdw")(x)
    x = _batch_norm_layer(fused)(momentum=bn_momentum, name=f"{name}_bn")(x)
    x = layers.Dense(2 * hidden, name=f"{name}_expand")(x)  # 1x1: the pointwise half of the mixed depthwise conv
    x = GatedGELU(name=f"{name}_gate")(x)
    x = _sep(x, dim, f"{name}_project")
    x = _batch_norm_layer(fused)(momentum=bn_momentum, gamma_initializer="zeros", name=f"{name}_project_bn")(x)
    return layers.Add(name=f"{name}_add")([shortcut, x])


def mixsepnet(
    widths: tuple[int, int] = (48, 72),
    hidden: tuple[int, int] = (60, 72),
    blocks: tuple[int, int] = (3, 3),
    stem_mid_filters: int = 16,
    bn_momentum: float = 0.9,
    name: str = "mixsepnet",
    fused_batchnorm: bool = False,
) -> keras.Model:
    """A separable-only network that spends its compute at full resolution (for GPUs).

    Layout (for 32x32 inputs): a spatially separable 3x3 stem (3x1 to ``stem_mid_filters``
    channels, 1x3 to ``widths[0]``); ``blocks[0]`` mixed blocks (``_mix_block``) at 32x32;
    a stride-2 depthwise separable convolution to ``widths[1]`` channels; ``blocks[1]``
    mixed blocks at 16x16; global average pooling and a linear classifier. Each block's
    depthwise step mixes 3x3, 5x5 and 7x7 kernels (and passes a quarter of the channels
    through), so that the 16x16 stage sees the whole image. The layout follows the best
    published tiny CIFAR-10 networks (few channels, most blocks at full resolution, a gated
    expansion), with every convolution separable. It is meant for GPUs: on the 2-core
    development CPU it trains far slower than SepNet (compare them with
    ``python scripts/benchmark.py --models mixsepnet sepnet --time-to 0``). With the
    series' recipe it has not beaten SepNet: see ``mixsepnet_h100`` in
    ``trained/results.json`` (105 epochs on an H100).
    """
    inputs = keras.Input(shape=(None, None, 3), name="image")
    x = normalize_rgb()(inputs)
    x = SpatiallySeparableConv2D(widths[0], 3, mid_filters=stem_mid_filters, use_bias=False, name="stem")(x)
    x = _batch_norm_layer(fused_batchnorm)(momentum=bn_momentum, name="stem_bn")(x)
    for stage, (dim, h, n_blocks) in enumerate(zip(widths, hidden, blocks, strict=True), start=1):
        if stage > 1:
            x = _bn_relu(_sep(x, dim, f"down{stage}", strides=2), f"down{stage}", bn_momentum, fused_batchnorm)
        for b in range(n_blocks):
            x = _mix_block(x, dim, h, f"stage{stage}_block{b + 1}", bn_momentum, fused_batchnorm)
    x = _batch_norm_layer(fused_batchnorm)(momentum=bn_momentum, name="head_bn")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(NUM_CLASSES, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name)


MODELS = {
    "sepnet": sepnet,
    "sepnet_deep": sepnet_deep,
    "sepnet_deep_one_bn": sepnet_deep_one_bn,
    "mixsepnet": mixsepnet,
    "sepnet_fast": sepnet_fast,
    "sepnet_fast_s2": sepnet_fast_s2,
    "sepnet_fast_8x8": sepnet_fast_8x8,
    "sepnet_fast_8x8_lean": sepnet_fast_8x8_lean,
    "sepnet_fast_w": sepnet_fast_w,
    "base_model": base_model,
    "base_model_strict": base_model_strict,
}


def has_fused_batchnorm_variant(name: str) -> bool:
    """Whether ``build(name, fused_batchnorm=True)`` exists: whether the network's factory takes
    ``fused_batchnorm``. The series' networks do; the base models keep the assignment's layers as
    they were."""
    return name in MODELS and "fused_batchnorm" in inspect.signature(MODELS[name]).parameters


def build(name: str, fused_batchnorm: bool = False) -> keras.Model:
    """Build a model of the series by name (see ``MODELS``).

    ``fused_batchnorm=True`` gives one of the series' networks ``layers.FusedBatchNormalization``
    instead of Keras' own ``BatchNormalization`` (the base models always have Keras' own).
    """
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    if not fused_batchnorm:
        return factory()
    if not has_fused_batchnorm_variant(name):
        raise ValueError(f"only the series' networks have a variant with the fused BatchNorm, not {name!r}")
    return factory(fused_batchnorm=True)
