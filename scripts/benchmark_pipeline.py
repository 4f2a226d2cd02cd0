"""Where an epoch's time goes under the JAX or PyTorch backend: the model, or the input pipeline.

Usage:
    KERAS_BACKEND=jax python scripts/benchmark_pipeline.py [--batches 44] [MODEL ...]   (default: sepnet)

For each model, one compiled copy is trained on the same 11,264 random images (44 batches
of 256) fed six ways, and the seconds per pass (mean of two, after one untimed pass) are
printed: NumPy arrays (the model alone), the series' ``PyDataset`` without augmentation,
with ``TerminateOnNaN`` (which reads the loss after every step), and with augmentation in
chunks of 4,096 images (one or four worker threads) or per batch of 256 (what the library
did before). Last, the augmentation layers alone on as many chunks of 4,096 as cover a pass. Under the
TensorFlow backend ``train()`` uses ``tf.data`` instead, which this script does not measure.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from cifarsep_lib import input_pipeline, models, speed, training


def seconds_per_pass(model, data, **fit_kwargs) -> float:
    """Mean seconds of two passes over ``data`` (arrays or a PyDataset), after one warm-up pass."""
    if isinstance(data, tuple):
        fit = lambda epochs: model.fit(*data, batch_size=256, epochs=epochs, verbose=0, **fit_kwargs)  # noqa: E731
    else:
        fit = lambda epochs: model.fit(data, epochs=epochs, verbose=0, **fit_kwargs)  # noqa: E731
    fit(1)
    start = time.perf_counter()
    fit(2)
    return (time.perf_counter() - start) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["sepnet"])
    parser.add_argument("--batches", type=int, default=44, help="batches of 256 per pass")
    args = parser.parse_args()
    n_images = 256 * args.batches
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n_images, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 10, n_images)
    augmenter = input_pipeline.augmentation(0.125, seed=0)

    def batches(augment=None, workers=1, chunk_size=4096):
        return input_pipeline.AugmentedBatches(x, y, 256, augment, True, 0, workers, chunk_size)

    print(speed.benchmark_header())
    print(f"{n_images} images per pass")
    for name in args.models:
        model = training.compile_model(models.build(name), training.Recipe(model=name), 100)
        print(name, flush=True)
        cases = [
            ("arrays (model only)", (x.astype("float32"), input_pipeline.one_hot(y)), {}),
            ("PyDataset, no augmentation, 1 worker", batches(), {}),
            ("  + TerminateOnNaN", batches(), {"callbacks": [keras.callbacks.TerminateOnNaN()]}),
            ("augmented in chunks of 4096, 1 worker", batches(augmenter), {}),
            ("augmented in chunks of 4096, 4 workers", batches(augmenter, workers=4), {}),
            ("augmented per batch (256), 4 workers", batches(augmenter, workers=4, chunk_size=256), {}),
        ]
        for label, data, kwargs in cases:
            print(f"  {label:44s} {seconds_per_pass(model, data, **kwargs):6.2f} s per {n_images} images", flush=True)
        images, chunks = x[:4096].astype("float32"), -(-n_images // 4096)
        start = time.perf_counter()
        for _ in range(chunks):
            keras.ops.convert_to_numpy(augmenter(images, training=True))
        label = f"augmentation alone, {chunks} chunk(s) of 4096"
        print(f"  {label:44s} {time.perf_counter() - start:6.2f} s", flush=True)


if __name__ == "__main__":
    main()
