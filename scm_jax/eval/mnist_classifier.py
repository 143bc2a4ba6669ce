"""A small CNN classifier of the embedded MNIST-5k digits: the offline feature network for `embedded_metric`.

Its shipped weights (`scm_jax/assets/mnist_classifier.npz`) are remade, deterministically, in about a minute on
2 CPU cores by

    python -m scm_jax.eval.mnist_classifier --out=scm_jax/assets/mnist_classifier.npz

Trained on 4,500 of the 5,000 digits; the last 50 of each class are held out (the data set is sorted by class).
The shipped weights classify 98.0% of the 500 held-out digits correctly (62 s wall, 54 s CPU, on a busy
2-core machine).
"""
import argparse
import functools
import importlib.resources
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from scm_jax.data import embedded
from scm_jax.models import weights

IMAGE_SIZE = 32
FEATURE_DIM = 128
NUM_CLASSES = embedded.NUM_CLASSES
HELDOUT_PER_CLASS = 50
HELDOUT_ACCURACY = 0.98  # of the shipped weights, on the 500 held-out digits


def default_weights_path() -> str:
    return str(importlib.resources.files("scm_jax") / "assets" / "mnist_classifier.npz")


class MnistClassifier(nnx.Module):
    """[-1, 1] images [N, 32, 32, 1] -> (features [N, 128], logits [N, 10]).

    The features are the penultimate layer's pre-activations: about half of its ReLUs never fire on real digits,
    so post-ReLU features would have a singular covariance.
    """

    def __init__(self, *, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(1, 16, (3, 3), rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, (3, 3), rngs=rngs)
        self.conv3 = nnx.Conv(32, 32, (3, 3), rngs=rngs)
        self.hidden = nnx.Linear(4 * 4 * 32, FEATURE_DIM, rngs=rngs)
        self.head = nnx.Linear(FEATURE_DIM, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        for conv in (self.conv1, self.conv2, self.conv3):  # 32 -> 16 -> 8 -> 4
            x = nnx.max_pool(jax.nn.relu(conv(x)), (2, 2), (2, 2))
        features = self.hidden(x.reshape(x.shape[0], -1))
        return features, self.head(jax.nn.relu(features))


def heldout_split(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices): the last `HELDOUT_PER_CLASS` digits of each class are held out."""
    heldout = np.concatenate([np.flatnonzero(labels == c)[-HELDOUT_PER_CLASS:] for c in np.unique(labels)])
    return np.setdiff1d(np.arange(labels.shape[0]), heldout), np.sort(heldout)


def to_signed_unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 127.5 - 1.0


def train(images: np.ndarray, labels: np.ndarray, *, epochs: int = 5, batch_size: int = 50,
          seed: int = 0) -> MnistClassifier:
    """Adam (cosine-decayed from 3e-3) on the cross-entropy with fixed shuffles: same seed, same weights."""
    graphdef, params = nnx.split(MnistClassifier(rngs=nnx.Rngs(seed)))
    tx = optax.adam(optax.cosine_decay_schedule(3e-3, epochs * (len(labels) // batch_size)))

    def loss_fn(params: nnx.State, x: jax.Array, y: jax.Array) -> jax.Array:
        logits = nnx.merge(graphdef, params)(x)[1]
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, opt_state, x, y):
        updates, opt_state = tx.update(jax.grad(loss_fn)(params, x, y), opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    x_all, rng = to_signed_unit(images), np.random.default_rng(seed)
    opt_state = tx.init(params)
    for _ in range(epochs):
        order = rng.permutation(len(labels))
        for i in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[i:i + batch_size]
            params, opt_state = step(params, opt_state, x_all[idx], labels[idx])
    return nnx.merge(graphdef, jax.block_until_ready(params))


def accuracy(model: MnistClassifier, images: np.ndarray, labels: np.ndarray) -> float:
    logits = nnx.jit(lambda m, x: m(x)[1])(model, jnp.asarray(to_signed_unit(images)))
    return float(np.mean(np.argmax(np.asarray(logits), axis=1) == labels))


def load_mnist_classifier(path: str | None = None) -> MnistClassifier:
    """The classifier with weights from `path` (default: the shipped asset)."""
    hint = ("Make it with: python -m scm_jax.eval.mnist_classifier "
            "--out=scm_jax/assets/mnist_classifier.npz")
    return weights.load_module(path or default_weights_path(), lambda: MnistClassifier(rngs=nnx.Rngs(0)),
                               missing_hint=hint)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the MNIST-5k classifier and save its weights.")
    parser.add_argument("--out", required=True, help="output .npz")
    args = parser.parse_args(argv)
    images, labels = embedded.load_mnist5k()
    train_idx, heldout_idx = heldout_split(labels)
    start = time.perf_counter()
    model = train(images[train_idx], labels[train_idx])
    seconds = time.perf_counter() - start
    acc = accuracy(model, images[heldout_idx], labels[heldout_idx])
    weights.save_module(args.out, model)
    print(f"trained in {seconds:.1f} s; held-out accuracy {acc:.4f} on {len(heldout_idx)} digits; wrote {args.out}")


if __name__ == "__main__":
    main()
