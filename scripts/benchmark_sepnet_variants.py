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
# models.sepnet_deep(), the variant that was trained, is built from the library and listed after the reference.
VARIANTS = {
    "sepnet": {},
    "5x5_blocks": {"widths": (64, 96, 152), "kernel_size": 5},
    "wide_16x16": {"widths": (96, 80, 128)},
    "32x32_stage1_48": {"widths": (48, 96, 160), "full_resolution_stage1": True},
    "32x32_stage1_32_3blocks": {"widths": (32, 96, 160), "blocks": (3, 2, 0), "full_resolution_stage1": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12, help="training steps timed per variant")
    args = parser.parse_args()
    print(speed.benchmark_header())
    built = {name: models.sepnet(name=name, fused_batchnorm=True, **changes) for name, changes in VARIANTS.items()}
    built = {"sepnet": built.pop("sepnet"), "sepnet_deep": models.build("sepnet_deep", fused_batchnorm=True), **built}
    times = speed.paired_step_times(built, rounds=args.rounds)
    print("\n".join(speed.paired_step_table(built, times)))
    for name, changes in VARIANTS.items():
        print(f"  {name}: sepnet({', '.join(f'{k}={v}' for k, v in changes.items())})")
        if name == "sepnet":
            print("  sepnet_deep: models.sepnet_deep()")


if __name__ == "__main__":
    main()
