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
import datetime

import keras

from cifarsep_lib import models, speed, training

# name -> the keyword arguments of models.sepnet() that change; "sepnet" is the reference.
VARIANTS = {
    "sepnet": {},
    "sepnet_deep": {"widths": (64, 96, 128), "blocks": (3, 2, 0)},  # models.sepnet_deep()
    "5x5_blocks": {"widths": (64, 96, 152), "kernel_size": 5},
    "wide_16x16": {"widths": (96, 80, 128)},
    "32x32_stage1_48": {"widths": (48, 96, 160), "full_resolution_stage1": True},
    "32x32_stage1_32_3blocks": {"widths": (32, 96, 160), "blocks": (3, 2, 0), "full_resolution_stage1": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12, help="training steps timed per variant")
    args = parser.parse_args()
    print(
        f"{datetime.datetime.now().isoformat(timespec='seconds')}  {speed.describe_machine()}, "
        f"{training.describe_device()}, Keras {keras.__version__} ({keras.backend.backend()})"
    )
    built = {name: models.sepnet(name=name, fused_batchnorm=True, **changes) for name, changes in VARIANTS.items()}
    times = speed.paired_step_times(built, rounds=args.rounds)
    print(f"paired training steps, batch 256, {args.rounds} rounds (ratio: median of step-by-step speed vs sepnet)")
    print("\n".join(speed.paired_step_table(built, times)))
    for name, changes in VARIANTS.items():
        print(f"  {name}: sepnet({', '.join(f'{k}={v}' for k, v in changes.items())})")


if __name__ == "__main__":
    main()
