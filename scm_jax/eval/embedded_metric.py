"""Offline sample metrics for the embedded MNIST-5k data set, in the feature space of the shipped classifier.

    reference = mnist_reference()            # features of the 5,000 real digits (a few seconds; keep it)
    metrics = evaluate_samples(samples_uint8_nhwc, labels, reference)

`fd` is the Fréchet distance to the real digits (FID with the classifier in place of Inception), `precision` /
`recall` the k=3 manifold metrics against them, `confidence` the mean top-class probability, `class_entropy` the
entropy (nats) of the mean class distribution (ln 10 = 2.30 when all digits are equally frequent),
`classifier_score` the Inception Score formula with the classifier (at most 10), and, given labels, `accuracy` of
the classifier against the labels the samples were conditioned on.
"""
import dataclasses
import functools

import numpy as np
import scipy.special

from scm_jax.data import embedded
from scm_jax.eval import metrics
from scm_jax.eval.extractor import Extractor, get_extractor


@dataclasses.dataclass(frozen=True)
class MnistReference:
    """The classifier and the features (and their statistics) of the 5,000 real digits."""

    extractor: Extractor
    features: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray


@functools.lru_cache(maxsize=2)
def mnist_reference(weights_path: str | None = None) -> MnistReference:
    """Runs the classifier (default: the shipped weights) over the embedded data set, once per process."""
    extractor = get_extractor("mnist", weights_path, batch_size=500)
    features = extractor.features(embedded.load_mnist5k()[0])
    return MnistReference(extractor, features, *metrics.feature_statistics(features))


def evaluate_samples(images: np.ndarray, labels: np.ndarray | None = None,
                     reference: MnistReference | None = None) -> dict[str, float]:
    """Metrics of generated digits (NHWC [N, 32, 32, 1], N > 3) against the real ones; see the module doc."""
    labels = None if labels is None else _checked_labels(labels, len(images))  # before any feature is computed
    if reference is None:
        reference = mnist_reference()
    features, logits = reference.extractor.features_and_logits(images)
    probs = scipy.special.softmax(logits.astype(np.float64), axis=1)
    mu, sigma = metrics.feature_statistics(features)
    out = {
        "fd": metrics.frechet_distance(mu, sigma, reference.mu, reference.sigma),
        **metrics.precision_recall(reference.features, features),
        "confidence": float(probs.max(axis=1).mean()),
        "class_entropy": float(scipy.special.entr(probs.mean(axis=0)).sum()),
        "classifier_score": metrics.inception_score(logits, num_splits=1)[0],
    }
    if labels is not None:
        out["accuracy"] = float(np.mean(probs.argmax(axis=1) == labels))
    return out


def _checked_labels(labels: np.ndarray, num: int) -> np.ndarray:
    """One integer label in [0, 10) per image: the classes of the classifier."""
    labels = np.asarray(labels)
    if labels.shape != (num,):
        raise ValueError(f"labels must have shape [{num}] (one per image), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= embedded.NUM_CLASSES:
        raise ValueError(f"labels ({labels.dtype.name}, in [{labels.min()}, {labels.max()}]) must be integers in "
                         f"[0, {embedded.NUM_CLASSES}), the mnist metric's classes: give the classes the samples "
                         "were conditioned on, or no labels.")
    return labels
