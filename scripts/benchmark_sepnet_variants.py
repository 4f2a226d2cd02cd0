"""What each change to SepNet's layout costs in training speed on this machine.

Usage:
    python scripts/benchmark_sepnet_variants.py [--rounds 12] [--family sepnet|sepnet_fast_s2]

Each variant is ``models.sepnet(**changes)`` with the fused BatchNorm (the recipe's default),
trained one step at a time in turn with the family's reference model (SepNet, or the
ten-minute model sepnet_fast_s2) on the same batch of 256
(``speed.paired_step_times``), so the speed ratios are measured in one run. It prints the
parameters too: a variant must stay under 100,000 to be a candidate. Which variant learns
more per epoch is a question for a training run (``trained/results.json``), not for this script.
"""

from __future__ import annotations

import argparse

from cifarsep_lib import models, speed

# family -> {variant name -> the keyword arguments of models.sepnet() that change}; the first
# variant of a family is its reference. None: a model the library names (models.MODELS), built
# from there so that it is what was trained.
FAMILIES = {
    # The main model: where to spend its parameters (runs on a GPU would tell which learns more).
    "sepnet": {
        "sepnet": None,
        "sepnet_deep": None,
        "5x5_blocks": {"widths": (64, 96, 152), "kernel_size": 5},
        "wide_16x16": {"widths": (96, 80, 128)},
        "32x32_stage1_48": {"widths": (48, 96, 160), "full_resolution_stage1": True},
        "32x32_stage1_32_3blocks": {"widths": (32, 96, 160), "blocks": (3, 2, 0), "full_resolution_stage1": True},
        # Fewer elementwise layers (as sepnet_fast_8x8_lean). The stem's BatchNorm and ReLU run at
        # 32x32 here, yet leaving them out saved no more than at 16x16 (2026-12-04 night: 0.97-1.03x).
        "linear_stem": {"stem_activation": False},
        "one_bn_per_block": {"block_batchnorms": 1},
        "linear_stem_one_bn": {"stem_activation": False, "block_batchnorms": 1},
        "sepnet_deep_one_bn": None,  # sepnet_deep with one BatchNorm per block
        "sepnet_deep_linear_stem_one_bn": {
            **models.SEPNET_DEEP_LAYOUT,
            "stem_activation": False,
            "block_batchnorms": 1,
        },
    },
    # The ten-minute model: how much faster a lighter 16x16 stage trains (for slower CPUs).
    "sepnet_fast_s2": {
        "sepnet_fast_s2": None,
        "16x16_48": {**models.SEPNET_FAST_S2_LAYOUT, "widths": (48, 128, 192)},
        "16x16_48_stem_24": {**models.SEPNET_FAST_S2_LAYOUT, "widths": (48, 128, 192), "stem_filters": 24},
        "no_16x16_block": {**models.SEPNET_FAST_S2_LAYOUT, "blocks": (0, 1, 0)},
        "sepnet_fast_8x8": None,  # no 16x16 block, 144/176 channels at 8x8/4x4
        "two_8x8_blocks": {**models.SEPNET_FAST_S2_LAYOUT, "widths": (64, 112, 160), "blocks": (0, 2, 0)},
        # Fewer elementwise layers, the 16x16 block kept: no BatchNorm and ReLU after the stem,
        # one BatchNorm per residual block, or both.
        "linear_stem": {**models.SEPNET_FAST_S2_LAYOUT, "stem_activation": False},
        "one_bn_per_block": {**models.SEPNET_FAST_S2_LAYOUT, "block_batchnorms": 1},
        "linear_stem_one_bn": {**models.SEPNET_FAST_S2_LAYOUT, "stem_activation": False, "block_batchnorms": 1},
        "sepnet_fast_8x8_lean": None,  # sepnet_fast_8x8 with both
    },
}


def build(name: str, changes: dict | None):
    """The variant with the fused BatchNorm: from the library by name, or ``models.sepnet(**changes)``."""
    if changes is None:
        return models.build(name, fused_batchnorm=True)
    return models.sepnet(name=name, fused_batchnorm=True, **changes)


def source(name: str, changes: dict | None) -> str:
    """Where the variant comes from, as printed under the table."""
    if changes is None:
        return f"models.{name}()"
    return f"sepnet({', '.join(f'{k}={v}' for k, v in changes.items())})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12, help="training steps timed per variant")
    parser.add_argument("--family", choices=sorted(FAMILIES), default="sepnet", help="which model's variants")
    args = parser.parse_args()
    variants = FAMILIES[args.family]
    print(speed.benchmark_header())
    built = {name: build(name, changes) for name, changes in variants.items()}
    times = speed.paired_step_times(built, rounds=args.rounds)
    print("\n".join(speed.paired_step_table(built, times)))
    for name, changes in variants.items():
        print(f"  {name}: {source(name, changes)}")


if __name__ == "__main__":
    main()
