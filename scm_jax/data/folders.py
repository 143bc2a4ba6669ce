"""Image folders: files and labels (one subfolder per class, or flat), decoding with the file named on error, ADM's
centre crop, and batches decoded by a thread pool ahead of their use (Pillow decodes and resizes without the GIL).
"""
import collections
import concurrent.futures
import os
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(root: pathlib.Path) -> tuple[list[pathlib.Path], list[int] | None, tuple[str, ...] | None]:
    """(files, labels, class names): labels from subfolder names (sorted), or None for a flat folder."""
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    if not folders:
        files = _images_in(root)
        if not files:
            raise ValueError(f"{root} holds no {'/'.join(IMAGE_SUFFIXES)} files and no class subfolders.")
        return files, None, None
    if _images_in(root):
        raise ValueError(f"{root} mixes image files and subfolders; use one subfolder per class or none.")
    files, labels = [], []
    for label, folder in enumerate(folders):
        found = _images_in(folder)
        if not found:
            raise ValueError(f"Class folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files.")
        files += found
        labels += [label] * len(found)
    return files, labels, tuple(folder.name for folder in folders)


def _images_in(folder: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def open_image(file: pathlib.Path | str) -> Image.Image:
    """Pillow's image of `file`, decoded; an unreadable or truncated file is an error naming it."""
    try:
        image = Image.open(file)
        image.load()
    except OSError as e:
        raise ValueError(f"{file} is not a readable image ({e}); remove or replace it.") from None
    return image


def load_image(file: pathlib.Path, resolution: int | None, channels: int = 3) -> np.ndarray:
    """uint8 HWC pixels of `file` (RGB, or grayscale for `channels` 1), ADM-cropped to `resolution` when given."""
    with open_image(file) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        if resolution is not None:
            image = center_crop_resize(image, resolution)
        array = np.asarray(image)
    return array[..., None] if channels == 1 else array


def center_crop_resize(image: Image.Image, resolution: int) -> Image.Image:
    """ADM's ImageNet preprocessing: box-halve while large, bicubic to the short side, center crop."""
    while min(image.size) >= 2 * resolution:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.Resampling.BOX)
    scale = resolution / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.Resampling.BICUBIC)
    left, top = (image.size[0] - resolution) // 2, (image.size[1] - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def image_batches(files: Sequence[pathlib.Path], resolution: int, batch_size: int, workers: int | None = None,
                  ahead: int = 2) -> Iterator[np.ndarray]:
    """uint8 RGB batches [<= batch_size, resolution, resolution, 3] of `files` in order, ADM-cropped (any size in,
    one size out), decoded by `workers` threads (default: the CPU count) up to `ahead` batches in advance."""
    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        pending = collections.deque()
        for start in range(0, len(files), batch_size):
            pending.append([pool.submit(load_image, f, resolution) for f in files[start:start + batch_size]])
            if len(pending) > ahead:
                yield np.stack([future.result() for future in pending.popleft()])
        while pending:
            yield np.stack([future.result() for future in pending.popleft()])
