"""Pack a CIFAR-10 copy (the official binary layout) into a smaller lossless one, and back.

Usage:
    python scripts/pack_cifar10.py pack SRC OUT [--parts 3]
    python scripts/pack_cifar10.py unpack PART [PART ...] DEST

For moving CIFAR-10 to a machine without internet through a channel that carries less than
the 184 MB of the binary files: ``pack`` stores each batch file of ``SRC/cifar-10-batches-bin``
as one lossless WebP picture (its 10,000 images side by side, 100 to a row) and its labels as
10,000 raw bytes, about 17 MB a file instead of 31, spread over ``--parts`` folders
``OUT/part1 ...`` so that each can travel on its own. Each part holds a ``SHA256SUMS`` of the
original batch files it packs. ``unpack`` rebuilds those files byte for byte in
``DEST/cifar-10-batches-bin`` and checks every one against its checksum (it fails, writing
nothing for that file, when one differs); parts can be unpacked one at a time into the
same DEST. Needs numpy and Pillow only, not Keras, so that it runs before anything else is
installed. Then point ``CIFARSEP_DATA`` at DEST.

Why WebP: on CIFAR-10 it stores 1,685 bytes an image losslessly (PNG 2,157, xz on the raw
bytes 2,323; measured on the first 2,500 images of ``data_batch_1``). Pillow's WebP encoder
is lossless with ``lossless=True``; the checksums prove it for each file.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

RECORD_BYTES = 1 + 32 * 32 * 3  # one label byte, then the R, G and B planes (as cifarsep_lib.data)
BATCHES_DIR = "cifar-10-batches-bin"
IMAGES_PER_ROW = 100
META_FILE = "batches.meta.txt"


def to_picture(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) images as one picture, ``IMAGES_PER_ROW`` to a row, the last row padded with black."""
    columns = min(IMAGES_PER_ROW, len(images))
    rows = -(-len(images) // columns)
    padded = np.zeros((rows * columns, 32, 32, 3), np.uint8)
    padded[: len(images)] = images
    return padded.reshape(rows, columns, 32, 32, 3).transpose(0, 2, 1, 3, 4).reshape(rows * 32, columns * 32, 3)


def from_picture(picture: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` images of a picture made by ``to_picture``."""
    rows, columns = picture.shape[0] // 32, picture.shape[1] // 32
    images = picture.reshape(rows, 32, columns, 32, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 32, 32, 3)
    return images[:count]


def pack_file(batch: Path, out: Path) -> str:
    """Write ``NAME.webp`` and ``NAME.labels`` for one batch file into ``out``; return its SHA-256."""
    records = np.fromfile(batch, np.uint8)
    if records.size % RECORD_BYTES:
        raise ValueError(f"{batch}: {records.size} bytes is not a whole number of {RECORD_BYTES}-byte records")
    records = records.reshape(-1, RECORD_BYTES)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    Image.fromarray(to_picture(images)).save(out / f"{batch.stem}.webp", lossless=True, quality=100, method=4)
    records[:, 0].tofile(out / f"{batch.stem}.labels")
    return hashlib.sha256(records.tobytes()).hexdigest()  # the bytes already read: the file as it is


def pack(src: Path, out: Path, parts: int) -> list[Path]:
    """Pack every ``*.bin`` of ``src/cifar-10-batches-bin`` into ``parts`` folders under ``out``."""
    batches = sorted((src / BATCHES_DIR).glob("*.bin"))
    if not batches:
        raise FileNotFoundError(f"no *.bin files in {src / BATCHES_DIR}")
    folders = [out / f"part{i + 1}" for i in range(parts)]
    sums: list[list[str]] = [[] for _ in folders]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        if (src / BATCHES_DIR / META_FILE).exists():  # small: every part carries the class names
            shutil.copy(src / BATCHES_DIR / META_FILE, folder / META_FILE)
    for i, batch in enumerate(batches):
        # In order, an equal share each: part1 gets data_batch_1 and _2 of the six files.
        part = i * parts // len(batches)
        sums[part].append(f"{pack_file(batch, folders[part])}  {batch.name}")
    for folder, lines in zip(folders, sums, strict=True):
        (folder / "SHA256SUMS").write_text("".join(f"{line}\n" for line in lines))
    return folders


def unpack(part: Path, dest: Path) -> list[Path]:
    """Rebuild the batch files of one part into ``dest/cifar-10-batches-bin``, each checked against its SHA-256."""
    batches = dest / BATCHES_DIR
    batches.mkdir(parents=True, exist_ok=True)
    written = []
    for line in (part / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        stem = Path(name).stem
        labels = np.fromfile(part / f"{stem}.labels", np.uint8)
        picture = np.asarray(Image.open(part / f"{stem}.webp").convert("RGB"))
        images = from_picture(picture, len(labels))
        records = np.concatenate([labels[:, None], images.transpose(0, 3, 1, 2).reshape(len(labels), -1)], axis=1)
        data = records.tobytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"{part / stem}: the rebuilt {name} does not match its SHA-256; nothing written")
        (batches / name).write_bytes(data)
        written.append(batches / name)
    if (part / META_FILE).exists():
        shutil.copy(part / META_FILE, batches / META_FILE)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pack_parser = commands.add_parser("pack", help="SRC (holding cifar-10-batches-bin/) -> OUT/part1 ...")
    pack_parser.add_argument("src", type=Path)
    pack_parser.add_argument("out", type=Path)
    pack_parser.add_argument("--parts", type=int, default=3, help="folders to spread the files over")
    unpack_parser = commands.add_parser("unpack", help="PART [PART ...] -> DEST/cifar-10-batches-bin")
    unpack_parser.add_argument("folders", type=Path, nargs="+", metavar="PART ... DEST")
    args = parser.parse_args()
    if args.command == "pack":
        for folder in pack(args.src, args.out, args.parts):
            size = sum(f.stat().st_size for f in folder.iterdir())
            print(f"{folder}: {len(list(folder.glob('*.webp')))} batch files, {size / 2**20:.1f} MiB")
    else:
        *parts, dest = args.folders
        if not parts:
            parser.error("unpack needs at least one PART and a DEST")
        for part in parts:
            for path in unpack(part, dest):
                print(f"{path}: rebuilt, SHA-256 matches")


if __name__ == "__main__":
    main()
