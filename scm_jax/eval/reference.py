"""Reference statistics from real images, for every feature network at once (`scm-evaluate --make_ref`).

The images come from an image folder (one subfolder per class, or flat), ADM-centre-cropped to the data set's
resolution as `python -m scm_jax.data.build` crops them, or from an `.npz` of uint8 NHWC images (`images` /
`arr_0`, e.g. an ADM reference batch), used as they are. At most `num` images, spread evenly over the sorted
files (every class of a class-sorted folder, not the first few), stream through the networks in batches, so the
reference can be a whole training set: mu / sigma of each network's features (float64 running sums,
`scm_jax.data.moments`) and the Inception features of up to `PR_REFERENCE_SIZE` of the images for
precision/recall, which `scm-evaluate` writes with `metrics.save_reference`.
"""
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np
import tqdm

from scm_jax.data import folders, importers
from scm_jax.data.moments import Moments
from scm_jax.eval.extractor import Extractor
from scm_jax.eval.images import require_uint8

PR_REFERENCE_SIZE = 10_000


def evenly_spaced(count: int, num: int | None) -> np.ndarray:
    """Indices of at most `num` of `count` items, spread evenly (all of them when num is None or larger)."""
    if num is None or num >= count:
        return np.arange(count)
    return np.linspace(0, count - 1, num).round().astype(int)


def image_batches(source: str, resolution: int | None, num: int | None, batch_size: int = 100
                  ) -> tuple[int, Iterator[np.ndarray]]:
    """(number of images, uint8 NHWC batches) of an image folder (ADM-cropped to `resolution`) or an `.npz`."""
    if not pathlib.Path(source).exists():
        raise FileNotFoundError(f"--source={source} does not exist; give an image folder or an .npz of uint8 images.")
    if pathlib.Path(source).suffix == ".npz":
        images = importers.npz_array(source, importers.IMAGE_KEYS)
        if images is None:
            raise ValueError(f"{source} holds no images under {importers.IMAGE_KEYS}; give uint8 NHWC images.")
        images = require_uint8(images, source)
        if resolution is not None and images.shape[1:3] != (resolution, resolution):
            raise ValueError(f"{source} holds {images.shape[2]}x{images.shape[1]} images, --resolution={resolution}; "
                             "npz images are used as they are: drop --resolution or crop them first.")
        images = images[evenly_spaced(len(images), num)]
        return len(images), (images[i:i + batch_size] for i in range(0, len(images), batch_size))
    if resolution is None:
        raise ValueError(f"--source={source} is an image folder: give --resolution=N, the data set's resolution (the "
                         "images are ADM-centre-cropped to NxN as the data build crops them).")
    files = importers.folder_images(source)[0]
    files = [files[i] for i in evenly_spaced(len(files), num)]
    return len(files), folders.image_batches(files, resolution, batch_size)


def reference_statistics(count: int, batches: Iterator[np.ndarray], extractors: Mapping[str, Extractor]
                         ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], np.ndarray | None]:
    """({network: (mu, sigma)}, Inception features of every k-th image, k = ceil(count / PR_REFERENCE_SIZE),
    or None without Inception) of `count` images in `batches`; progress (images, img/s) goes to stderr."""
    moments = {name: Moments() for name in extractors}
    every, seen, pr_features = -(-count // PR_REFERENCE_SIZE), 0, []
    with tqdm.tqdm(total=count, unit="img", desc="reference statistics") as progress:
        for batch in batches:
            for name, extractor in extractors.items():
                features = extractor.features(batch)
                moments[name].add(features)
                if name == "inception":
                    pr_features.append(features[(seen + np.arange(len(batch))) % every == 0])
            seen += len(batch)
            progress.update(len(batch))
    stats = {name: (m.mean, m.covariance) for name, m in moments.items()}
    return stats, np.concatenate(pr_features) if pr_features else None
