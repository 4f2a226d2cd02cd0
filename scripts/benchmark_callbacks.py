"""Benchmark: what train()'s per-step callbacks cost per training step, under the active backend.

Usage:
    KERAS_BACKEND=jax python scripts/benchmark_callbacks.py [--model sepnet] [--steps 44] [--rounds 2]

One compiled model (the series' recipe with a settable learning rate, as a time-budgeted
run compiles it) trains on random images fed through ``input_pipeline.make_dataset`` with the
series' augmentation, one epoch per measurement, with a different list of callbacks each
time; the first epoch (compilation) is not timed. Under JAX, a callback that reads
``self.model`` during an epoch makes Keras write the whole training state back into the
model's variables (``jax_state_sync``) and gather it again before the next step, so the
cost of touching the model every step shows up here.

``TimeBudget`` sets the learning rate before every step. Until 2026-11-28 it computed that
rate by evaluating the Keras schedule eagerly and converting the result to a float
(``keras_schedule_rate`` below, kept here as the "before"); ``training.lr_by_fraction`` now
does the same arithmetic in plain Python. Both are timed per call and per training step.
Prints ms per step, one line per list, and one JSON object last.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import keras

from cifarsep_lib import callbacks, devices, input_pipeline, models, speed, training


def keras_schedule_rate(recipe: training.Recipe):
    """The rate as ``TimeBudget`` computed it until 2026-11-28: the Keras schedule, eagerly."""
    steps = 10_000
    schedule = training.lr_schedule(dataclasses.replace(recipe, epochs=1), steps_per_epoch=steps)
    return lambda fraction: float(keras.ops.convert_to_numpy(schedule(int(min(max(fraction, 0.0), 1.0) * steps))))


def ms_per_call(rate, calls: int = 100) -> float:
    rate(0.5)  # the first call may trace or compile
    start = time.perf_counter()
    for i in range(calls):
        rate(i / calls)
    return 1000 * (time.perf_counter() - start) / calls


class TouchModel(keras.callbacks.Callback):
    """Reads ``self.model`` before every step and does nothing with it."""

    def on_train_batch_begin(self, batch, logs=None):
        self.model  # noqa: B018 (the property read is what is measured)


def callback_lists(recipe: training.Recipe, images: int) -> dict:
    """Named lists of callbacks, fresh ones per call (callbacks keep per-run state)."""

    def budget(lr_at):
        clock = callbacks.Throughput(images, recipe.batch_size)
        return [clock, callbacks.TimeBudget(3600.0, clock, lr_at)]

    return {
        "none": [],
        "Throughput": [callbacks.Throughput(images, recipe.batch_size)],
        "TerminateOnNaN": [keras.callbacks.TerminateOnNaN()],
        "reads self.model per step": [TouchModel()],
        "TimeBudget, stop check only": budget(None),
        "TimeBudget, rate from the Keras schedule": budget(keras_schedule_rate(recipe)),
        "TimeBudget, rate from lr_by_fraction": budget(training.lr_by_fraction(recipe)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="sepnet")
    parser.add_argument("--steps", type=int, default=44, help="training steps per timed epoch")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    recipe = training.Recipe(minutes=60.0)  # a float learning rate, as under a time budget
    n = args.steps * recipe.batch_size
    x, y = speed.random_images(n)
    augmented = input_pipeline.make_dataset(
        x, y, recipe.batch_size, input_pipeline.augmentation(recipe.translate, 0), shuffle=True
    )
    plain = input_pipeline.make_dataset(x, y, recipe.batch_size, shuffle=True)
    model = training.compile_model(models.build(args.model), recipe, args.steps)
    model.fit(augmented, epochs=1, verbose=0)  # compiles the training step

    per_call = {
        "Keras schedule": ms_per_call(keras_schedule_rate(recipe)),
        "lr_by_fraction": ms_per_call(training.lr_by_fraction(recipe)),
    }
    for name, ms in per_call.items():
        print(f"rate from {name:34s} {ms:8.3f} ms per call", flush=True)
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for name, chosen in [*callback_lists(recipe, n).items(), ("none, no augmentation", None)]:
            start = time.perf_counter()
            model.fit(plain if chosen is None else augmented, epochs=1, verbose=0, callbacks=chosen or [])
            ms = 1000 * (time.perf_counter() - start) / args.steps
            results.setdefault(name, []).append(ms)
            print(f"{name:40s} {ms:8.1f} ms/step", flush=True)
    print(
        json.dumps(
            {
                "backend": keras.backend.backend(),
                "device": devices.describe_device(),
                "machine": platform.machine(),
                "model": args.model,
                "batch_size": recipe.batch_size,
                "steps": args.steps,
                "rate_ms_per_call": {k: round(v, 3) for k, v in per_call.items()},
                "ms_per_step_best": {k: round(min(v), 2) for k, v in results.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
