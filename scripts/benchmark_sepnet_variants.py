"""What each change to SepNet's layout costs in training speed on this machine.

Usage:
    python scripts/benchmark_sepnet_variants.py [--rounds 12]

Each variant is ``models.sepnet(**changes)`` with the fused BatchNorm (the recipe's default),
trained one step at a time in turn with SepNet itself on the same batch of 256
(``speed.paired_step_times``), so the speed ratios are measured in one run. It prints the
parameters too: a variant must stay under 100,000 to be a candidate. Which variant learns
more per epoch is a question for a training run (``trained/results.json``), not for this script.
"""

from __future__ import annotations

import argparse

from cifarsep_lib import models, speed

# name -> the keyword arguments of models.sepnet() that change; "sepnet" is the reference.
# None: a variant the library names (models.MODELS), built from there so that it is what was trained.
VARIANTS = {
    "sepnet": {},
    "sepnet_deep": None,
    "5x5_blocks": {"widths": (64, 96, 152), "kernel_size": 5},
    "wide_16x16": {"widths": (96, 80, 128)},
    "32x32_stage1_48": {"widths": (48, 96, 160), "full_resolution_stage1": True},
    "32x32_stage1_32_3blocks": {"widths": (32, 96, 160), "blocks": (3, 2, 0), "full_resolution_stage1": True},
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
    args = parser.parse_args()
    print(speed.benchmark_header())
    built = {name: build(name, changes) for name, changes in VARIANTS.items()}
    times = speed.paired_step_times(built, rounds=args.rounds)
    print("\n".join(speed.paired_step_table(built, times)))
    for name, changes in VARIANTS.items():
        print(f"  {name}: {source(name, changes)}")


if __name__ == "__main__":
    main()
