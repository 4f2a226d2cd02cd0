"""Tests of cifarsep_lib.anatomy: a model's receptive fields and costs, layer by layer."""

import keras
import matplotlib
import numpy as np
import pytest
from keras import layers, ops

from cifarsep_lib import anatomy, models, theory
from cifarsep_lib.layers import SpatiallySeparableConv2D

matplotlib.use("Agg")


# ---------------------------------------------------------------- receptive fields


def test_base_model_receptive_fields_match_hand_values():
    rows = {r["name"]: r for r in anatomy.receptive_fields(models.base_model())}
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
        rows = anatomy.receptive_fields(model)
        assert [r["name"] for r in rows] == [layer.name for layer in model.layers]
        assert sum(r["params"] for r in rows) == model.count_params()


def test_sepnet_receptive_fields_strides_and_residuals():
    rows = {r["name"]: r for r in anatomy.receptive_fields(models.sepnet())}
    assert rows["stem"]["rf"] == 3 and rows["stem"]["type"] == "SpatiallySeparableConv2D"
    assert rows["down1"]["rf"] == 5 and rows["down1"]["jump"] == 2
    assert rows["down1"]["output_shape"] == (16, 16, 64)
    # Add: the widest of the shortcut (5) and the two convolutions (13); each block adds 8.
    assert rows["stage1_block1_add"]["rf"] == 13 and rows["stage1_block2_add"]["rf"] == 21
    assert rows["down3"]["rf"] == 65 and rows["down3"]["output_shape"] == (4, 4, 160)
    assert rows["classifier"]["output_shape"] == (10,)
    # The shallower sepnet_fast sees less: one block per stage, so 41 pixels before the last stage.
    fast = {r["name"]: r for r in anatomy.receptive_fields(models.sepnet_fast())}
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
    rows = anatomy.receptive_fields(model, input_size=64)
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
    rows = anatomy.receptive_fields(model, input_size=64)
    assert (rows[1]["rf"], rows[1]["jump"]) == (3, 2) and (rows[-1]["rf"], rows[-1]["jump"]) == (7, 2)
    assert len(_measured_support(model)) == 7
    # The stride-2 stem of sepnet_fast_s2 on a 32x32 image: the 3x1 step (3 -> 32 channels) at
    # 16x32 positions, the 1x3 step (32 -> 32) at 16x16.
    stem = {r["name"]: r for r in anatomy.layer_costs(models.sepnet_fast_s2())}["stem"]
    assert stem["output_shape"] == (16, 16, 32)
    assert stem["mult_adds"] == 16 * 32 * 3 * 3 * 32 + 16 * 16 * 3 * 32 * 32


def test_valid_padding_spatially_separable_cost_counts_real_positions():
    # 8x8x3 in, valid padding: the 3x1 step (3 -> 4 channels) gives 6x8, the 1x3 step (4 -> 5) 6x6.
    inputs = keras.Input(shape=(8, 8, 3))
    model = keras.Model(inputs, SpatiallySeparableConv2D(5, 3, mid_filters=4, padding="valid")(inputs))
    row = anatomy.layer_costs(model, input_size=8)[-1]
    assert row["output_shape"] == (6, 6, 5)
    assert row["mult_adds"] == 6 * 8 * 3 * 3 * 4 + 6 * 6 * 3 * 4 * 5


def test_unknown_spatial_layer_is_refused():
    inputs = keras.Input(shape=(None, None, 3))
    model = keras.Model(inputs, layers.UpSampling2D()(inputs))
    with pytest.raises(NotImplementedError):
        anatomy.receptive_fields(model)


def test_layer_costs_of_base_model():
    model = models.base_model()
    rows = {r["name"]: r for r in anatomy.layer_costs(model)}
    assert rows["sepconv2"]["mult_adds"] == theory.depthwise_separable_conv_cost(64, 64, 3, 32, 32)["mult_adds"]
    assert rows["trans1"]["mult_adds"] == theory.standard_conv_cost(96, 32, 1, 16, 16)["mult_adds"]
    assert rows["bn1"]["activations"] == 32 * 32 * 64 and rows["bn1"]["mult_adds"] == 0
    stem = {r["name"]: r for r in anatomy.layer_costs(models.sepnet())}["stem"]
    assert stem["mult_adds"] == theory.spatially_separable_conv_cost(3, 24, 3, 32, 32, mid=8)["mult_adds"]


def test_cost_by_resolution_groups_the_work():
    base = {r["resolution"]: r for r in anatomy.cost_by_resolution(models.base_model())}
    assert list(base) == ["32x32", "16x16", "8x8", "vector"]
    assert base["32x32"]["conv_layers"] == 3
    assert base["32x32"]["mult_adds"] == 224_256 + 4_784_128 + 6_881_280
    # Rescaling (3 channels), then ReLU, BatchNorm and Dropout on 64, 64 and 96 channels.
    assert base["32x32"]["elementwise"] == 32 * 32 * (3 + 3 * (64 + 64 + 96))
    sepnet = {r["resolution"]: r for r in anatomy.cost_by_resolution(models.sepnet())}
    # The point of SepNet's layout: far less elementwise work at full resolution.
    assert sepnet["32x32"]["elementwise"] < base["32x32"]["elementwise"] / 10
    # Its thin stem (3 -> 8 -> 24 channels) also keeps the 32x32 multiply-adds small.
    assert sepnet["32x32"]["mult_adds"] < base["32x32"]["mult_adds"] / 10


# ---------------------------------------------------------------- figures


def test_figures_are_returned():
    import matplotlib.pyplot as plt

    rows = anatomy.receptive_fields(models.base_model())
    figures = [
        anatomy.plot_receptive_fields(rows),
        anatomy.plot_receptive_field_boxes(rows, image=np.zeros((32, 32, 3))),
        anatomy.plot_layer_params(models.base_model()),
        anatomy.plot_cost_by_resolution([models.base_model(), models.sepnet()]),
    ]
    for fig in figures:
        assert isinstance(fig, matplotlib.figure.Figure)
        plt.close(fig)
