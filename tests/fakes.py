"""Shared test fakes: smoke configs, a tiny MLP network, random-batch training, and fake copies of standard data
sets laid out exactly as tfds would write them (no download)."""
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from flax import nnx
from ml_collections import ConfigDict

from configs import embedded
from scm_jax.data import storage
from scm_jax.models.mlp import MLP


def smoke(objective: str = "sct", **overrides) -> ConfigDict:
    """The embedded `objective,smoke` config with `overrides` ({"a.b": value})."""
    config = embedded.get_config(f"{objective},smoke")
    with config.unlocked():
        for key, value in overrides.items():
            *path, leaf = key.split(".")
            node = config
            for p in path:
                node = node[p]
            node[leaf] = value
    return config


def tiny_mlp(seed: int = 0, dim: int = 4, width: int = 32, x64: bool = False):
    """(apply(params) -> apply_fn(x, t, ...) -> (F, w_phi), params) of a small MLP network on `dim` features."""
    graphdef, params = nnx.split(MLP(dim, width=width, depth=2, rngs=nnx.Rngs(seed)))
    if x64:
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
    return (lambda p: (lambda x, t, *a, **k: nnx.merge(graphdef, p)(x, t))), params


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


def train_on_random_batches(train_step, state, steps: int, batch: int = 16, shape=(32, 32, 1), classes: int = 10):
    """Runs `steps` jitted train steps on uniform-noise images with random labels, checking each step is finite."""
    rng = np.random.default_rng(0)
    for _ in range(steps):
        state, metrics = train_step(state, {"image": rng.uniform(-1, 1, (batch, *shape)).astype(np.float32),
                                            "label": rng.integers(0, classes, batch).astype(np.int32)})
        assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    return state
