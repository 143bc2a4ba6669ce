"""The metrics of a set of samples under a named feature network, shared by scm-evaluate and the trainer:

- "mnist": the offline MNIST-5k classifier metric (`embedded_metric`: FD to the real digits, precision/recall,
  class accuracy of labelled samples, ...).
- "inception": FID against reference statistics (`.npz` with `mu`, `sigma`) and the Inception Score, with the FID
  Inception-v3 loaded from a local weights file.
- "dinov2": FD_DINOv2 against reference statistics of the same network's features (DINOv2 ViT-L/14 from a local
  weights file).
- "all": "inception" and "dinov2" together, for each network whose weights are given (FID, IS, FD_DINOv2, and
  precision/recall when the reference holds Inception features: `scm-evaluate --make_ref` writes them).

    score = make_scorer("inception", inception_weights="inception_fid.npz", ref="cifar10_ref.npz")
    metrics = score(images_uint8_nhwc, labels)

Files are checked (existence, feature dimension) before the Inception weights load, each with its fix.
"""
import functools
import os
from collections.abc import Callable

import numpy as np

from scm_jax.eval import dinov2, embedded_metric, inception, metrics
from scm_jax.eval.extractor import Extractor, get_extractor

METRICS = ("mnist", "inception", "dinov2", "all")
Scorer = Callable[[np.ndarray, np.ndarray | None], dict[str, float]]
MAKE_REF = "scm-evaluate --make_ref=ref.npz --source=IMAGE_DIR --resolution=N --inception_weights=W"


def inception_scores(extractor: Extractor, images: np.ndarray, mu_r: np.ndarray, sigma_r: np.ndarray,
                     ref_features: np.ndarray | None = None) -> dict[str, float]:
    """FID against (mu_r, sigma_r), Inception Score (10 splits) and, given reference features, precision/recall."""
    features, logits = extractor.features_and_logits(images)
    out = dict(zip(("inception_score", "inception_score_std"), metrics.inception_score(logits)))
    out["fid"] = metrics.frechet_distance(*metrics.feature_statistics(features), mu_r, sigma_r)
    if ref_features is not None:
        out.update(metrics.precision_recall(ref_features, features), **metrics.precision_recall_setting(
            len(ref_features)))
    return out


def require_inception_weights(path: str | None) -> str:
    """The path of the converted FID Inception-v3 weights, which must exist."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"no Inception weights file {path or ''!r} (--inception_weights, or "
                                f"eval.inception_weights in a config); make it once with {inception.CONVERT_COMMAND}")
    return path


def require_dinov2_weights(path: str | None) -> str:
    """The path of the converted DINOv2 weights, which must exist."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"no DINOv2 weights file {path or ''!r} (--dinov2_weights); make it once with "
                                f"{dinov2.CONVERT_COMMAND}")
    return path


def reference_stats(path: str | None, dim: int | None = inception.FEATURE_DIM, network: str = "inception"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of `network`'s `dim`-d features (Inception pool3 by default) in a reference statistics file."""
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"no reference statistics file {path or ''!r} (--ref, or eval.ref in a config); "
                                f"use an ADM reference batch or make one with {MAKE_REF}")
    return metrics.load_stats(path, dim=dim, network=network)


def fd_dinov2(extractor: Extractor, images: np.ndarray, mu_r: np.ndarray, sigma_r: np.ndarray) -> dict[str, float]:
    """FD_DINOv2: the Fréchet distance of the samples' DINOv2 features to (mu_r, sigma_r)."""
    return {"fd_dinov2": metrics.frechet_distance(*metrics.feature_statistics(extractor.features(images)), mu_r,
                                                  sigma_r)}


def make_scorer(metric: str, inception_weights: str | None = None, ref: str | None = None,
                image_shape: tuple[int, int, int] | None = None, dinov2_weights: str | None = None) -> Scorer:
    """score(images uint8 NHWC, labels or None) -> metrics; `image_shape` (HWC) is checked against the network."""
    if metric == "mnist":
        reference = embedded_metric.mnist_reference()
        extractor, score = reference.extractor, functools.partial(embedded_metric.evaluate_samples,
                                                                  reference=reference)
    elif metric == "inception":
        require_inception_weights(inception_weights)
        mu_r, sigma_r = reference_stats(ref, dim=inception.FEATURE_DIM)  # before the weights: fails in a second
        ref_features = metrics.load_pr_features(ref)
        extractor = get_extractor("inception", inception_weights)
        score = lambda images, labels=None: inception_scores(extractor, images, mu_r, sigma_r, ref_features)
    elif metric == "dinov2":
        require_dinov2_weights(dinov2_weights)
        mu_r, sigma_r = reference_stats(ref, dim=None, network="dinov2")  # D is checked against the features
        extractor = get_extractor("dinov2", dinov2_weights)
        score = lambda images, labels=None: fd_dinov2(extractor, images, mu_r, sigma_r)
    elif metric == "all":
        return _all_scorer(inception_weights, ref, image_shape, dinov2_weights)
    else:
        raise ValueError(f"metric {metric!r} is unknown; use one of {METRICS}")
    if image_shape is not None:
        extractor.check_shape((1, *image_shape))
    return score


def _all_scorer(inception_weights: str | None, ref: str | None, image_shape: tuple[int, int, int] | None,
                dinov2_weights: str | None) -> Scorer:
    """The inception and dinov2 scorers of the networks whose weights are given, merged into one result."""
    given = [m for m, w in (("inception", inception_weights), ("dinov2", dinov2_weights)) if w]
    if not given:
        raise ValueError("metric 'all' needs the weights of at least one network: --inception_weights (FID, IS, "
                         "precision/recall) and / or --dinov2_weights (FD_DINOv2).")
    parts = [make_scorer(m, inception_weights, ref, image_shape, dinov2_weights) for m in given]
    return lambda images, labels=None: {k: v for score in parts for k, v in score(images, labels).items()}
