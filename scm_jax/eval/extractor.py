"""Feature extractors behind one interface, picked by name for `scm-evaluate`:

- "inception": the FID Inception-v3 (2048-d pool3 features, 1008 logits); needs the converted weights file
  (scm_jax/eval/inception.py says how to make it).
- "mnist": the MNIST-5k classifier shipped with the package (128-d features, 10 logits).
- "dinov2": DINOv2 ViT-L/14, FD_DINOv2's network (1024-d CLS features, no logits); needs the converted weights
  file (scm_jax/eval/dinov2.py says how to make it).

    extractor = get_extractor("inception", weights_path="inception_fid.npz")
    features, logits = extractor.features_and_logits(images_uint8_nhwc)
"""
import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scm_jax.eval import dinov2, inception, mnist_classifier
from scm_jax.eval.images import check_images
from scm_jax.parallel.batched import map_batches

NAMES = ("inception", "mnist", "dinov2")
_OTHER_METRIC = "use the inception metric (--metric=inception, or eval.metric='inception' in a config)"


@dataclasses.dataclass(frozen=True)
class Extractor:
    """Runs a feature network over NHWC images (uint8, or floats in [-1, 1] / [0, 255]) in jitted batches."""

    name: str
    channels: int  # channels the network takes; grayscale is repeated when it takes 3
    feature_dim: int
    num_classes: int
    apply: Callable[[np.ndarray, float, float], tuple[jax.Array, jax.Array]]  # (raw batch, scale, offset)
    batch_size: int = 100
    image_size: int | None = None  # the only height and width the network takes; None: any (it resizes)

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raises unless NHWC images of `shape` fit the network (channels, and size where it is fixed)."""
        if shape[-1] > self.channels:
            raise ValueError(f"the {self.name} extractor takes {self.channels}-channel images, got shape {shape}; "
                             f"{_OTHER_METRIC}")
        if self.image_size is not None and tuple(shape[1:3]) != (self.image_size,) * 2:
            raise ValueError(f"the {self.name} extractor takes {self.image_size}x{self.image_size} images, got "
                             f"shape {shape}; {_OTHER_METRIC}")

    def features_and_logits(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features [N, feature_dim], logits [N, num_classes]) as float32 numpy."""
        images = np.asarray(images)
        pixel_range = check_images(images)
        self.check_shape(images.shape)
        apply = lambda batch: self.apply(batch, pixel_range.scale, pixel_range.offset)
        return map_batches(apply, images, self.batch_size)  # one compiled shape; the last batch zero-padded

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.features_and_logits(images)[0]

    def logits(self, images: np.ndarray) -> np.ndarray:
        return self.features_and_logits(images)[1]


def get_extractor(name: str, weights_path: str | None = None, batch_size: int = 100) -> Extractor:
    """The extractor called `name` (see NAMES); `weights_path` is required for "inception" and "dinov2"."""
    if name == "dinov2":
        if weights_path is None:
            raise ValueError(f"the dinov2 extractor needs weights_path: the .npz made by\n    {dinov2.CONVERT_COMMAND}")
        model = dinov2.load_dinov2(weights_path)
        return Extractor(name, 3, model.norm.num_features, 0, _bind(model, channels=3), batch_size)
    if name == "inception":
        if weights_path is None:
            raise ValueError("the inception extractor needs weights_path: the .npz made by\n    "
                             f"{inception.CONVERT_COMMAND}")
        return Extractor(name, 3, inception.FEATURE_DIM, inception.NUM_CLASSES,
                         _bind(inception.load_inception(weights_path), channels=3), batch_size)
    if name == "mnist":
        model = mnist_classifier.load_mnist_classifier(weights_path)
        return Extractor(name, 1, mnist_classifier.FEATURE_DIM, mnist_classifier.NUM_CLASSES,
                         _bind(model, channels=1), batch_size, mnist_classifier.IMAGE_SIZE)
    raise ValueError(f"unknown feature extractor {name!r}; choose one of {NAMES}")


def _bind(model: nnx.Module, channels: int) -> Callable[[np.ndarray, float, float], tuple[jax.Array, jax.Array]]:
    """A jitted (raw batch, scale, offset) -> model(raw * scale + offset) with the weights passed as arguments."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def run(state: nnx.State, raw: jax.Array, scale: jax.Array, offset: jax.Array):
        x = raw.astype(jnp.float32) * scale + offset
        if x.shape[-1] != channels:  # grayscale into a 3-channel network
            x = jnp.repeat(x, channels, axis=-1)
        out = nnx.merge(graphdef, state)(x)
        return out if isinstance(out, tuple) else (out, out[:, :0])  # features only: empty logits

    return functools.partial(run, state)
