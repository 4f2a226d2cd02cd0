"""Shared fixtures and helpers: the offline CIFAR-10 copy, small synthetic batch folders,
which BatchNormalization a model uses, and the scripts as modules."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "cifar10").resolve()


def load_script(name: str):
    """The module ``scripts/<name>.py``, imported (the scripts folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_data_dir() -> Path | None:
    """The real CIFAR-10 copy: $CIFARSEP_DATA, else ../shared/cifar10 beside the project."""
    env = os.environ.get("CIFARSEP_DATA")
    for candidate in (Path(env).resolve() if env else None, SHARED_DATA):
        if candidate is not None and (candidate / "cifar-10-batches-bin").is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    found = real_data_dir()
    if found is None:
        pytest.skip("real CIFAR-10 copy not found (set CIFARSEP_DATA)")
    return found


def write_batch(path: Path, labels, seed: int = 0) -> np.ndarray:
    """Write a binary batch with the given labels and random pixels; return the images (N,32,32,3)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.uint8)
    planes = rng.integers(0, 256, size=(len(labels), 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([labels[:, None], planes.reshape(len(labels), -1)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    records.tofile(path)
    return planes.transpose(0, 2, 3, 1)


def make_fake_cifar(root: Path) -> Path:
    """A full-size synthetic CIFAR-10 folder (balanced labels, random pixels)."""
    batches = root / "cifar-10-batches-bin"
    for i in range(1, 6):
        write_batch(batches / f"data_batch_{i}.bin", np.tile(np.arange(10), 1000), seed=i)
    write_batch(batches / "test_batch.bin", np.tile(np.arange(10), 1000), seed=9)
    return root


@pytest.fixture(scope="session")
def fake_cifar(tmp_path_factory) -> Path:
    return make_fake_cifar(tmp_path_factory.mktemp("fake_cifar"))


def batch_norm_kinds(model) -> set[str]:
    """The kinds of BatchNorm in ``model``: ``"fused"`` (``layers.FusedBatchNormalization``)
    and/or ``"keras"`` (Keras' own); empty if it has none."""
    import keras

    from cifarsep_lib.layers import FusedBatchNormalization

    return {
        "fused" if isinstance(layer, FusedBatchNormalization) else "keras"
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }


class FakeClock:
    """A stand-in for ``time.perf_counter``: reads ``now``, which advances by ``tick`` per reading
    (0: only when a test sets it; 1: time spent is a count of readings)."""

    def __init__(self, tick: float = 0.0):
        self.now, self.tick = 0.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now
