"""Tests of cifarsep_lib.theory: cost formulas, rank-1 kernels, receptive fields."""

import keras
import matplotlib
import numpy as np
import pytest
from keras import layers, ops

from cifarsep_lib import models, theory
from cifarsep_lib.layers import SpatiallySeparableConv2D

matplotlib.use("Agg")


# ---------------------------------------------------------------- cost formulas


def test_standard_conv_cost_by_hand():
    # 3 -> 64 channels, 3x3: 3*3*3*64 = 1,728 weights + 64 biases; 32*32 positions.
    cost = theory.standard_conv_cost(3, 64, 3, 32, 32)
    assert cost["params"] == 1_792
    assert cost["mult_adds"] == 32 * 32 * 1_728 == 1_769_472
    assert theory.standard_conv_cost(3, 64, 3, 32, 32, bias=False)["params"] == 1_728


def test_spatially_separable_cost_by_hand():
    # 3x1 from 8 to 4 mid channels (96), then 1x3 from 4 to 16 (192), + 16 biases.
    cost = theory.spatially_separable_conv_cost(8, 16, 3, 10, 10, mid=4)
    assert cost["params"] == 96 + 192 + 16
    assert cost["mult_adds"] == 100 * (96 + 192)
    # mid defaults to c_out: 3*8*16 + 3*16*16 = 384 + 768.
    assert theory.spatially_separable_conv_cost(8, 16, 3, 1, 1, bias=False)["params"] == 1_152


def test_depthwise_separable_cost_by_hand():
    # The base model's sepconv2: 64 -> 64, 3x3: 576 depthwise + 4,096 pointwise + 64 biases.
    cost = theory.depthwise_separable_conv_cost(64, 64, 3, 32, 32)
    assert cost["params"] == 4_736
    assert cost["mult_adds"] == 1024 * (576 + 4_096) == 4_784_128
    assert theory.depthwise_separable_conv_cost(4, 6, 3, 2, 2, depth_multiplier=2)["params"] == 72 + 48 + 6


def test_cost_table_ratios():
    rows = theory.cost_table(64, 64, k=3, h=32, w=32)
    assert [r["kind"] for r in rows] == [theory.STANDARD, theory.SPATIAL, theory.DEPTHWISE]
    assert rows[0]["params_ratio"] == rows[0]["mult_adds_ratio"] == 1.0
    # Without biases the ratios are exactly 2/k and 1/c_out + 1/k^2.
    assert rows[1]["mult_adds_ratio"] == round(2 / 3, 3)
    assert rows[2]["mult_adds_ratio"] == round(1 / 64 + 1 / 9, 3)
    assert rows[2]["params"] < rows[1]["params"] < rows[0]["params"]


def _count(layer, c_in):
    layer.build((None, None, None, c_in))
    return layer.count_params()


@pytest.mark.parametrize(
    "c_in, c_out, k, multiplier, bias",
    [(3, 64, 3, 1, True), (64, 96, 3, 1, True), (32, 10, 1, 1, True), (16, 24, 5, 2, False)],
)
def test_depthwise_formula_matches_keras_separable_conv(c_in, c_out, k, multiplier, bias):
    layer = layers.SeparableConv2D(c_out, k, depth_multiplier=multiplier, use_bias=bias)
    expected = theory.depthwise_separable_conv_cost(c_in, c_out, k, 1, 1, depth_multiplier=multiplier, bias=bias)
    assert _count(layer, c_in) == expected["params"]


@pytest.mark.parametrize(
    "c_in, c_out, k, mid, bias", [(3, 24, 3, None, False), (8, 16, 5, 4, True), (1, 1, 3, 1, True)]
)
def test_spatial_formula_matches_custom_layer(c_in, c_out, k, mid, bias):
    layer = SpatiallySeparableConv2D(c_out, k, mid_filters=mid, use_bias=bias)
    expected = theory.spatially_separable_conv_cost(c_in, c_out, k, 1, 1, mid=mid, bias=bias)
    assert _count(layer, c_in) == expected["params"]


@pytest.mark.parametrize("c_in, c_out, k", [(3, 64, 3), (96, 32, 1)])
def test_standard_formula_matches_keras_conv2d(c_in, c_out, k):
    # A lone Conv2D layer, only to check the formula (no model of the series uses one).
    assert _count(layers.Conv2D(c_out, k), c_in) == theory.standard_conv_cost(c_in, c_out, k, 1, 1)["params"]


def test_format_table_aligns_and_separates_thousands():
    text = theory.format_table([{"name": "a", "params": 1234}, {"name": "bbb", "params": 5}])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "params"]
    assert lines[2] == "a      1,234"
    assert lines[3] == "bbb        5"
    assert theory.format_table([]) == ""


# ---------------------------------------------------------------- rank-1 kernels


def test_rank1_of_outer_product_is_exact():
    rng = np.random.default_rng(0)
    column, row = rng.normal(size=5), rng.normal(size=5)
    c, r, error = theory.rank1_approximation(np.outer(column, row))
    assert error < 1e-12
    np.testing.assert_allclose(np.outer(c, r), np.outer(column, row), atol=1e-12)


def test_sobel_is_exactly_rank_one():
    column, row, error = theory.rank1_approximation(theory.SOBEL_X)
    assert error < 1e-12
    assert np.linalg.matrix_rank(theory.SOBEL_X) == 1
    # Up to scale: smoothing [1, 2, 1] down the column, difference [-1, 0, 1] along the row.
    np.testing.assert_allclose(column / column[0], [1, 2, 1], atol=1e-12)
    np.testing.assert_allclose(row / row[2], [-1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(np.outer(column, row), theory.SOBEL_X, atol=1e-12)


def test_rank1_error_of_random_kernel_is_eckart_young():
    kernel = np.random.default_rng(1).normal(size=(3, 3))
    column, row, error = theory.rank1_approximation(kernel)
    s = np.linalg.svd(kernel, compute_uv=False)
    assert error == pytest.approx(np.sqrt(s[1] ** 2 + s[2] ** 2) / np.sqrt(np.sum(s**2)))
    assert 0.05 < error < 1
    # No other column/row pair does better, e.g. the kernel's own middle column and row.
    naive = np.outer(kernel[:, 1], kernel[1] / kernel[1, 1])
    assert np.linalg.norm(kernel - naive) / np.linalg.norm(kernel) >= error
    assert column[np.argmax(np.abs(column))] > 0


def test_rank1_of_laplacian_is_not_exact_and_bad_input_raises():
    laplacian = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    assert theory.rank1_approximation(laplacian)[2] > 0.1
    assert theory.rank1_approximation(np.zeros((3, 3)))[2] == 0.0
    with pytest.raises(ValueError):
        theory.rank1_approximation(np.ones((3, 3, 1)))


def test_spatially_separable_layer_is_conv_with_outer_product_kernel():
    column, row = np.array([1.0, 2.0, 1.0]), np.array([-1.0, 0.0, 1.0])
    layer = SpatiallySeparableConv2D(1, 3, mid_filters=1, use_bias=False)
    x = np.random.default_rng(2).normal(size=(2, 9, 7, 1)).astype("float32")
    layer(x)
    layer.set_weights([column.reshape(3, 1, 1, 1), row.reshape(1, 3, 1, 1)])
    kernel = np.outer(column, row).reshape(3, 3, 1, 1).astype("float32")
    expected = ops.convert_to_numpy(ops.conv(x, kernel, padding="same"))
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), expected, atol=1e-5)


# ---------------------------------------------------------------- receptive fields


def test_base_model_receptive_fields_match_hand_values():
    rows = {r["name"]: r for r in theory.receptive_fields(models.base_model())}
    convs = ["sepconv1", "sepconv2", "sepconv3", "pool1", "sepconv4", "sepconv5", "pool2", "sepconv6", "sepconv7"]
    assert [rows[n]["rf"] for n in convs] == [3, 5, 7, 8, 12, 16, 18, 26, 34]
    assert rows["sepconv7"]["rf"] == 34 and rows["sepconv7"]["jump"] == 4
    assert rows["sepconv_out"]["rf"] == 34  # a 1x1 convolution adds nothing
    assert rows["trans1"]["kernel"] == 1 and rows["trans1"]["rf"] == 8
    assert rows["pool1"]["output_shape"] == (16, 16, 96)
    assert rows["sepconv7"]["output_shape"] == (8, 8, 192)
    assert rows["softmax"]["output_shape"] == (10,)


def test_receptive_field_params_add_up_to_model():
    for model in (models.base_model(), models.base_model_strict(), models.sepnet()):
        rows = theory.receptive_fields(model)
        assert [r["name"] for r in rows] == [layer.name for layer in model.layers]
        assert sum(r["params"] for r in rows) == model.count_params()


def test_sepnet_receptive_fields_strides_and_residuals():
    rows = {r["name"]: r for r in theory.receptive_fields(models.sepnet())}
    assert rows["stem"]["rf"] == 3 and rows["stem"]["type"] == "SpatiallySeparableConv2D"
    assert rows["down1"]["rf"] == 5 and rows["down1"]["jump"] == 2
    assert rows["down1"]["output_shape"] == (16, 16, 64)
    # Add: the widest of the shortcut (5) and the two convolutions (13); each block adds 8.
    assert rows["stage1_block1_add"]["rf"] == 13 and rows["stage1_block2_add"]["rf"] == 21
    assert rows["down3"]["rf"] == 65 and rows["down3"]["output_shape"] == (4, 4, 160)
    assert rows["classifier"]["output_shape"] == (10,)
    # The shallower sepnet_fast sees less: one block per stage, so 41 pixels before the last stage.
    fast = {r["name"]: r for r in theory.receptive_fields(models.sepnet_fast())}
    assert fast["down3"]["rf"] == 41 and fast["down3"]["output_shape"] == (4, 4, 192)


def _linear_chain():
    """Window layers with positive weights and no nonlinearity: every pixel in the field matters."""
    inputs = keras.Input(shape=(None, None, 1))
    x = layers.SeparableConv2D(2, 3, padding="same", depthwise_initializer="ones", pointwise_initializer="ones")(inputs)
    x = layers.AveragePooling2D(2)(x)
    x = SpatiallySeparableConv2D(2, 3, kernel_initializer="ones")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", depthwise_initializer="ones")(x)
    x = layers.DepthwiseConv2D(3, dilation_rate=2, padding="same", depthwise_initializer="ones")(x)
    x = layers.BatchNormalization()(x)
    return keras.Model(inputs, x)


def _measured_support(model, size: int = 64) -> np.ndarray:
    """The input columns whose pixels change the output value in the middle of the map."""
    batch = np.zeros((size, size, size, 1), "float32")
    for c in range(size):
        batch[c, :, c] = 1.0
    out = ops.convert_to_numpy(model(batch))
    centre = out.shape[2] // 2
    return np.flatnonzero(np.abs(out[:, centre, centre, 0]) > 0)


def test_receptive_field_equals_measured_support():
    model = _linear_chain()
    rows = theory.receptive_fields(model, input_size=64)
    rf, jump = rows[-1]["rf"], rows[-1]["jump"]
    # 1 +2 (3x3) =3, +1 (pool 2) =4, +2*2 (3x3 at jump 2) =8, +2*2 =12, +(5-1)*4 (dilated 3x3) =28.
    assert (rf, jump) == (28, 4)
    touched = _measured_support(model)
    assert len(touched) == rf
    assert touched[-1] - touched[0] + 1 == rf


def test_strided_spatially_separable_receptive_field_and_cost():
    inputs = keras.Input(shape=(None, None, 1))
    x = SpatiallySeparableConv2D(2, 3, strides=2, kernel_initializer="ones")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", depthwise_initializer="ones")(x)
    model = keras.Model(inputs, x)
    rows = theory.receptive_fields(model, input_size=64)
    assert (rows[1]["rf"], rows[1]["jump"]) == (3, 2) and (rows[-1]["rf"], rows[-1]["jump"]) == (7, 2)
    assert len(_measured_support(model)) == 7
    # The stride-2 stem of sepnet_fast_s2 on a 32x32 image: the 3x1 step (3 -> 32 channels) at
    # 16x32 positions, the 1x3 step (32 -> 32) at 16x16.
    stem = {r["name"]: r for r in theory.layer_costs(models.sepnet_fast_s2())}["stem"]
    assert stem["output_shape"] == (16, 16, 32)
    assert stem["mult_adds"] == 16 * 32 * 3 * 3 * 32 + 16 * 16 * 3 * 32 * 32


def test_unknown_spatial_layer_is_refused():
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, layers.UpSampling2D()(inputs))
    with pytest.raises(NotImplementedError):
        theory.receptive_fields(model)


def test_layer_costs_of_base_model():
    model = models.base_model()
    rows = {r["name"]: r for r in theory.layer_costs(model)}
    assert rows["sepconv2"]["mult_adds"] == theory.depthwise_separable_conv_cost(64, 64, 3, 32, 32)["mult_adds"]
    assert rows["trans1"]["mult_adds"] == theory.standard_conv_cost(96, 32, 1, 16, 16)["mult_adds"]
    assert rows["bn1"]["activations"] == 32 * 32 * 64 and rows["bn1"]["mult_adds"] == 0
    stem = {r["name"]: r for r in theory.layer_costs(models.sepnet())}["stem"]
    assert stem["mult_adds"] == theory.spatially_separable_conv_cost(3, 24, 3, 32, 32, mid=8)["mult_adds"]


def test_cost_by_resolution_groups_the_work():
    base = {r["resolution"]: r for r in theory.cost_by_resolution(models.base_model())}
    assert list(base) == ["32x32", "16x16", "8x8", "vector"]
    assert base["32x32"]["conv_layers"] == 3
    assert base["32x32"]["mult_adds"] == 224_256 + 4_784_128 + 6_881_280
    # Rescaling (3 channels), then ReLU, BatchNorm and Dropout on 64, 64 and 96 channels.
    assert base["32x32"]["elementwise"] == 32 * 32 * (3 + 3 * (64 + 64 + 96))
    sepnet = {r["resolution"]: r for r in theory.cost_by_resolution(models.sepnet())}
    # The point of SepNet's layout: far less elementwise work at full resolution.
    assert sepnet["32x32"]["elementwise"] < base["32x32"]["elementwise"] / 10
    # Its thin stem (3 -> 8 -> 24 channels) also keeps the 32x32 multiply-adds small.
    assert sepnet["32x32"]["mult_adds"] < base["32x32"]["mult_adds"] / 10


# ---------------------------------------------------------------- figures


def test_figures_are_returned():
    import matplotlib.pyplot as plt

    rows = theory.receptive_fields(models.base_model())
    figures = [
        theory.plot_cost_vs_channels(channels=(8, 16, 32)),
        theory.plot_cost_vs_kernel_size(kernel_sizes=(1, 3, 5)),
        theory.plot_rank1(theory.SOBEL_X),
        theory.plot_receptive_field_1d(),
        theory.plot_receptive_fields(rows),
        theory.plot_receptive_field_boxes(rows, image=np.zeros((32, 32, 3))),
        theory.plot_layer_params(models.base_model()),
        theory.plot_cost_by_resolution([models.base_model(), models.sepnet()]),
    ]
    for fig in figures:
        assert isinstance(fig, matplotlib.figure.Figure)
        plt.close(fig)
