"""Writes data sets as tfds array_record directories, without TensorFlow.

What tfds 4.9.10 can write with TensorFlow absent (each checked here, no `tensorflow` installed):
- `tfds.dataset_builders.store_as_tfds_dataset` fails: `AdhocBuilder._split_generators` evaluates
  `isinstance(dataset, tf.data.Dataset)` on every split -> `ModuleNotFoundError: tensorflow`.
- `tfds.features.Image.encode_example(np.ndarray)` encodes with `tf.image.encode_png` (TensorFlow);
  given PNG bytes it stores them as they are, so we encode with Pillow.
- A `tfds.core.GeneratorBasedBuilder` prepared with `file_format="array_record"` works: tfds serialises
  examples with its own protobufs (`tensorflow_datasets.proto`) and writes the array_record shards,
  `dataset_info.json` and `features.json` that `tfds.data_source` and `builder_from_directory` read.
- `DatasetBuilder.code_path` needs `importlib_resources`, which tfds 4.9.10 uses but does not declare
  (tensorflow/datasets#11212). A builder without a code path skips it; ours has no checksums file to find.
- `DatasetInfo.metadata` (a `tfds.core.MetadataDict`) is written as `metadata.json` after the examples, and read
  back as `info.metadata` by `tfds.data_source` / `builder_from_directory`: what a latent set's scale needs.
"""
import dataclasses
import io
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

ARRAY_RECORD = "array_record"
VERSION = "1.0.0"
_NAME = re.compile(r"[a-z][a-z0-9_]*")


class _ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes the given example streams, in order, as one tfds data set; then `metadata()` as its metadata."""

    code_path = None  # see module docstring: avoids tfds's undeclared `importlib_resources` import

    def __init__(
        self, *, name: str, version: str, features: tfds.features.FeaturesDict,
        splits: Mapping[str, Iterable[dict]], data_dir: str, description: str,
        metadata: Callable[[], Mapping] | None,
    ):
        self.name = name
        self.VERSION = tfds.core.Version(version)  # pylint: disable=invalid-name
        self._features, self._splits, self._description = features, splits, description
        self._metadata = metadata
        super().__init__(data_dir=data_dir, version=version, file_format=ARRAY_RECORD)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self, description=self._description, features=self._features,
            disable_shuffling=True,  # record i is the i-th example given; grain shuffles at read time
            metadata=None if self._metadata is None else tfds.core.MetadataDict(),
        )

    def _download_and_prepare(self, dl_manager, download_config):
        super()._download_and_prepare(dl_manager, download_config)
        if self._metadata is not None:  # measured while the examples streamed by; tfds writes it next
            self.info.metadata.update(self._metadata())

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(examples) for split, examples in self._splits.items()}

    def _generate_examples(self, examples: Iterable[dict]):
        yield from enumerate(examples)


def write_tfds(
    data_dir: str, name: str, features: tfds.features.FeaturesDict,
    splits: Mapping[str, Iterable[dict]], *, version: str = VERSION, description: str = "",
    metadata: Callable[[], Mapping] | None = None,
) -> epath.Path:
    """Writes `splits` (split name -> encoded examples) to `data_dir/name/version`; returns that folder.
    `metadata()`, called once every example is written, gives the JSON-able `metadata.json` (`info.metadata`)."""
    check_name(name)
    builder = _ArrayRecordBuilder(
        name=name, version=version, features=features, splits=splits, data_dir=data_dir,
        description=description, metadata=metadata,
    )
    if builder.is_prepared():
        raise FileExistsError(
            f"{builder.data_dir} already holds data set {name!r}; delete that folder or choose another name."
        )
    with tempfile.TemporaryDirectory() as downloads:  # tfds wants one; we download nothing
        builder.download_and_prepare(download_dir=downloads)
    return epath.Path(builder.data_dir)


def check_name(name: str) -> None:
    """tfds data set names are snake_case identifiers."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"Data set name {name!r} must be snake_case ([a-z][a-z0-9_]*), e.g. 'my_faces'.")


def is_prepared(data_dir: str, name: str, version: str = VERSION) -> bool:
    """Whether `write_tfds` finished writing `data_dir/name/version` (tfds renames it into place last)."""
    return (epath.Path(data_dir) / name / version / "dataset_info.json").exists()


@dataclasses.dataclass(frozen=True)
class ArrayFeatures:
    """How one example's array and label are stored: uint8 pixels as PNG, float latents raw."""

    shape: tuple[int, int, int]
    latents: bool = False
    class_names: tuple[str, ...] | None = None

    def __post_init__(self):
        if len(self.shape) != 3:
            raise ValueError(f"Examples must be HWC arrays, got shape {self.shape}.")
        if not self.latents and self.shape[-1] not in (1, 3, 4):
            raise ValueError(f"Pixel images need 1, 3 or 4 channels, got shape {self.shape}.")

    @classmethod
    def from_tfds(cls, features: tfds.features.FeaturesDict) -> "ArrayFeatures | None":
        """What a stored data set records about its examples (None for images of unrecorded size)."""
        image = features["image"]
        if len(image.shape) != 3 or None in image.shape:
            return None
        label = features["label"] if "label" in features else None
        names = None if label is None else tuple(label.names)
        return cls(tuple(image.shape), not isinstance(image, tfds.features.Image), names)

    @property
    def kind(self) -> str:
        return "latents" if self.latents else "pixels"

    @property
    def num_classes(self) -> int:
        """Recorded classes; 0 for a set without labels (as data.num_classes says it)."""
        return 0 if self.class_names is None else len(self.class_names)

    def config_flags(self) -> str:
        """The scm-train overrides that make a config's data match these examples."""
        height, width, channels = self.shape
        size = height if height == width else f"{height} (non-square {height}x{width}: not trainable)"
        return (f"--config.data.image_size={size} --config.data.channels={channels} "
                f"--config.data.num_classes={self.num_classes} --config.data.kind={self.kind}")

    def tfds_features(self) -> tfds.features.FeaturesDict:
        image = (
            tfds.features.Tensor(shape=self.shape, dtype=np.float32) if self.latents
            else tfds.features.Image(shape=self.shape, encoding_format="png")
        )
        if self.class_names is None:
            return tfds.features.FeaturesDict({"image": image})
        return tfds.features.FeaturesDict(
            {"image": image, "label": tfds.features.ClassLabel(names=list(self.class_names))}
        )

    def encode(self, image: np.ndarray, label: int | None = None) -> dict:
        """One example as `tfds_features()` stores it; checks dtype, shape and (latents) finite values."""
        dtype = np.float32 if self.latents else np.uint8
        if image.dtype != dtype or image.shape != self.shape:
            raise ValueError(
                f"expected a {np.dtype(dtype).name} array of shape {self.shape}, "
                f"got {image.dtype.name} {image.shape}; every image of a data set has one dtype and shape."
            )
        if self.latents and not np.isfinite(image).all():
            raise ValueError("holds NaN or Inf values; clean the latents (np.isfinite) before building.")
        example = {"image": image if self.latents else png_bytes(image)}
        if self.class_names is not None:
            example["label"] = label
        return example

    def encode_all(self, images: np.ndarray, labels: np.ndarray | None = None) -> Iterator[dict]:
        """Encodes NHWC `images` and their labels (required iff the features have class names)."""
        if (labels is None) != (self.class_names is None):
            raise ValueError("Give labels exactly when the data set has classes (class_names).")
        if labels is not None and labels.shape != (len(images),):
            raise ValueError(f"Expected {len(images)} labels, got an array of shape {labels.shape}.")
        for i, image in enumerate(images):
            try:
                yield self.encode(image, None if labels is None else int(labels[i]))
            except ValueError as e:
                raise ValueError(f"record {i}: {e}") from None


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 HWC image (Pillow; tfds would need TensorFlow for this)."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="png")
    return buffer.getvalue()


def array_features(
    images: np.ndarray, labels: np.ndarray | None = None, class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> ArrayFeatures:
    """Features for NHWC `images` (uint8 pixels or float32 latents) and optional int labels (all labels) of
    `num_classes` classes (default: as many as class names, else max label + 1, every class present)."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"Expected a non-empty NHWC array, got shape {images.shape}.")
    if images.dtype not in (np.uint8, np.float32):
        raise ValueError(
            f"Images must be uint8 pixels or float32 latents, got {images.dtype.name}; "
            "convert with .astype(np.uint8) after scaling to [0, 255], or .astype(np.float32)."
        )
    if labels is not None:
        class_names = _class_names(labels, class_names, num_classes)
    return ArrayFeatures(tuple(images.shape[1:]), images.dtype == np.float32, class_names)


def write_arrays(
    data_dir: str, name: str, images: np.ndarray, labels: np.ndarray | None = None, *,
    split: str = "train", class_names: Sequence[str] | None = None,
) -> epath.Path:
    """Stores uint8 NHWC images (or float32 NHWC latents) with optional int labels as one split."""
    features = array_features(images, labels, class_names)
    return write_tfds(data_dir, name, features.tfds_features(), {split: features.encode_all(images, labels)})


def _class_names(labels: np.ndarray, class_names: Sequence[str] | None, num_classes: int | None) -> tuple[str, ...]:
    """Labels must be 0..K-1: K from the class names, the stated `num_classes`, or max + 1 when all occur."""
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Labels must be a 1-D integer array, got {labels.dtype.name} {labels.shape}.")
    low, high, present = int(labels.min()), int(labels.max()), len(np.unique(labels))
    if class_names is None and num_classes is None and (low < 0 or present != high + 1):
        raise ValueError(
            f"labels take {present} values in [{low}, {high}]; labels must be 0..K-1 for K classes: remap them "
            f"(np.unique(labels, return_inverse=True)[1]) or state K with --num_classes (>= {high + 1}).")
    names = tuple(class_names) if class_names is not None else tuple(str(c) for c in range(num_classes or high + 1))
    if low < 0 or high >= len(names):
        raise ValueError(f"labels lie in [{low}, {high}], outside [0, {len(names)}) of the {len(names)} classes; "
                         "remap them to 0..K-1 or state the class count K with --num_classes.")
    return names
