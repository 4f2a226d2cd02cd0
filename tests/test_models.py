import keras
import numpy as np
import pytest
from conftest import batch_norm_kinds
from keras import ops

from cifarsep_lib import layers, models, rules


def _counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable + non_trainable, trainable, non_trainable


def test_base_model_parameter_counts_match_the_assignment():
    assert _counts(models.base_model()) == (32_261, 31_173, 1_088)


def test_base_model_layer_order_and_shapes():
    model = models.base_model()
    names = [layer.name for layer in model.layers if "conv" in layer.name or "trans" in layer.name]
    # The model takes any image size; its shapes on a 32x32 image: three layers at full
    # resolution, the transition after the first pooling, the last three after the second.
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    outputs = probe(np.zeros((1, 32, 32, 3), "float32"))
    shapes = {name: tuple(out.shape[1:]) for name, out in zip(names, outputs, strict=True)}
    assert shapes == {
        "sepconv1": (32, 32, 64), "sepconv2": (32, 32, 64), "sepconv3": (32, 32, 96),
        "trans1": (16, 16, 32), "sepconv4": (16, 16, 32), "sepconv5": (16, 16, 64),
        "sepconv6": (8, 8, 32), "sepconv7": (8, 8, 192), "sepconv_out": (8, 8, 10),
    }  # fmt: skip
    assert names == [
        "sepconv1", "sepconv2", "sepconv3", "trans1", "sepconv4", "sepconv5", "sepconv6", "sepconv7", "sepconv_out",
    ]  # fmt: skip
    assert model.get_layer("trans1").__class__ is keras.layers.Conv2D
    out = model(np.zeros((2, 32, 32, 3), "float32"))
    assert out.shape == (2, 10)


def test_base_model_breaks_rule_three_and_strict_variant_does_not():
    with pytest.raises(rules.RulesViolation, match="trans1"):
        rules.check_rules(models.base_model(), verbose=False)
    report = rules.check_rules(models.base_model(), allow_conv2d=True, verbose=False)
    assert report.conv2d == ["trans1"]
    strict = rules.check_rules(models.base_model_strict(), verbose=False)
    assert strict.params == 32_261 + 96 and strict.conv2d == []


# Every model of the series but the assignment's own base model, whose 1x1 Conv2D transition breaks rule 3.
@pytest.mark.parametrize("name", [name for name in models.MODELS if name != "base_model"])
def test_shipped_architectures_pass_the_rules(name):
    report = rules.check_rules(models.build(name), verbose=False)
    assert report.passed


def _output_shape(model, layer_name):
    """The shape of ``layer_name``'s output for one 32x32 image (the models take any size)."""
    probe = keras.Model(model.input, model.get_layer(layer_name).output)
    return tuple(probe(np.zeros((1, 32, 32, 3), "float32")).shape[1:])


def test_sepnet_deep_moves_capacity_from_4x4_to_16x16():
    deep, plain = models.build("sepnet_deep"), models.build("sepnet")
    assert deep.count_params() == 96_234 < rules.MAX_PARAMS
    assert _output_shape(deep, "stage1_block3_out") == (16, 16, 64)  # a third block at 16x16
    assert "stage1_block3_out" not in [layer.name for layer in plain.layers]
    assert _output_shape(deep, "down3_relu") == (4, 4, 128)
    assert _output_shape(plain, "down3_relu") == (4, 4, 160)


def test_sepnet_fast_8x8_keeps_its_only_residual_block_at_8x8():
    lite, s2 = models.build("sepnet_fast_8x8"), models.build("sepnet_fast_s2")
    assert lite.count_params() == 90_778 < rules.MAX_PARAMS
    assert _output_shape(lite, "down1_relu") == _output_shape(s2, "down1_relu") == (16, 16, 64)
    assert "stage1_block1_out" in [layer.name for layer in s2.layers]
    assert not any(layer.name.startswith("stage1_") for layer in lite.layers)
    assert _output_shape(lite, "stage2_block1_out") == (8, 8, 144)
    assert _output_shape(lite, "down3_relu") == (4, 4, 176)


def test_sepnet_can_drop_the_stems_batchnorm_and_relu():
    layout = models.SEPNET_FAST_S2_LAYOUT
    plain, linear = models.sepnet(**layout), models.sepnet(**layout, stem_activation=False)
    names = [layer.name for layer in linear.layers]
    assert "stem_bn" not in names and "stem_relu" not in names
    assert plain.count_params() - linear.count_params() == 4 * layout["stem_filters"]  # BatchNorm's 4 per channel
    assert _output_shape(linear, "down1_relu") == (16, 16, 64)


def test_residual_blocks_with_one_batchnorm_start_as_the_identity():
    model = models.sepnet(**models.SEPNET_FAST_S2_LAYOUT, block_batchnorms=1)
    names = [layer.name for layer in model.layers]
    assert not any(name.endswith("_b_bn") for name in names) and "stage1_block1_a_bn" in names
    # The branch's last 1x1 weights start at zero: the block passes its (post-ReLU) input through.
    ends = [model.get_layer(name).output for name in ("down1_relu", "stage1_block1_out")]
    probe = keras.Model(model.input, ends)
    block_in, block_out = probe(np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32"))
    assert float(ops.max(block_in)) > 0
    np.testing.assert_allclose(ops.convert_to_numpy(block_out), ops.convert_to_numpy(block_in))
    with pytest.raises(ValueError, match="block_batchnorms"):
        models.sepnet(block_batchnorms=0)


def test_sepnet_fast_8x8_lean_is_sepnet_fast_8x8_without_three_elementwise_layers():
    lean, lite = models.build("sepnet_fast_8x8_lean"), models.build("sepnet_fast_8x8")
    assert lean.count_params() == 90_074 < rules.MAX_PARAMS
    missing = {layer.name for layer in lite.layers} - {layer.name for layer in lean.layers}
    assert missing == {"stem_bn", "stem_relu", "stage2_block1_b_bn"}
    assert {layer.name for layer in lean.layers} <= {layer.name for layer in lite.layers}


def test_sepnet_deep_one_bn_is_sepnet_deep_without_each_blocks_second_batchnorm():
    one_bn, deep = models.build("sepnet_deep_one_bn"), models.build("sepnet_deep")
    assert one_bn.count_params() == 94_698 < rules.MAX_PARAMS
    missing = {layer.name for layer in deep.layers} - {layer.name for layer in one_bn.layers}
    blocks = [f"stage1_block{b}" for b in (1, 2, 3)] + [f"stage2_block{b}" for b in (1, 2)]
    assert missing == {f"{block}_b_bn" for block in blocks}
    assert {layer.name for layer in one_bn.layers} <= {layer.name for layer in deep.layers}


def test_sepnet_can_run_stage_one_at_full_resolution_with_larger_kernels():
    model = models.sepnet(widths=(48, 96, 160), full_resolution_stage1=True, kernel_size=5)
    assert _output_shape(model, "stage1_block1_out") == (32, 32, 48)
    assert _output_shape(model, "down2_relu") == (16, 16, 96)
    assert tuple(model.get_layer("stage1_block1_a").depthwise_kernel.shape) == (5, 5, 48, 1)
    assert tuple(model.get_layer("down1").depthwise_kernel.shape) == (3, 3, 24, 1)  # only the blocks' kernels grow
    assert model(np.zeros((2, 32, 32, 3), "float32")).shape == (2, 10)


def test_rules_find_conv2d_in_nested_models():
    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="hidden_conv")], name="inner")
    outer = keras.Sequential([keras.Input((8, 8, 3)), inner, keras.layers.GlobalAveragePooling2D()])
    assert rules.conv2d_layers(outer) == ["hidden_conv"]
    with pytest.raises(rules.RulesViolation):
        rules.check_rules(outer, verbose=False)


def test_rules_find_a_conv2d_held_by_a_custom_layer_and_a_transposed_one():
    class Holder(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(4, 3, padding="same", name="held_conv")

        def call(self, x):
            return self.conv(x)

    inputs = keras.Input((8, 8, 3))
    assert rules.conv2d_layers(keras.Model(inputs, Holder()(inputs))) == ["held_conv"]
    # A stride-1 Conv2DTranspose is a full 3x3 convolution, though not a Conv2D subclass.
    transposed = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2DTranspose(4, 3, name="tconv")])
    with pytest.raises(rules.RulesViolation, match="tconv"):
        rules.check_rules(transposed, verbose=False)


def test_rules_reject_too_many_parameters():
    big = keras.Sequential([keras.Input((100,)), keras.layers.Dense(1000)])
    with pytest.raises(rules.RulesViolation, match="parameters"):
        rules.check_rules(big, verbose=False)


def test_rules_limit_is_strictly_under_100k():
    """The assignment says *under* 100,000: exactly 100,000 fails, 99,000 passes."""
    exactly = keras.Sequential([keras.Input((99,)), keras.layers.Dense(1000)])  # 99,000 weights + 1,000 biases
    with pytest.raises(rules.RulesViolation, match="100,000 parameters"):
        rules.check_rules(exactly, verbose=False)
    under = keras.Sequential([keras.Input((98,)), keras.layers.Dense(1000)])
    assert rules.check_rules(under, verbose=False).passed


def test_models_take_any_image_size():
    model = models.sepnet()
    assert model(np.zeros((1, 48, 40, 3), "float32")).shape == (1, 10)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="sepnet"):
        models.build("resnet50")


def test_spatially_separable_equals_rank1_convolution():
    rng = np.random.default_rng(0)
    column, row = rng.normal(size=5).astype("float32"), rng.normal(size=5).astype("float32")
    layer = layers.SpatiallySeparableConv2D(1, 5, mid_filters=1, use_bias=False)
    image = rng.normal(size=(2, 16, 16, 1)).astype("float32")
    layer(image)  # build
    layer.set_weights([column.reshape(5, 1, 1, 1), row.reshape(1, 5, 1, 1)])
    full_kernel = np.outer(column, row).reshape(5, 5, 1, 1)
    expected = ops.convert_to_numpy(ops.conv(image, full_kernel, padding="same"))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(image)), expected, atol=1e-5)


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_strided_spatially_separable_equals_strided_rank1_convolution(padding):
    """Stride s on both steps is the k x k rank-1 convolution with stride s (odd sizes too)."""
    rng = np.random.default_rng(7)
    column, row = rng.normal(size=3).astype("float32"), rng.normal(size=3).astype("float32")
    layer = layers.SpatiallySeparableConv2D(1, 3, mid_filters=1, use_bias=False, strides=2, padding=padding)
    image = rng.normal(size=(2, 15, 12, 1)).astype("float32")
    layer(image)
    layer.set_weights([column.reshape(3, 1, 1, 1), row.reshape(1, 3, 1, 1)])
    full_kernel = np.outer(column, row).reshape(3, 3, 1, 1)
    expected = ops.convert_to_numpy(ops.conv(image, full_kernel, strides=2, padding=padding))
    out = ops.convert_to_numpy(layer(image))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert layer.compute_output_shape(image.shape) == out.shape
    assert layers.SpatiallySeparableConv2D.from_config(layer.get_config()).strides == 2


def test_strided_stem_halves_the_image_before_stage_one():
    model = models.sepnet_fast_s2()
    assert model.get_layer("stem").compute_output_shape((1, 32, 32, 3)) == (1, 16, 16, 32)
    probe = keras.Model(model.input, [model.get_layer(n).output for n in ("stem", "down1", "down2", "down3")])
    sizes = [o.shape[1] for o in probe(np.zeros((1, 32, 32, 3), "float32"))]
    assert sizes == [16, 16, 8, 4]  # stage 1 keeps the stem's 16x16, later stages halve as before


def test_spatially_separable_params_and_valid_padding():
    layer = layers.SpatiallySeparableConv2D(8, 3, mid_filters=4, padding="valid")
    out = layer(np.zeros((1, 10, 10, 3), "float32"))
    assert out.shape == (1, 8, 8, 8)
    assert layer.count_params() == 3 * 3 * 4 + 3 * 4 * 8 + 8
    assert layer.compute_output_shape((1, 10, 10, 3)) == (1, 8, 8, 8)


def test_spatially_separable_round_trips_through_keras_file(tmp_path):
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layers.SpatiallySeparableConv2D(4, 3, name="ss")(inputs))
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    assert loaded.get_layer("ss").get_config()["kernel_size"] == 3


def test_mixed_depthwise_keeps_first_group_and_convolves_the_others_separately():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 12, 12, 8)).astype("float32")
    layer = layers.MixedDepthwiseConv2D(kernels=((3, 1), (5, 2), (3, 3)))
    out = ops.convert_to_numpy(layer(image))
    assert out.shape == image.shape and layer.count_params() == 2 * (9 + 25 + 9)
    np.testing.assert_array_equal(out[..., :2], image[..., :2])  # the first group passes through
    for i, ((k, d), conv) in enumerate(zip(layer.kernels, layer.convs, strict=True)):
        group = slice(2 * (i + 1), 2 * (i + 2))
        reference = keras.layers.DepthwiseConv2D(k, dilation_rate=d, padding="same", use_bias=False)
        reference(image[..., group])
        reference.set_weights(conv.get_weights())
        np.testing.assert_allclose(out[..., group], ops.convert_to_numpy(reference(image[..., group])), atol=1e-5)


def test_mixed_depthwise_without_a_kept_group_convolves_every_channel():
    image = np.random.default_rng(1).normal(size=(1, 6, 6, 6)).astype("float32")
    layer = layers.MixedDepthwiseConv2D(kernels=((3, 1), (5, 1)), keep_first_group=False)
    out = ops.convert_to_numpy(layer(image))
    assert out.shape == image.shape and layer.count_params() == 3 * (9 + 25)  # two groups of three channels
    assert not np.allclose(out[..., :3], image[..., :3])  # no channel passes through
    assert layers.MixedDepthwiseConv2D.from_config(layer.get_config()).keep_first_group is False


def test_mixed_depthwise_needs_equal_groups():
    with pytest.raises(ValueError, match="equal groups"):
        layers.MixedDepthwiseConv2D()(np.zeros((1, 8, 8, 6), "float32"))  # 6 channels, 4 groups


def test_gated_gelu_halves_channels():
    x = np.random.default_rng(2).normal(size=(3, 4, 4, 6)).astype("float32")
    out = ops.convert_to_numpy(layers.GatedGELU()(x))
    expected = ops.convert_to_numpy(ops.gelu(x[..., :3])) * x[..., 3:]
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_mixsepnet_round_trips_through_keras_file(tmp_path):
    model = models.mixsepnet()
    path = tmp_path / "mix.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = np.random.default_rng(3).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert rules.conv2d_layers(loaded) == []


def _batch_norm_pair(momentum=0.5, channels=6, rank=4):
    """A Keras BatchNormalization and a FusedBatchNormalization with the same (non-default) weights."""
    rng = np.random.default_rng(4)
    gamma, beta = rng.normal(1, 0.3, channels).astype("float32"), rng.normal(0, 0.3, channels).astype("float32")
    pair = keras.layers.BatchNormalization(momentum=momentum), layers.FusedBatchNormalization(momentum=momentum)
    for bn in pair:
        bn.build((None,) * (rank - 1) + (channels,))
        bn.gamma.assign(gamma)
        bn.beta.assign(beta)
    return pair


def test_fused_batch_norm_trains_like_keras_batch_norm(monkeypatch):
    """Same outputs, gradients and moving statistics as the parent, in training and inference mode."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the fused kernel is TensorFlow's; other backends run the parent's code")
    import tensorflow as tf

    # Count the fused kernel's calls: a layer that always handed over to its parent would pass the rest.
    fused_kernel, calls = layers._tf_fused_batch_norm, []
    monkeypatch.setattr(layers, "_tf_fused_batch_norm", lambda *args: calls.append(1) or fused_kernel(*args))
    x = tf.constant(np.random.default_rng(5).normal(2, 3, size=(8, 5, 5, 6)).astype("float32"))
    reference, fused = _batch_norm_pair()
    assert fused._fusable(x, True, None) and not fused._fusable(x, False, None)
    grads, outputs = [], []
    for bn in (reference, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = bn(x, training=True)
            loss = tf.reduce_sum(y * y * x)  # weights every output differently
        outputs.append(y.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, [x, bn.gamma, bn.beta])])
    np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
    for g_fused, g_reference in zip(grads[1], grads[0], strict=True):
        np.testing.assert_allclose(g_fused, g_reference, rtol=1e-4, atol=1e-3)
    # The moving statistics moved (momentum 0.5) and moved alike: the biased batch variance.
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-6)
    assert not np.allclose(fused.moving_variance.numpy(), 1.0)
    np.testing.assert_allclose(fused(x).numpy(), reference(x).numpy(), atol=1e-5)
    assert len(calls) == 1  # the training-mode call; inference uses the moving statistics


def test_frozen_fused_batch_norm_uses_its_moving_statistics():
    """A frozen layer (fine-tuning) normalises with its moving statistics in training mode too, like Keras'."""
    reference, fused = _batch_norm_pair()
    for bn in (reference, fused):
        bn.trainable = False
    x = np.random.default_rng(8).normal(2, 3, (8, 5, 5, 6)).astype("float32")
    assert not fused._fusable(x, True, None)
    np.testing.assert_allclose(
        ops.convert_to_numpy(fused(x, training=True)), ops.convert_to_numpy(reference(x, training=True)), atol=1e-5
    )
    np.testing.assert_allclose(ops.convert_to_numpy(fused.moving_mean), 0.0)


def test_fused_batch_norm_falls_back_where_the_kernel_does_not_apply():
    reference, fused = _batch_norm_pair(channels=4, rank=3)
    x = np.random.default_rng(6).normal(size=(3, 7, 4)).astype("float32")  # 3-D: not the fused kernel's layout
    assert not fused._fusable(x, True, None)
    np.testing.assert_allclose(
        ops.convert_to_numpy(fused(x, training=True)), ops.convert_to_numpy(reference(x, training=True)), atol=1e-6
    )


@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_model_uses_keras_batch_norm_by_default(name):
    assert batch_norm_kinds(models.build(name)) == {"keras"}


@pytest.mark.parametrize("name", [name for name in models.MODELS if models.has_fused_batchnorm_variant(name)])
def test_fused_batch_norm_variant_differs_only_in_that_layer(name):
    """``build(name, fused_batchnorm=True)``: same layers, names and weights, the fused BatchNorm."""
    plain, fused = models.build(name), models.build(name, fused_batchnorm=True)
    assert [layer.name for layer in fused.layers] == [layer.name for layer in plain.layers]
    assert fused.count_params() == plain.count_params()
    assert batch_norm_kinds(fused) == {"fused"}
    fused.set_weights(plain.get_weights())  # a trained model's weights load into either


def test_base_models_have_no_fused_batch_norm_variant():
    with pytest.raises(ValueError, match="series' networks"):
        models.build("base_model", fused_batchnorm=True)
    with_variant = {name for name in models.MODELS if models.has_fused_batchnorm_variant(name)}
    assert with_variant == set(models.MODELS) - {"base_model", "base_model_strict"}
    assert not models.has_fused_batchnorm_variant("resnet50")


def test_sepnet_gradients_agree_with_either_batch_norm():
    """A whole training step's loss and gradients are the same with the fused or Keras' BatchNorm.

    Guards the claim that the two layers differ in speed only: the per-layer test above
    checks one BatchNorm, this one all of sepnet_fast's together, on the same weights and batch.
    """
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the fused kernel is TensorFlow's; other backends run the parent's code")
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    fused = models.build("sepnet_fast", fused_batchnorm=True)
    plain = models.build("sepnet_fast")
    plain.set_weights(fused.get_weights())
    rng = np.random.default_rng(4)
    x = tf.constant(rng.integers(0, 256, size=(32, 32, 32, 3)).astype("float32"))
    y = tf.one_hot(rng.integers(0, 10, size=32), 10)
    losses, grads = [], []
    for model in (fused, plain):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(keras.losses.categorical_crossentropy(y, model(x, training=True)))
        losses.append(float(loss))
        grads.append(tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(loss, model.trainable_weights)], 0))
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    cosine = tf.reduce_sum(grads[0] * grads[1]) / (tf.norm(grads[0]) * tf.norm(grads[1]))
    assert float(tf.norm(grads[1])) > 0 and float(cosine) > 0.99999
