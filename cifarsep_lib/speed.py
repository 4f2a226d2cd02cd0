"""Throughput measurements: training and inference images/s of a model on this machine.

Used by notebook 04 (to choose mixed precision and XLA on the current device), by
``scripts/benchmark.py`` and by ``scripts/benchmark_layers.py``. Each measurement warms
a model up (the first steps trace and compile) and then times whole steps on random
images; ``training_throughput`` builds a fresh model, ``paired_step_times`` takes built ones.
"""

from __future__ import annotations

import datetime
import time

import keras
import numpy as np

from . import devices, evaluation, input_pipeline, training
from . import models as cmodels


def random_images(n: int, seed: int = 0, size: int = 32):
    """``n`` random RGB images (float32, 0-255) and integer labels 0-9: timing input, nothing to learn."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, size, size, 3)).astype("float32")
    return x, rng.integers(0, 10, size=n)


def training_throughput(
    model_name: str = "sepnet",
    batch_size: int = 256,
    steps: int = 10,
    warmup_steps: int = 3,
    mixed_precision: bool = False,
    jit_compile: bool | str = "auto",
    image_size: int = 32,
    fused_batchnorm: bool | None = None,
) -> float:
    """Training images/s of ``model_name`` (forward, backward and SGD update; random images, no augmentation).

    ``mixed_precision`` uses ``mixed_float16`` on a GPU and ``mixed_bfloat16`` on a CPU.
    ``image_size``: side of the square images (16 measures a progressive-resizing epoch).
    ``fused_batchnorm``: as ``training.Recipe``'s; by default the network the recipe trains.
    """
    on_gpu = bool(devices.accelerators())
    policy = ("mixed_float16" if on_gpu else "mixed_bfloat16") if mixed_precision else "float32"
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        recipe = training.Recipe(model=model_name, batch_size=batch_size, fused_batchnorm=fused_batchnorm)
        model = cmodels.build(model_name, fused_batchnorm=recipe.batchnorm_is_fused)
        training.compile_model(model, recipe, steps_per_epoch=100, jit_compile=jit_compile)
        x, labels = random_images(batch_size * (steps + warmup_steps), size=image_size)
        warm = batch_size * warmup_steps
        # Fed through the series' own input pipeline, not as arrays: for arrays, fit builds a
        # tf.data pipeline with autotuning on, which at random idled for seconds after the
        # last step and halved this figure (see ``data.without_autotune``).
        model.fit(input_pipeline.make_dataset(x[:warm], labels[:warm], batch_size), shuffle=False, verbose=0)
        start = time.perf_counter()
        model.fit(input_pipeline.make_dataset(x[warm:], labels[warm:], batch_size), shuffle=False, verbose=0)
        return batch_size * steps / (time.perf_counter() - start)
    finally:
        keras.config.set_dtype_policy(previous)


def paired_step_times(models: dict, batch_size: int = 256, rounds: int = 25, warmup_steps: int = 3, seed: int = 0):
    """Seconds per training step of each model in ``models`` (name -> built model), interleaved.

    The models take turns, one step each, in alternating order every round, on the same
    random batch: a shared machine whose speed drifts (this 2-core one does, between
    about 250 and 500 images/s for the same model) slows all of them alike, so the
    ratios of their medians compare like with like where separate runs would not.
    Each model is compiled with the series' recipe. Returns name -> array of ``rounds``
    step times.
    """
    x, labels = random_images(batch_size, seed=seed)
    y = input_pipeline.one_hot(labels)
    for model in models.values():
        training.compile_model(model, training.Recipe(batch_size=batch_size), steps_per_epoch=100)
        for _ in range(warmup_steps):  # the first steps trace the graph
            model.train_on_batch(x, y)
    times = {name: [] for name in models}
    order = list(models)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            models[name].train_on_batch(x, y)
            times[name].append(time.perf_counter() - start)
    return {name: np.array(t) for name, t in times.items()}


def benchmark_header() -> str:
    """The first line of a benchmark's output: when, on which machine and device, with which Keras."""
    return (
        f"{datetime.datetime.now().isoformat(timespec='seconds')}  {devices.describe_machine()}, "
        f"{devices.describe_device()}, Keras {keras.__version__} ({keras.backend.backend()})"
    )


def paired_step_table(models: dict, times: dict, batch_size: int = 256) -> list[str]:
    """``paired_step_times``' result as printed lines: a title, then one line per model with its
    parameters, median step, images/s, and the median of its step-by-step speed ratio to the
    first model (1.00x for the first)."""
    reference = next(iter(times))
    first = times[reference]
    title = (
        f"paired training steps, batch {batch_size}, {len(first)} rounds"
        f" (ratio: median of step-by-step speed vs {reference})"
    )
    return [title] + [
        f"  {name:24s} {models[name].count_params():7,d} params  median {1e3 * np.median(t):5.0f} ms/step"
        f"  {batch_size / np.median(t):5.0f} images/s  {np.median(first / t):4.2f}x"
        for name, t in times.items()
    ]


def inference_throughput(model, batch_size: int = 500, batches: int = 10) -> float:
    """Inference images/s of a built or loaded ``model`` (after one warm-up batch)."""
    x, _ = random_images(batch_size * (batches + 1))
    evaluation.predict_array(model, x[:batch_size], batch_size)
    start = time.perf_counter()
    evaluation.predict_array(model, x[batch_size:], batch_size)
    return batch_size * batches / (time.perf_counter() - start)
