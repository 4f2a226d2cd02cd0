"""Where a training step's time goes on this machine, and what a change to the model buys.

Usage:
    python scripts/benchmark_layers.py [--models sepnet_fast sepnet_fast_s2] [--per-layer sepnet_fast]

Two measurements, both printed as figures (not timed tests):

* **Paired steps**: each model of ``--models`` and, for each, the same network with
  ``layers.FusedBatchNormalization`` instead of Keras' own ``BatchNormalization``
  ("+fusedbn"), trained one step at a time in turn on the same batch of 256
  (``speed.paired_step_times``). The ratios to the first model are measured in one run.
* **Per layer** (TensorFlow backend): forward and backward time of each layer of
  ``--per-layer``, in isolation, on a batch of 256 at the shape it sees in a 32x32 image,
  with the BatchNorm layer the recipe trains (the fused one; ``--keras-batchnorm``: Keras'
  own). The sum is close to a whole step; the table shows which layers and resolutions
  cost, and each separable convolution's depthwise and pointwise steps timed apart.
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
        if models.has_fused_batchnorm_variant(name):  # the base models have none
            built[f"{name}+fusedbn"] = models.build(name, fused_batchnorm=True)
    times = speed.paired_step_times(built, rounds=rounds)
    print("\n".join(speed.paired_step_table(built, times)))


def _first_trained_layer(model) -> int:
    """Index in ``model.layers`` of the first layer with weights to train.

    Training computes no gradient with respect to the inputs of that layer and those
    before it (the image's normalisation, the stem): backpropagation stops at the first
    weights. Timing those input gradients anyway would charge the stem for work a real step
    never does. (The series' networks start as a chain, so layer order says what is upstream.)
    """
    return next(i for i, layer in enumerate(model.layers) if layer.trainable_weights)


def _time_layer(layer, shapes, input_gradient: bool, repeats: int) -> float:
    """Seconds of one forward+backward pass of ``layer`` on random inputs of ``shapes`` (batch 256)."""
    import tensorflow as tf  # GradientTape: this table is TensorFlow-only

    xs = [tf.random.normal((256, *shape)) for shape in shapes]

    @tf.function
    def step(xs):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            out = layer(xs if len(xs) > 1 else xs[0], training=True)
            loss = tf.reduce_sum(out * out)
        return tape.gradient(loss, [*xs, *layer.trainable_weights] if input_gradient else layer.trainable_weights)

    step(xs)  # trace
    start = time.perf_counter()
    for _ in range(repeats):
        step(xs)
    return (time.perf_counter() - start) / repeats


def _separable_halves(layer, in_shape, out_shape):
    """A ``SeparableConv2D``'s two steps as layers of their own: the per-channel k x k one, and the 1x1 one."""
    depthwise = keras.layers.DepthwiseConv2D(
        layer.kernel_size, strides=layer.strides, padding=layer.padding, use_bias=False
    )
    pointwise = keras.layers.Dense(layer.filters, use_bias=layer.use_bias)  # a 1x1 convolution
    return [("  depthwise", depthwise, in_shape), ("  pointwise 1x1", pointwise, (*out_shape[:-1], in_shape[-1]))]


def per_layer(name: str, fused_batchnorm: bool, repeats: int = 5) -> None:
    model = models.build(name, fused_batchnorm=fused_batchnorm)
    inputs_of = {layer.name: keras.tree.flatten(layer.input) for layer in model.layers[1:]}
    tensors = {id(t): t for ins in inputs_of.values() for t in ins}
    probe = keras.Model(model.input, list(tensors.values()))
    outputs = probe(np.zeros((1, 32, 32, 3), "float32"))
    shape_of = {key: tuple(o.shape[1:]) for key, o in zip(tensors, outputs, strict=True)}
    first_trained = _first_trained_layer(model)
    rows = []
    for i, layer in enumerate(model.layers[1:], start=1):
        shapes = [shape_of[id(t)] for t in inputs_of[layer.name]]
        grad = i > first_trained
        rows.append((layer.name, type(layer).__name__, shapes[0], _time_layer(layer, shapes, grad, repeats)))
        if isinstance(layer, keras.layers.SeparableConv2D):
            out_shape = layer.compute_output_shape((None, *shapes[0]))[1:]
            for label, half, shape in _separable_halves(layer, shapes[0], out_shape):
                half.build((None, *shape))
                rows.append((label, type(half).__name__, shape, _time_layer(half, [shape], grad, repeats)))
    total = sum(seconds for (layer_name, *_, seconds) in rows if not layer_name.startswith("  "))
    batchnorm = "FusedBatchNormalization" if fused_batchnorm else "Keras' BatchNormalization"
    print(f"per-layer forward+backward of {name} ({batchnorm}), batch 256 (input shape of each layer);")
    print("  the indented rows time a separable convolution's two steps apart (not added to the total);")
    print("  input gradients only where training computes them (not for the layers before the first weights)")
    for layer_name, kind, shape, seconds in rows:
        print(f"  {layer_name:22s} {kind:24s} {str(shape):14s} {1e3 * seconds:6.1f} ms  {seconds / total:5.1%}")
    print(f"  total {1e3 * total:.0f} ms per step of 256 images ({256 / total:.0f} images/s, layers alone)")
    for kind in ("FusedBatchNormalization", "BatchNormalization", "SeparableConv2D", "ReLU", "Add"):
        share = sum(seconds for (_, k, _, seconds) in rows if k == kind) / total
        if share:
            print(f"  all {kind} layers: {share:.0%}")
    for half in ("  depthwise", "  pointwise 1x1"):
        share = sum(seconds for (layer_name, *_, seconds) in rows if layer_name == half) / total
        print(f"  {half.strip()} steps of the separable convolutions, timed apart: {share:.0%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["sepnet_fast", "sepnet_fast_s2"])
    parser.add_argument("--rounds", type=int, default=25, help="training steps timed per model")
    parser.add_argument("--per-layer", nargs="*", default=["sepnet_fast", "sepnet_fast_s2"])
    parser.add_argument(
        "--keras-batchnorm",
        action="store_true",
        help="per layer: profile with Keras' own BatchNormalization (default: the fused layer, as trained)",
    )
    args = parser.parse_args()
    print(speed.benchmark_header())
    paired(args.models, args.rounds)
    if keras.backend.backend() == "tensorflow":
        for name in args.per_layer:
            per_layer(name, fused_batchnorm=not args.keras_batchnorm and models.has_fused_batchnorm_variant(name))


if __name__ == "__main__":
    main()
