"""How long are a trained network's convolution kernels? One line per model file.

Usage:
    python scripts/kernel_norms.py trained/sepnet_100_wd0025.keras trained/sepnet_60min_fusedbn.keras

Prints, per file, the median L2 norm of the depthwise and of the pointwise kernels of its
``SeparableConv2D`` layers (each kernel measured on its own). In the series' residual networks
a BatchNorm follows every one of them (except in ``sepnet_deep_one_bn`` and
``sepnet_fast_8x8_lean``, where a block's second convolution feeds the addition directly), so
scaling either kernel leaves the network's output unchanged; what the scale changes is
training: a gradient step turns a kernel of norm ``n`` about ``1 / n**2`` as far, so weight
decay, by keeping kernels short, sets the effective learning rate (benchmarks/README.md, "Five
times the weight decay").
"""

from __future__ import annotations

import argparse

import numpy as np

from cifarsep_lib import evaluation


def kernel_norms(model) -> dict[str, list[float]]:
    """L2 norms of the model's kernels, keyed ``"depthwise"`` and ``"pointwise"``."""
    norms = {"depthwise": [], "pointwise": []}
    for weight in model.weights:
        kind = weight.path.rsplit("/", 1)[-1].removesuffix("_kernel")
        if kind in norms:
            norms[kind].append(float(np.linalg.norm(np.asarray(weight))))
    return norms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    for path in parser.parse_args().files:
        norms = kernel_norms(evaluation.load_model(path))
        summary = ", ".join(f"{kind} {np.median(values):.2f} ({len(values)} kernels)" for kind, values in norms.items())
        print(f"{path}: median norm of the {summary}")


if __name__ == "__main__":
    main()
