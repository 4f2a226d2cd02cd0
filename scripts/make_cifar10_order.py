"""Write ``cifarsep_lib/cifar10_order.npz``: the series' order of CIFAR-10, as pixel fingerprints.

Usage:
    python scripts/make_cifar10_order.py [DATA_DIR]   (default: $CIFARSEP_DATA)

The series' order is the course's offline copy's (``../shared/cifar10``), the copy every
shipped model trained on. ``data.load_cifar10`` puts any copy of CIFAR-10, the official
archive included, in that order, so that a seeded validation split holds out the same
images everywhere. The file holds one 64-bit fingerprint per image (``data.fingerprints``),
no pixels. Run once; the result is committed.
"""

import sys

import numpy as np

from cifarsep_lib import data

if __name__ == "__main__":
    folder = data.resolve_data_dir(sys.argv[1] if len(sys.argv) > 1 else None)
    if folder is None:
        sys.exit("give the offline copy's folder, or set CIFARSEP_DATA")
    (x_train, _), (x_test, _) = data.load_from_folder(folder)
    prints = {"train": data.fingerprints(x_train), "test": data.fingerprints(x_test)}
    for part, found in prints.items():
        if len(np.unique(found)) != len(found):
            sys.exit(f"two {part} images share a fingerprint: the order could not be recovered")
    np.savez(data.ORDER_FILE, **prints)
    print(f"wrote {data.ORDER_FILE} ({len(prints['train']):,} + {len(prints['test']):,} fingerprints)")
