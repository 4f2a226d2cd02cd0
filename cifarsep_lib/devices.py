"""Where training runs: the device Keras trains on, and data-parallel training over several.

``distribution_scope`` is the one context ``training.train`` builds, compiles and fits a
model under; ``accelerators`` and ``describe_device`` name what the active backend sees, for
logs and for notebooks that check for a GPU (``describe_machine`` names the CPU beneath it).
Keras has no backend-neutral API for either, so each function here asks the active backend in
its own terms; the distribution code that must be TensorFlow-only (``tf.distribute``
strategies) or JAX-only (``keras.distribution``) is kept in two private helpers.
"""

from __future__ import annotations

import contextlib
import os
import platform

import keras

DISTRIBUTIONS = ("none", "mirrored", "tpu", "data_parallel")


def distribution_kind(distribution: str | None) -> str:
    """``distribution`` as one of ``DISTRIBUTIONS`` (``None`` is ``"none"``, case ignored); a ValueError if unknown."""
    kind = (distribution or "none").lower()
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
    return kind


def _tf_strategy(kind: str):
    """The ``tf.distribute`` strategy for ``kind``: the TensorFlow-only part of ``distribution_scope``.

    ``"tpu"``: ``TPUStrategy`` on the TPU attached to this runtime (Colab, TPU VMs).
    Otherwise ``MirroredStrategy`` over all local GPUs or, without GPUs, over the logical
    CPU devices (several only if configured with ``tf.config.set_logical_device_configuration``
    before TensorFlow initialises; else one, and nothing is gained).
    """
    import tensorflow as tf

    if kind == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()  # Colab TPU runtime
        except ValueError:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")  # TPU VM
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if tf.config.list_logical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


@contextlib.contextmanager
def _jax_distribution(kind: str):
    """Make ``keras.distribution.DataParallel`` over the local devices current; restore the previous one after."""
    devices = keras.distribution.list_devices("tpu" if kind == "tpu" else None)
    if not devices:
        raise RuntimeError("distribution='tpu' but JAX sees no TPU devices")
    previous = keras.distribution.distribution()
    dist = keras.distribution.DataParallel(devices=devices)
    keras.distribution.set_distribution(dist)
    try:
        yield dist
    finally:
        keras.distribution.set_distribution(previous)


@contextlib.contextmanager
def distribution_scope(distribution: str | None):
    """Context for building, compiling and fitting a model under ``distribution``; yields the replica count.

    ``None``/``"none"``: no distribution, yields 1. Under TensorFlow, ``"mirrored"`` and
    ``"data_parallel"`` mean ``MirroredStrategy``, ``"tpu"`` ``TPUStrategy`` (its ``scope()``
    is entered). Under JAX, all three mean ``keras.distribution.DataParallel`` over the local
    devices (TPU devices only for ``"tpu"``), set globally and restored on exit.
    """
    kind = distribution_kind(distribution)
    backend = keras.backend.backend()
    if kind == "none":
        yield 1
    elif backend == "tensorflow":
        strategy = _tf_strategy(kind)
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    elif backend == "jax":
        with _jax_distribution(kind) as dist:
            yield dist.num_model_replicas
    else:
        raise NotImplementedError(
            f"distribution={distribution!r} is supported under the tensorflow and jax backends, not {backend}"
        )


def accelerators() -> list[str]:
    """Names of the non-CPU devices the active backend sees (empty on a CPU-only machine).

    ``keras.distribution.list_devices`` covers TensorFlow and JAX; Keras has no
    distribution support for PyTorch, so that backend is asked directly.
    """
    if keras.backend.backend() == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return [d for d in keras.distribution.list_devices() if not d.lower().startswith("cpu")]


def describe_cores() -> str:
    """The CPU cores this process may run on, e.g. ``"2 cores"``, or ``"1 of 2 cores"`` under
    ``taskset``: two runs side by side on one core each train at about 60 % of one run's speed
    on both, so a run's minutes only compare with runs on as many cores."""
    total = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else total
    if usable < total:
        return f"{usable} of {total} cores"
    return f"{total} core" if total == 1 else f"{total} cores"


def describe_machine(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The machine a run or benchmark used, e.g. ``"x86_64, 2 cores, AMD EPYC (family 25, model 17), AVX-512"``.

    The CPU's model name, family and model numbers (lscpu's "CPU family" and "Model") and
    whether it has AVX-512 come from ``cpuinfo`` where it exists (Linux). The lent 2-core
    machines differ from day to day, and so does the speed of one command on them (SepNet
    trained at 1,000-1,540 images/s on machines that all call themselves 2-core x86_64), so a
    run's minutes only compare with runs on the same model of CPU.
    """
    parts = [platform.processor() or platform.machine(), describe_cores()]
    try:
        with open(cpuinfo) as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
    except OSError:
        return ", ".join(parts)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    if fields.get("model name"):
        numbers = [
            f"{label} {fields[key]}" for key, label in (("cpu family", "family"), ("model", "model")) if fields.get(key)
        ]
        parts.append(fields["model name"] + (f" ({', '.join(numbers)})" if numbers else ""))
    flags = fields.get("flags", "").split()
    if flags:
        parts.append("AVX-512" if "avx512f" in flags else "no AVX-512")
    return ", ".join(parts)


def describe_device() -> str:
    """A human-readable name of the device Keras trains on (GPU name, or CPU)."""
    accel = accelerators()
    if accel and keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        return ", ".join(names) or ", ".join(accel)
    if accel and keras.backend.backend() == "jax":
        import jax

        return ", ".join(d.device_kind for d in jax.devices() if d.platform != "cpu")  # e.g. NVIDIA H100 80GB HBM3
    if accel and keras.backend.backend() == "torch":
        import torch

        return ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    if accel:
        return ", ".join(accel)
    return f"CPU ({platform.processor() or platform.machine()}, {describe_cores()})"


def check_even_split(replicas: int, batch_size: int, n_train: int, n_val: int, val_batch: int) -> None:
    """Under JAX's DataParallel every batch must split evenly across the devices; fail early if not."""
    sizes = {"batch_size": batch_size, "last training batch": n_train % batch_size or batch_size}
    sizes["last validation batch"] = n_val % val_batch or min(n_val, val_batch)
    uneven = {name: size for name, size in sizes.items() if size % replicas}
    if uneven:
        raise ValueError(
            f"data-parallel training on {replicas} devices needs every batch divisible by {replicas}; "
            f"these are not: {uneven}. Choose a batch size, --train-subset and --val-size that are."
        )
