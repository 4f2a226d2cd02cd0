"""Tests of cifarsep_lib.theory: cost formulas, rank-1 kernels, and their figures."""

import matplotlib
import numpy as np
import pytest
from keras import layers, ops

from cifarsep_lib import theory
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


# ---------------------------------------------------------------- figures


@pytest.mark.parametrize(
    ("spec", "pixels"),
    [
        (None, 10),  # the default: 3 + 2 (conv) + 1 (pool 2) + 2 x 2 (conv after the stride) = 10
        ((("conv 5", 5, 1),), 5),
        ((("conv 3", 3, 2), ("conv 3", 3, 1)), 7),  # 3, then 2 more taps 2 pixels apart
    ],
)
def test_receptive_field_figure_traces_the_hand_counted_field(spec, pixels):
    import matplotlib.pyplot as plt

    fig = theory.plot_receptive_field_1d() if spec is None else theory.plot_receptive_field_1d(spec)
    ax = fig.axes[0]
    assert ax.get_title() == f"one value at the top sees {pixels} input pixels"
    assert f"RF {pixels}," in [t.get_text() for t in ax.texts][-1]  # the top level's annotation
    plt.close(fig)


def test_figures_are_returned():
    import matplotlib.pyplot as plt

    figures = [
        theory.plot_cost_vs_channels(channels=(8, 16, 32)),
        theory.plot_cost_vs_kernel_size(kernel_sizes=(1, 3, 5)),
        theory.plot_rank1(theory.SOBEL_X),
        theory.plot_receptive_field_1d(),
    ]
    for fig in figures:
        assert isinstance(fig, matplotlib.figure.Figure)
        plt.close(fig)
