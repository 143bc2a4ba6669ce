"""Resolves a data set name to a random-access tfds data source (array_record, no TensorFlow)."""
import dataclasses
import os
import types
from typing import Literal

import grain
import tensorflow_datasets as tfds

from scm_jax.data import importers, latents, storage

# Short names used in configs -> tfds names (with config).
ALIASES = types.MappingProxyType({"cifar10": "cifar10", "imagenet64": "imagenet_resized/64x64"})
EMBEDDED_CACHE = "~/.cache/scm_jax"
KINDS = ("pixels", "latents")


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """Which data set to read. Build from a config with `DataOptions(**config.data)`.

    name: "embedded" (MNIST-5k, built once into data_dir or ~/.cache/scm_jax), an alias in ALIASES,
      any tfds name ("name/config" allowed), or a name written by `python -m scm_jax.data.build`.
    data_dir: tfds data dir; None uses tfds's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
    kind: "pixels" (uint8 images) or "latents" (float32 arrays); the loader checks the data against it.
    """

    name: str = "embedded"
    data_dir: str | None = None
    split: str = "train"
    kind: Literal["pixels", "latents"] = "pixels"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}.")


def open_source(options: DataOptions) -> grain.sources.RandomAccessDataSource:
    """Random-access source of dicts {"image": HWC array, "label": int (if the set has labels)}."""
    if options.name == "embedded":
        data_dir = options.data_dir or os.path.expanduser(EMBEDDED_CACHE)
        _build_embedded_once(data_dir)
        return _open(importers.EMBEDDED_NAME, data_dir, options.split)
    return _open(ALIASES.get(options.name, options.name), options.data_dir, options.split)


def latent_scale(options: DataOptions) -> latents.LatentScale:
    """The scale recorded with the latent data set `options` names: what decoding a latent run's samples needs."""
    scale = latents.recorded_scale(open_source(options))
    if scale is None:
        raise ValueError(f"data set {options.name!r} records no latent mean / std; {latents.REBUILD}.")
    return scale


def _build_embedded_once(data_dir: str) -> None:
    if storage.is_prepared(data_dir, importers.EMBEDDED_NAME):
        return
    try:
        importers.import_embedded(data_dir)
    except OSError:  # another process sharing data_dir (e.g. another host) finished it first
        if not storage.is_prepared(data_dir, importers.EMBEDDED_NAME):
            raise


def _open(name: str, data_dir: str | None, split: str) -> grain.sources.RandomAccessDataSource:
    root = data_dir or tfds.core.constants.DATA_DIR
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise FileNotFoundError(
            f"Data set {name!r} not found in data_dir={root}. Build it from an image folder or .npz:\n"
            f"  python -m scm_jax.data.build --source=PATH --name={name} --data_dir={root}"
        ) from None
    if not builder.is_prepared():
        raise FileNotFoundError(_unprepared_tfds_set(name, builder.data_dir, root))
    if builder.info.file_format != tfds.core.FileFormat.ARRAY_RECORD:
        raise ValueError(
            f"{builder.data_dir} is stored as {builder.info.file_format.value}; random access needs "
            f"array_record. On a machine with TensorFlow run: "
            f"tfds build {name} --data_dir={root} --file_format=array_record"
        )
    if split not in builder.info.splits:
        raise ValueError(f"{builder.data_dir} has splits {list(builder.info.splits)}, not {split!r}.")
    return builder.as_data_source(split)


def _unprepared_tfds_set(name: str, looked_in: str, root: str) -> str:
    local = name.replace("/", "_") + "_local"
    return (
        f"tfds data set {name!r} is not prepared: no dataset_info.json in {looked_in}. Either\n"
        f"  on a machine with TensorFlow and internet run\n"
        f"    tfds build {name} --data_dir={root} --file_format=array_record\n"
        f"  and copy the {name.split('/')[0]} folder to {root}, or import your own copy of the data:\n"
        f"    python -m scm_jax.data.build --source=PATH --name={local} --data_dir={root}\n"
        f"  and train with data.name={local!r}."
    )
