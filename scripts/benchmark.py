"""Benchmark: training and inference images/s per model, and time-to-accuracy from scratch.

Usage:
    python scripts/benchmark.py [--models sepnet sepnet_fast base_model] [--time-to 0.84 --epochs 10]
    python scripts/benchmark.py --models sepnet sepnet_fast_s2 --time-to 0 --mixed-precision
    python scripts/benchmark.py --models sepnet_fast_s2 --time-to 0 --batch-sizes 128 512
    # on a GPU, with the backend notebook 04 recommends (measured on an H100: benchmarks/gpu_h100_2026-11-26.txt):
    KERAS_BACKEND=jax python scripts/benchmark.py --steps 200 --time-to 0.84 --epochs 50

Throughputs are measured in this one process, one model after another, on random images (no
augmentation), so their ratios compare like with like. Time-to-84% is a real training run of
the series' recipe (``--time-model``, ``--epochs``; BatchNorm's moving averages unless
``--batchnorm-images`` says otherwise, as in the first benchmark files) on the 45,000 training
images outside the validation split that evaluates the test set after every epoch and reports
the first epoch reaching the target (the schedule still runs to its end); the clock counts
training time only (validation and test passes excluded). Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile

import keras
import numpy as np

from cifarsep_lib import devices, models, speed, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sepnet", "sepnet_fast", "base_model"])
    parser.add_argument("--steps", type=int, default=20, help="training steps timed per model")
    parser.add_argument("--time-to", type=float, default=0.84, help="target test accuracy (0 = skip the run)")
    parser.add_argument("--epochs", type=int, default=10, help="schedule length of the time-to-target run")
    parser.add_argument("--time-model", default="sepnet", help="model trained in the time-to-target run")
    parser.add_argument("--ema", type=float, default=None, help="weight-averaging momentum of that run (default: off)")
    parser.add_argument(
        "--batchnorm-images",
        type=int,
        default=0,
        help="that run recomputes BatchNorm's statistics on this many clean training images before each "
        "validation, so its test points score them (default: 0, off)",
    )
    parser.add_argument(
        "--fused-batchnorm",
        action=argparse.BooleanOptionalAction,
        help="that run's BatchNorm: layers.FusedBatchNormalization or, with --no-fused-batchnorm, Keras' own"
        " (default: the recipe's, fused in the series' networks; from 2026-11-27 to 2026-12-03 the default was"
        " Keras' own, and this flag alone turned the fused layer on)",
    )
    parser.add_argument(
        "--low-res-sizes", type=int, nargs="*", default=[], help="also time training on images of these sizes"
    )
    parser.add_argument(
        "--mixed-precision",
        action="store_true",
        help="also time training with mixed precision (mixed_bfloat16 on a CPU, mixed_float16 on a GPU)"
        " and print its ratio to float32",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="*",
        default=[],
        help="also time training at these batch sizes and print each one's ratio to batch 256",
    )
    parser.add_argument("--low-res-epochs", type=int, default=0, help="that run's epochs on downscaled images")
    parser.add_argument("--low-res-size", type=int, default=16, help="their size in pixels")
    parser.add_argument(
        "--seed", type=int, default=0, help="that run's seed (weights, data order, augmentation, validation split)"
    )
    args = parser.parse_args()

    result = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": devices.describe_machine(),
        "device": devices.describe_device(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "models": {},
    }
    for name in args.models:
        # The base model is several times slower; fewer timed steps keep the benchmark short.
        steps = args.steps if name.startswith("sepnet") else max(3, args.steps // 5)
        train_ips = speed.training_throughput(name, batch_size=256, steps=steps)
        infer_ips = speed.inference_throughput(models.build(name))
        result["models"][name] = {
            "train_images_per_s": round(train_ips, 1),
            "inference_images_per_s": round(infer_ips, 1),
        }
        print(f"{name:12s} training {train_ips:8.1f} images/s   inference {infer_ips:8.1f} images/s", flush=True)
        variants = []  # (result key, what the printed line says, ratio format, training_throughput arguments)
        if args.mixed_precision:
            variants.append(("mixed_precision", "with mixed precision", ".2f", dict(mixed_precision=True)))
        for batch in args.batch_sizes:
            # As many images as the batch-256 measurement, so each figure averages alike.
            variants.append(
                (
                    f"batch_{batch}",
                    f"at batch {batch}",
                    ".2f",
                    dict(batch_size=batch, steps=max(3, steps * 256 // batch)),
                )
            )
        for size in args.low_res_sizes:
            variants.append((f"{size}px", f"at {size}x{size}", ".1f", dict(image_size=size)))
        for key, label, ratio_format, options in variants:
            variant_ips = speed.training_throughput(name, **{"batch_size": 256, "steps": steps, **options})
            result["models"][name][f"train_images_per_s_{key}"] = round(variant_ips, 1)
            ratio = variant_ips / train_ips
            print(f"{name:12s} training {variant_ips:8.1f} images/s {label} ({ratio:{ratio_format}}x)", flush=True)
    if "base_model" in result["models"]:
        base_ips = result["models"]["base_model"]["train_images_per_s"]
        for name in (n for n in result["models"] if n.startswith("sepnet")):
            ratio = result["models"][name]["train_images_per_s"] / base_ips
            result[f"{name}_vs_base_training_speed"] = round(ratio, 2)
            print(f"{name} trains {ratio:.1f}x faster than the base model here")

    if args.time_to > 0:
        recipe = training.Recipe(
            model=args.time_model,
            epochs=args.epochs,
            ema_momentum=args.ema,
            low_res_epochs=args.low_res_epochs,
            low_res_size=args.low_res_size,
            fused_batchnorm=args.fused_batchnorm,
            batchnorm_images=args.batchnorm_images,
            seed=args.seed,
        )
        with tempfile.TemporaryDirectory() as out:
            callback_epochs = range(1, args.epochs + 1)
            _, hist = training.train(recipe, out_dir=out, tensorboard=False, test_at_epochs=callback_epochs, verbose=2)
            points = json.loads(open(os.path.join(out, "test_points.json")).read())
        reached = next((p for p in points if p["test_accuracy"] >= args.time_to), None)
        # Reported beside it, never instead: the first epoch whose flip-TTA accuracy reaches the target.
        reached_tta = next((p for p in points if p["test_accuracy_tta"] >= args.time_to), None)
        result["time_to_target"] = {
            "target": args.time_to,
            "model": args.time_model,
            "recipe_epochs": args.epochs,
            "ema_momentum": args.ema,
            "low_res_epochs": args.low_res_epochs,
            "low_res_size": args.low_res_size,
            "fused_batchnorm": recipe.batchnorm_is_fused,
            "batchnorm_images": args.batchnorm_images,
            # Not in train_seconds, like validation; a run needs it once, for its final weights.
            "batchnorm_seconds_per_epoch": round(float(np.mean(hist.get("batchnorm_seconds", [0.0]))), 2),
            "seed": args.seed,
            "reached": reached is not None,
            "train_seconds": round(reached["train_seconds"], 1) if reached else None,
            "epoch": reached["epoch"] if reached else None,
            "train_seconds_tta": round(reached_tta["train_seconds"], 1) if reached_tta else None,
            "epoch_tta": reached_tta["epoch"] if reached_tta else None,
            "test_points": points,
        }
        for label, key, point in (("", "test_accuracy", reached), (" with flip-TTA", "test_accuracy_tta", reached_tta)):
            if point:
                minutes = point["train_seconds"] / 60
                print(f"time to {args.time_to:.0%}{label}: {minutes:.1f} min (epoch {point['epoch']})")
            else:
                best = max(p[key] for p in points)
                print(f"{args.time_to:.0%}{label} not reached in {args.epochs} epochs (best {best:.4f})")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
