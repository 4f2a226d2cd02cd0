"""Where a training step's time goes on this machine, and what a change to the model buys.

Usage:
    python scripts/benchmark_layers.py [--models sepnet_fast sepnet_fast_s2] [--per-layer sepnet_fast]

Two measurements, both printed as figures (not timed tests):

* **Paired steps**: each model of ``--models`` and, for each, the same network with
  ``layers.FusedBatchNormalization`` instead of Keras' own ``BatchNormalization``
  ("+fusedbn"), trained one step at a time in turn on the same batch of 256
  (``speed.paired_step_times``). The ratios to the first model are measured in one run.
* **Per layer** (TensorFlow backend): forward and backward time of each layer of
  ``--per-layer``, in isolation, on a batch of 256 at the shape it sees in a 32x32 image.
  The sum is close to a whole step; the table shows which layers and resolutions cost.
"""

from __future__ import annotations

import argparse
import time

import keras
import numpy as np

from cifarsep_lib import models, speed


def paired(names: list[str], rounds: int) -> None:
    built = {}
    for name in names:
        built[name] = models.build(name)
        built[f"{name}+fusedbn"] = models.build(name, fused_batchnorm=True)
    times = speed.paired_step_times(built, rounds=rounds)
    print("\n".join(speed.paired_step_table(built, times)))


def per_layer(name: str, repeats: int = 5) -> None:
    import tensorflow as tf  # GradientTape: this table is TensorFlow-only

    model = models.build(name)
    inputs_of = {
        layer.name: layer.input if isinstance(layer.input, list) else [layer.input] for layer in model.layers[1:]
    }
    tensors = {id(t): t for ins in inputs_of.values() for t in ins}
    probe = keras.Model(model.input, list(tensors.values()))
    shape_of = dict(zip(tensors, [o.shape for o in probe(np.zeros((1, 32, 32, 3), "float32"))], strict=True))
    rows = []
    for layer in model.layers[1:]:
        xs = [tf.random.normal((256, *shape_of[id(t)][1:])) for t in inputs_of[layer.name]]

        @tf.function
        def step(xs, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(xs)
                out = layer(xs if len(xs) > 1 else xs[0], training=True)
                loss = tf.reduce_sum(out * out)
            return tape.gradient(loss, [*xs, *layer.trainable_weights])

        step(xs)  # trace
        start = time.perf_counter()
        for _ in range(repeats):
            step(xs)
        rows.append((layer.name, type(layer).__name__, tuple(xs[0].shape[1:]), (time.perf_counter() - start) / repeats))
    total = sum(r[3] for r in rows)
    print(f"per-layer forward+backward of {name}, batch 256 (input shape of each layer)")
    for layer_name, kind, shape, seconds in rows:
        print(f"  {layer_name:22s} {kind:24s} {str(shape):14s} {1e3 * seconds:6.1f} ms  {seconds / total:5.1%}")
    print(f"  total {1e3 * total:.0f} ms per step of 256 images ({256 / total:.0f} images/s, layers alone)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sepnet_fast", "sepnet_fast_s2"])
    parser.add_argument("--rounds", type=int, default=25, help="training steps timed per model")
    parser.add_argument("--per-layer", nargs="*", default=["sepnet_fast", "sepnet_fast_s2"])
    args = parser.parse_args()
    print(speed.benchmark_header())
    paired(args.models, args.rounds)
    if keras.backend.backend() == "tensorflow":
        for name in args.per_layer:
            per_layer(name)


if __name__ == "__main__":
    main()
