"""scripts/pack_cifar10.py: a packed copy unpacks to the same bytes, and a damaged one is refused."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_script, write_batch

pack_cifar10 = load_script("pack_cifar10")


@pytest.fixture
def small_copy(tmp_path):
    """Three batch files of 250 random images each (not a whole number of rows of 100) and the class names."""
    batches = tmp_path / "src" / "cifar-10-batches-bin"
    for i, name in enumerate(("data_batch_1", "data_batch_2", "test_batch")):
        write_batch(batches / f"{name}.bin", np.arange(250) % 10, seed=i)
    (batches / "batches.meta.txt").write_text("airplane\nautomobile\n")
    return tmp_path / "src"


def test_unpacked_files_equal_the_originals(small_copy, tmp_path):
    parts = pack_cifar10.pack(small_copy, tmp_path / "packed", parts=2)
    assert [len(list(p.glob("*.webp"))) for p in parts] == [2, 1]
    dest = tmp_path / "dest"
    for part in parts:  # one at a time into the same folder, as over several transfers
        pack_cifar10.unpack(part, dest)
    for original in (small_copy / "cifar-10-batches-bin").iterdir():
        assert (dest / "cifar-10-batches-bin" / original.name).read_bytes() == original.read_bytes()


def test_the_picture_holds_every_image_where_from_picture_looks():
    images = np.random.default_rng(0).integers(0, 256, (250, 32, 32, 3), dtype=np.uint8)
    picture = pack_cifar10.to_picture(images)
    assert picture.shape == (3 * 32, 100 * 32, 3)
    np.testing.assert_array_equal(pack_cifar10.from_picture(picture, 250), images)
    np.testing.assert_array_equal(picture[64:96, 50 * 32 :], 0)  # the padding after image 250


def test_a_damaged_part_is_refused_and_writes_nothing(small_copy, tmp_path):
    (part,) = pack_cifar10.pack(small_copy, tmp_path / "packed", parts=1)
    labels = part / "data_batch_2.labels"
    damaged = bytearray(labels.read_bytes())
    damaged[7] = (damaged[7] + 1) % 10
    labels.write_bytes(bytes(damaged))
    dest = tmp_path / "dest"
    with pytest.raises(ValueError, match="data_batch_2.bin does not match"):
        pack_cifar10.unpack(part, dest)
    assert not (dest / "cifar-10-batches-bin" / "data_batch_2.bin").exists()
