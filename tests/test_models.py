import keras
import numpy as np
import pytest
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
    convs = [
        (layer.name, layer.output.shape[1:]) for layer in model.layers if "conv" in layer.name or "trans" in layer.name
    ]
    assert [name for name, _ in convs] == [
        "sepconv1", "sepconv2", "sepconv3", "trans1", "sepconv4",
        "sepconv5", "sepconv6", "sepconv7", "sepconv_out",
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


@pytest.mark.parametrize("name", ["sepnet", "mixsepnet", "sepnet_fast", "base_model_strict"])
def test_shipped_architectures_pass_the_rules(name):
    report = rules.check_rules(models.build(name), verbose=False)
    assert report.passed


def test_rules_find_conv2d_in_nested_models():
    inner = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="hidden_conv")], name="inner")
    outer = keras.Sequential([keras.Input((8, 8, 3)), inner, keras.layers.GlobalAveragePooling2D()])
    assert rules.conv2d_layers(outer) == ["hidden_conv"]
    with pytest.raises(rules.RulesViolation):
        rules.check_rules(outer, verbose=False)


def test_rules_reject_too_many_parameters():
    big = keras.Sequential([keras.Input((100,)), keras.layers.Dense(1000)])
    with pytest.raises(rules.RulesViolation, match="parameters"):
        rules.check_rules(big, verbose=False)


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
