"""What recomputing BatchNorm's statistics buys a trained model (``batchnorm.recompute_statistics``).

Usage:
    # finished models: validation (and test) accuracy with the stored statistics, then
    # recomputed on N clean training images, for each N
    python scripts/benchmark_batchnorm_statistics.py --models trained/sepnet.keras --images 1000 5000
    # one run, epoch by epoch: validation accuracy of each epoch's weights
    python scripts/benchmark_batchnorm_statistics.py --snapshots runs/X_snapshots --model sepnet

``--snapshots`` reads ``epoch_<N>.weights.h5`` files: the weights after epoch N of a run.
``train()`` keeps only the latest in its ``backup/`` folder, so a run's snapshots are
collected while it trains, e.g. with this loop beside it::

    cd runs/X && mkdir -p ../X_snapshots
    while pgrep -f "out runs/X" >/dev/null; do
      e=$(python -c "import json; print(json.load(open('backup/training_metadata.json'))['epoch'])")
      [ -f ../X_snapshots/epoch_$e.weights.h5 ] || cp backup/latest.weights.h5 ../X_snapshots/epoch_$e.weights.h5
      sleep 15
    done

For each snapshot it prints the validation accuracy with the stored moving averages (what
the run logged), with statistics recomputed on clean training images, and, to tell the
causes apart, recomputed on the same images *augmented* as in training: if those do as
well as the clean ones, the stored averages were stale (the weights moved on); if they do
as badly as the stored ones, the averages were of the wrong images. Selection happens on
the 5,000-image validation split; test accuracy is printed beside it, for reporting.
Prints one JSON object last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import time
from pathlib import Path

import keras
import numpy as np

from cifarsep_lib import batchnorm, evaluation, input_pipeline, models
from cifarsep_lib import data as cdata


def accuracy(model, x, y) -> float:
    return float(np.mean(model.predict(x, batch_size=1000, verbose=0).argmax(-1) == np.ravel(y)))


def finished_models(files, counts, clean, val, test) -> list[dict]:
    rows = []
    for file in files:
        model = evaluation.load_model(file)
        stored = {"val": accuracy(model, *val), "test": accuracy(model, *test)}
        print(f"{file}: stored statistics      val {stored['val']:.2%}  test {stored['test']:.2%}")
        for n in counts:
            model = evaluation.load_model(file)
            start = time.perf_counter()
            batchnorm.recompute_statistics(model, clean[:n])
            seconds = time.perf_counter() - start
            row = {"model": file, "images": n, "seconds": seconds, "val": accuracy(model, *val)}
            row["test"] = accuracy(model, *test)
            row.update(stored_val=stored["val"], stored_test=stored["test"])
            print(
                f"{file}: recomputed on {n:>6,} images ({seconds:4.1f} s)  val {row['val']:.2%} "
                f"({row['val'] - stored['val']:+.2%})  test {row['test']:.2%} ({row['test'] - stored['test']:+.2%})"
            )
            rows.append(row)
    return rows


def snapshots(folder: Path, name: str, n: int, clean, val, test, seed: int) -> list[dict]:
    augment = input_pipeline.augmentation(seed=seed)
    augmented = keras.ops.convert_to_numpy(augment(clean[:n].astype("float32"), training=True))
    files = sorted(folder.glob("epoch_*.weights.h5"), key=lambda f: int(re.findall(r"\d+", f.name)[0]))
    print(f"validation accuracy of each epoch's weights ({n:,} images), and test accuracy, reported only")
    print(f"{'epoch':>5} | {'stored':>7} | {'clean':>7} | {'augmented':>9} || {'test, stored':>12} | {'clean':>7}")
    rows = []
    for file in files:
        model = models.build(name)
        model.load_weights(file)
        row = {"epoch": int(re.findall(r"\d+", file.name)[0]), "stored": accuracy(model, *val)}
        row["test_stored"] = accuracy(model, *test)
        for kind, images in (("augmented", augmented), ("clean", clean[:n])):
            batchnorm.recompute_statistics(model, images)
            row[kind] = accuracy(model, *val)
        row["test_clean"] = accuracy(model, *test)
        print(
            f"{row['epoch']:>5} | {row['stored']:7.2%} | {row['clean']:7.2%} | {row['augmented']:9.2%} "
            f"|| {row['test_stored']:12.2%} | {row['test_clean']:7.2%}"
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=[], help=".keras files")
    parser.add_argument("--images", nargs="+", type=int, default=[5000], help="clean training images to use")
    parser.add_argument("--snapshots", type=Path, help="folder of epoch_<N>.weights.h5 files of one run")
    parser.add_argument("--model", default="sepnet", help="the network of --snapshots (models.build name)")
    parser.add_argument("--seed", type=int, default=0, help="the run's seed: its validation split")
    args = parser.parse_args()

    (x_all, y_all), test = cdata.load_cifar10()
    (x_train, _), val = cdata.train_val_split(x_all, y_all, 5_000, args.seed)
    clean = batchnorm.clean_sample(x_train, max(args.images), args.seed)  # the images train() uses
    print(f"{datetime.datetime.now():%Y-%m-%d %H:%M} on {platform.machine()}, keras {keras.__version__}")
    out = {"models": finished_models(args.models, args.images, clean, val, test)}
    if args.snapshots:
        out["snapshots"] = snapshots(args.snapshots, args.model, args.images[-1], clean, val, test, args.seed)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
