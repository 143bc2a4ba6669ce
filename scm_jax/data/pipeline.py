"""Grain input pipeline: per-process local batches, deterministic for a seed, with checkpointable state.

Records are shuffled (reshuffled each epoch), repeated, decoded and cut into chunks of the local batch size
B = global_batch_size / process_count. Global batch s is chunks s*P .. s*P+P-1 of that one stream, and
process p reads chunk s*P+p, so the processes hold disjoint parts of the same global batch without any
communication. The same global batches come out for any process count, so a state saved with P processes
can be restored with another P.
"""
import functools
from typing import Literal

import grain
import numpy as np

from scm_jax.data import latents

Batch = dict[str, np.ndarray]


class Loader:
    """Iterator over {"image": float32 [B, H, W, C], "label": int32 [B]} with JSON-able get/set_state."""

    def __init__(self, dataset: grain.MapDataset, fingerprint: dict, num_threads: int):
        options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(num_threads, 1))
        self._iterator = iter(dataset.to_iter_dataset(options))
        self._fingerprint = fingerprint

    def __iter__(self) -> "Loader":
        return self

    def __next__(self) -> Batch:
        return next(self._iterator)

    def get_state(self) -> dict:
        """Position in the batch stream plus the settings that define the stream (JSON-serialisable)."""
        return {"iterator": self._iterator.get_state(), "fingerprint": dict(self._fingerprint)}

    def set_state(self, state: dict) -> None:
        """Resumes at `state`; the next batch is the one that followed when the state was saved."""
        if state["fingerprint"] != self._fingerprint:
            raise ValueError(
                f"Data iterator state was saved for {state['fingerprint']}, this loader is {self._fingerprint}; "
                "restore with the same data set, seed, global batch size, shuffle and epochs."
            )
        self._iterator.set_state(state["iterator"])


def make_loader(
    source: grain.sources.RandomAccessDataSource, *, global_batch_size: int, process_index: int,
    process_count: int, seed: int, num_epochs: int | None = None, shuffle: bool = True,
    kind: Literal["pixels", "latents"] = "pixels",
    image_shape: tuple[int, int, int] | None = None, num_threads: int = 2, num_classes: int | None = None,
    latent_scale: latents.LatentScale | None = None,
) -> Loader:
    """Local batches of `source` records {"image": HWC, "label": int (optional)} for this process.

    Pixels (uint8) become float32 in [-1, 1]; raw latents are scaled to per-channel mean 0, std sigma_d by
    `latent_scale` (default: the scale the source records; `scm_jax.data.latents`). Sets without labels give
    label 0. `num_epochs=None` repeats forever; a finite count drops the last incomplete global batch.
    `image_shape` (H, W, C), when given, must match the records (e.g. the model's input shape). Every batch's
    labels must lie in [0, num_classes) (default: the class count the source records; 0: unchecked), checked on
    the host: an out-of-range label would index past the model's class embedding.
    """
    local_batch_size = _check_batch(global_batch_size, process_index, process_count, len(source))
    _check_record(source[0], kind, image_shape)
    scale = _latent_scale(source, latent_scale) if kind == "latents" else None
    dataset = grain.MapDataset.source(source)
    if shuffle:
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset.repeat(num_epochs).map(functools.partial(_to_arrays, kind=kind, scale=scale))
    dataset = dataset.batch(local_batch_size, drop_remainder=True)
    num_classes = recorded_classes(source) if num_classes is None else num_classes
    if num_classes:
        dataset = dataset.map(functools.partial(_check_labels, num_classes=num_classes))
    stop = None if num_epochs is None else len(source) * num_epochs // global_batch_size * process_count
    dataset = dataset.slice(slice(process_index, stop, process_count))
    fingerprint = {
        "num_records": len(source), "seed": seed, "global_batch_size": global_batch_size,
        "shuffle": shuffle, "num_epochs": num_epochs, "kind": kind,
    }
    return Loader(dataset, fingerprint, num_threads)


def _to_arrays(record: dict, *, kind: str, scale: latents.LatentScale | None) -> Batch:
    image = np.asarray(record["image"], np.float32)
    image = image / 127.5 - 1.0 if kind == "pixels" else scale.normalize(image)
    return {"image": image, "label": np.int32(record.get("label", 0))}


def _latent_scale(source: grain.sources.RandomAccessDataSource, given: latents.LatentScale | None
                  ) -> latents.LatentScale:
    scale = latents.recorded_scale(source) if given is None else given
    if scale is None:
        raise ValueError(f"the latent data set records no per-channel mean / std of its latents; {latents.REBUILD}.")
    channels = np.asarray(source[0]["image"]).shape[-1]
    if len(scale.mean) != channels:
        raise ValueError(f"the latent scale has {len(scale.mean)} channels, the records {channels}; {latents.REBUILD}.")
    return scale


def recorded_classes(source: grain.sources.RandomAccessDataSource) -> int:
    """The class count a tfds source records (0: no labels or nothing recorded)."""
    info = getattr(source, "dataset_info", None)
    return info.features["label"].num_classes if info is not None and "label" in info.features else 0


def _check_labels(batch: Batch, *, num_classes: int) -> Batch:
    labels = batch["label"]
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = labels[(labels < 0) | (labels >= num_classes)]
        raise ValueError(f"data: a batch holds label {int(bad[0])} ({len(bad)} of {len(labels)} out of range), outside "
                         f"[0, data.num_classes={num_classes}); set --config.data.num_classes to the set's number "
                         "of classes or rebuild the set with labels 0..K-1.")
    return batch


def _check_batch(global_batch_size: int, process_index: int, process_count: int, num_records: int) -> int:
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size={global_batch_size} must be a positive multiple of process_count={process_count}."
        )
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must lie in [0, {process_count}).")
    if num_records < global_batch_size:
        raise ValueError(
            f"The data set has {num_records} records, fewer than one global batch of {global_batch_size}; "
            "lower the batch size or use a larger data set."
        )
    return global_batch_size // process_count


def _check_record(record: dict, kind: str, image_shape: tuple[int, int, int] | None) -> None:
    if kind not in ("pixels", "latents"):
        raise ValueError(f"kind must be 'pixels' or 'latents', got {kind!r}.")
    image = np.asarray(record["image"])
    if kind == "pixels" and image.dtype != np.uint8:
        raise ValueError(
            f"kind='pixels' needs uint8 images in [0, 255], the data set holds {image.dtype.name}; "
            "use kind='latents' for float arrays, or rebuild the set from uint8 images."
        )
    if kind == "latents" and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"kind='latents' needs float arrays, the data set holds {image.dtype.name} (pixels?).")
    if image.ndim != 3 or (image_shape is not None and image.shape != tuple(image_shape)):
        raise ValueError(
            f"Records hold images of shape {image.shape}, expected {image_shape or 'H, W, C'}; set "
            "--config.data.image_size / --config.data.channels to the records' shape, or rebuild the set (python -m "
            "scm_jax.data.build --resolution=N --channels=C, for image folders)."
        )
