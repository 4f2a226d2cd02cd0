"""scripts/kernel_norms.py: the norms of a network's depthwise and pointwise kernels."""

import numpy as np
import pytest
from conftest import load_script

from cifarsep_lib import models

kernel_norms = load_script("kernel_norms")


def test_one_norm_per_separable_convolution_kernel():
    model = models.sepnet()
    separable = [layer for layer in model.layers if layer.__class__.__name__ == "SeparableConv2D"]
    norms = kernel_norms.kernel_norms(model)
    assert len(norms["depthwise"]) == len(norms["pointwise"]) == len(separable) == 11
    first = separable[0]
    assert norms["depthwise"][0] == pytest.approx(np.linalg.norm(np.asarray(first.depthwise_kernel)), rel=1e-6)
    assert norms["pointwise"][0] == pytest.approx(np.linalg.norm(np.asarray(first.pointwise_kernel)), rel=1e-6)


def test_halving_the_weights_halves_the_norms():
    model = models.sepnet()
    before = kernel_norms.kernel_norms(model)
    model.set_weights([w / 2 for w in model.get_weights()])
    after = kernel_norms.kernel_norms(model)
    for kind in before:
        np.testing.assert_allclose(after[kind], np.array(before[kind]) / 2, rtol=1e-6)
