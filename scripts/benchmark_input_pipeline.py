"""Does tf.data's autotuning cost training time? ``fit`` on the same data with it on and off.

Usage:
    python scripts/benchmark_input_pipeline.py [--model sepnet_fast] [--steps 24] [--rounds 6] [--pipeline-only]

One compiled model is trained on the same random images (``--steps`` batches of 256), as a
``tf.data`` dataset with autotuning on (tf.data's default) and the same dataset through
``data.without_autotune`` (what ``input_pipeline.make_dataset`` returns), taking turns, one
``fit`` call each per round. For every call it prints images/s, the seconds from the start
of training to the last step's end ("steps"), the seconds ``fit`` took to return after
training ended ("after"), and the process's CPU time over wall time (2.0 = both cores
busy). Then inference the same way: ``predict`` on an array of 10,000 random images
(Keras builds its own pipeline, autotuning on) and ``evaluation.predict_array`` (the
same through a pipeline without autotuning), taking turns. Last, for the input pipeline
alone, images/s of the augmented training pipeline (45,000 images) with autotuning on and
off, and with alternating flips (``input_pipeline.AlternatingFlip``) instead of random ones
(``--pipeline-only``: this part only). TensorFlow backend only.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

if keras.backend.backend() != "tensorflow":  # checked before importing TensorFlow, which the JAX venv lacks
    raise SystemExit("tf.data autotuning exists under the TensorFlow backend only")

import tensorflow as tf  # noqa: E402

from cifarsep_lib import data, evaluation, input_pipeline, models, speed, training  # noqa: E402


class StepClock(keras.callbacks.Callback):
    """Times of training start, of each batch end and of training end."""

    def on_train_begin(self, logs=None):
        self.begin, self.batch_ends = time.perf_counter(), []

    def on_train_batch_end(self, batch, logs=None):
        self.batch_ends.append(time.perf_counter())

    def on_train_end(self, logs=None):
        self.end = time.perf_counter()


def timed_fit(model, dataset, images: int) -> dict:
    clock = StepClock()
    cpu, wall = time.process_time(), time.perf_counter()
    model.fit(dataset, verbose=0, callbacks=[clock])
    returned = time.perf_counter()
    return {
        "images_per_s": images / (returned - wall),
        "steps_s": clock.batch_ends[-1] - clock.begin,
        "after_s": returned - clock.end,
        "cpu_per_wall": (time.process_time() - cpu) / (returned - wall),
    }


def pipeline_images_per_s(dataset) -> float:
    start, n = time.perf_counter(), 0
    for images, _ in dataset:
        n += len(images)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sepnet_fast")
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--pipeline-only", action="store_true", help="time the input pipeline alone (the last part)")
    args = parser.parse_args()
    if not args.pipeline_only:
        time_fit_and_predict(args)
    time_pipeline_alone()


def time_fit_and_predict(args) -> None:
    """``fit`` and ``predict`` with tf.data's autotuning on and off, taking turns."""

    model = models.build(args.model)
    training.compile_model(model, training.Recipe(model=args.model), steps_per_epoch=100)
    x, labels = speed.random_images(256 * args.steps)
    y = input_pipeline.one_hot(labels)
    autotuned = tf.data.Dataset.from_tensor_slices((x, y)).batch(256).prefetch(tf.data.AUTOTUNE)
    variants = {"autotune on": autotuned, "autotune off": data.without_autotune(autotuned)}
    model.fit(autotuned.take(2), verbose=0)  # trace and compile
    print(f"{args.model}: fit on {args.steps} batches of 256 random images, {args.rounds} rounds, taking turns")
    results = {name: [] for name in variants}
    for r in range(args.rounds):
        for name, dataset in variants.items():
            m = timed_fit(model, dataset, 256 * args.steps)
            results[name].append(m)
            print(
                f"round {r + 1}  {name:12s}  {m['images_per_s']:4.0f} images/s  steps {m['steps_s']:5.2f} s  "
                f"after {m['after_s']:5.2f} s  CPU/wall {m['cpu_per_wall']:.2f}",
                flush=True,
            )
    for name, ms in results.items():
        ips = [m["images_per_s"] for m in ms]
        idle = sum(m["after_s"] > 1.0 for m in ms)
        print(
            f"{name:12s}: median {np.median(ips):.0f} images/s (min {min(ips):.0f}, max {max(ips):.0f}); "
            f"{idle} of {len(ms)} fits idled > 1 s after training ended"
        )

    test_images, _ = speed.random_images(10_000)
    predictors = {
        "predict(array), autotune on": lambda: model.predict(test_images, batch_size=500, verbose=0),
        "predict_array, autotune off": lambda: evaluation.predict_array(model, test_images, 500),
    }
    for run in predictors.values():  # trace the predict step
        run()
    print(f"Inference on 10,000 random images, batches of 500, {args.rounds} rounds, taking turns:")
    seconds = {name: [] for name in predictors}
    for r in range(args.rounds):
        for name, run in predictors.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
            print(f"round {r + 1}  {name:28s}  {seconds[name][-1]:5.2f} s", flush=True)
    for name, s in seconds.items():
        print(f"{name:28s}: median {np.median(s):.2f} s (min {min(s):.2f}, max {max(s):.2f})")


def time_pipeline_alone() -> None:
    """Images/s of the augmented training pipeline alone: autotuning off and on, and with alternating flips."""
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (45_000, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 45_000)
    pipeline = input_pipeline.make_dataset(images, labels, 256, input_pipeline.augmentation(seed=0), shuffle=True)
    alternating = input_pipeline.make_dataset(
        images,
        labels,
        256,
        input_pipeline.augmentation(seed=0, flip=False),
        shuffle=True,
        flips=input_pipeline.AlternatingFlip(len(images), seed=0),
    )
    print("Augmented training pipeline alone (45,000 images, batches of 256, flip + translate):")
    for name, dataset in (
        ("autotune off", pipeline),
        ("autotune on", pipeline.with_options(_autotune_on())),
        ("autotune off, alternating flips", alternating),
    ):
        print(f"  {name:12s}: {pipeline_images_per_s(dataset):.0f} images/s")


def _autotune_on() -> tf.data.Options:
    options = tf.data.Options()
    options.autotune.enabled = True
    return options


if __name__ == "__main__":
    main()
