"""Fake copies of standard data sets, laid out exactly as tfds would write them (no download)."""
import numpy as np
import tensorflow_datasets as tfds

from scm_jax.data import storage


def write_fake_cifar10(data_dir, count=16):
    """A data set laid out as `tfds build cifar10 --file_format=array_record` would lay it out."""
    builder = tfds.builder("cifar10", data_dir=data_dir)  # tfds's registered features and version
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    examples = (
        {"id": f"train_{i:05d}", "image": storage.png_bytes(images[i]), "label": i % 10} for i in range(count)
    )
    storage.write_tfds(data_dir, "cifar10", builder.info.features, {"train": examples}, version=str(builder.version))
    return images
