"""Which TensorFlow thread settings train fastest on this CPU: images/s per setting.

Usage:
    python scripts/benchmark_threads.py [--model sepnet_fast] [--settings 0,0,1 4,0,1 0,0,0] [--rounds 4]

A setting is ``INTRA,INTER,ONEDNN``: TensorFlow's intra-op and inter-op thread counts
(0 = TensorFlow's default, one per core) and whether oneDNN's CPU kernels are on
(``TF_ENABLE_ONEDNN_OPTS``, on by default on x86). TensorFlow fixes all three when it first
runs an op, so each measurement is a child process (``--child``) that sets them, then
prints ``speed.training_throughput`` of ``--model`` (model only, random images, the series'
input pipeline). The settings take turns, round after round, so that the shared machine's
drift slows them alike; the ratios of their medians to the first setting are measured in
one run. TensorFlow backend only.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys

import numpy as np


def child(model: str, intra: int, inter: int, steps: int) -> None:
    import tensorflow as tf

    # Before any op runs: afterwards TensorFlow refuses to change its thread pools.
    tf.config.threading.set_intra_op_parallelism_threads(intra)
    tf.config.threading.set_inter_op_parallelism_threads(inter)
    from cifarsep_lib import speed

    print(json.dumps({"images_per_s": speed.training_throughput(model, batch_size=256, steps=steps)}))


def measure(model: str, setting: str, steps: int) -> float:
    intra, inter, onednn = setting.split(",")
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, __file__, "--child", intra, inter, "--model", model, "--steps", str(steps)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sepnet_fast")
    parser.add_argument("--settings", nargs="+", default=["0,0,1", "4,0,1", "2,1,1", "0,0,0"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=24, help="training steps timed per measurement")
    parser.add_argument("--child", nargs=2, type=int, metavar=("INTRA", "INTER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.model, *args.child, args.steps)
        return

    print(
        f"{datetime.datetime.now().isoformat(timespec='seconds')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; {args.model}, {args.steps} steps of 256 per measurement, {args.rounds} rounds"
    )
    results = {setting: [] for setting in args.settings}
    for r in range(args.rounds):
        order = args.settings if r % 2 == 0 else args.settings[::-1]
        for setting in order:
            results[setting].append(measure(args.model, setting, args.steps))
            print(f"round {r + 1}  intra,inter,onednn = {setting:8s} {results[setting][-1]:6.1f} images/s", flush=True)
    first = np.array(results[args.settings[0]])
    for setting, ips in results.items():
        ips = np.array(ips)
        print(
            f"intra,inter,onednn = {setting:8s} median {np.median(ips):6.1f} images/s "
            f"(min {ips.min():.1f}, max {ips.max():.1f}); vs {args.settings[0]}: {np.median(ips / first):.2f}x"
        )


if __name__ == "__main__":
    main()
