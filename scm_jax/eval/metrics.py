"""Sample-quality metrics on extractor outputs (spec/math.md §7): Fréchet distance, Inception Score,
precision/recall (k-NN manifolds), and reference statistics files.

Statistics files are `.npz` with `mu` [D] and `sigma` [D, D] of Inception features, the keys of ADM /
guided-diffusion reference batches (other keys such as `arr_0` or `mu_s` are ignored when reading), and, in the
files `scm-evaluate --make_ref` writes, `mu_dinov2` / `sigma_dinov2` of DINOv2 features and `pr_features`
(Inception features of up to 10,000 reference images, for precision/recall).
"""
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
import scipy.special


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] (unbiased) of features [N, D], in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need features of shape [N >= 2, D], got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) in float64 (pytorch_fid's numerics)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    _check_stats(mu1, sigma1, "first")
    _check_stats(mu2, sigma2, "second")
    if mu1.shape != mu2.shape:
        raise ValueError(f"statistics of {mu1.shape[0]}-d and {mu2.shape[0]}-d features cannot be compared: "
                         "the reference was made with another feature extractor")
    with warnings.catch_warnings():  # singular products are expected with fewer samples than dimensions; the
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)  # trace stays exact (= sum sqrt(eig(S1 S2)))
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: regularise both covariances
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        max_imag = np.max(np.abs(np.diagonal(covmean).imag))
        if max_imag > 1e-3:
            raise ValueError(f"sqrtm(S1 S2) has an imaginary component {max_imag:.3g}: the covariances are "
                             "ill-conditioned (too few samples for the feature dimension?)")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(logits: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) from class logits [N, K]: mean and std over `num_splits` equal splits."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or logits.shape[0] < num_splits:
        raise ValueError(f"need logits [N >= num_splits={num_splits}, K], got {logits.shape}")
    probs = np.exp(scipy.special.log_softmax(logits, axis=1))
    n = probs.shape[0]
    scores = []
    for i in range(num_splits):  # the split boundaries of the original TF code
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        kl = scipy.special.rel_entr(part, part.mean(axis=0, keepdims=True)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


PR_K = 3  # Kynkäänniemi et al. 2019


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_K, batch_size: int = 1024) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets [N, D] and [M, D].

    Each set's manifold is the union of balls around its points with radius the distance to the k-th nearest
    other point. Precision: share of fake points inside the real manifold; recall: share of real points inside the
    fake manifold.
    """
    real, fake = jnp.asarray(real, jnp.float32), jnp.asarray(fake, jnp.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need feature sets [N, D] and [M, D], got {real.shape} and {fake.shape}")
    if min(real.shape[0], fake.shape[0]) <= k:
        raise ValueError(f"need more than k={k} points in each set, got {real.shape[0]} and {fake.shape[0]}")
    real_radii = _kth_neighbour_sq_distances(real, k, batch_size)
    fake_radii = _kth_neighbour_sq_distances(fake, k, batch_size)
    return {"precision": _share_in_manifold(fake, real, real_radii, batch_size),
            "recall": _share_in_manifold(real, fake, fake_radii, batch_size)}


STATS_KEYS = {"inception": ("mu", "sigma"), "dinov2": ("mu_dinov2", "sigma_dinov2")}  # network -> file keys
PR_FEATURES_KEY = "pr_features"


def precision_recall_setting(reference_size: int) -> dict:
    """How precision/recall were measured: the k of the k-NN manifolds and the number of reference images."""
    return {"precision_recall_k": PR_K, "precision_recall_reference_size": reference_size}


def save_stats(path: str, mu: np.ndarray, sigma: np.ndarray, network: str = "inception") -> None:
    """Writes reference statistics of `network`'s features as `.npz` with its keys (float64)."""
    save_reference(path, {network: (mu, sigma)})


def save_reference(path: str, stats: dict[str, tuple[np.ndarray, np.ndarray]],
                   pr_features: np.ndarray | None = None) -> None:
    """Writes (mu [D], sigma [D, D]) of each network (STATS_KEYS) and optional reference features for
    precision/recall to one `.npz`."""
    arrays = {}
    for network, (mu, sigma) in stats.items():
        mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        _check_stats(mu, sigma, "given")
        arrays.update(zip(STATS_KEYS[network], (mu, sigma)))
    if pr_features is not None:
        arrays[PR_FEATURES_KEY] = np.asarray(pr_features, np.float32)
    np.savez(path, **arrays)


def load_stats(path: str, dim: int | None = None, network: str = "inception") -> tuple[np.ndarray, np.ndarray]:
    """Reads `network`'s mu, sigma from a statistics `.npz` (ours, or an ADM reference batch for Inception);
    `dim` checks D."""
    mu_key, sigma_key = STATS_KEYS[network]
    with np.load(path) as npz:
        if mu_key not in npz or sigma_key not in npz:
            raise ValueError(f"{path} has keys {sorted(npz.keys())}, not {mu_key!r} and {sigma_key!r}: it holds no "
                           f"{network} statistics (make them with scm-evaluate --make_ref=OUT.npz --source=IMAGES "
                           f"--{network}_weights=W, or use an ADM reference batch for FID)")
        mu, sigma = npz[mu_key].astype(np.float64), npz[sigma_key].astype(np.float64)
    _check_stats(mu, sigma, path)
    if dim is not None and mu.shape[0] != dim:
        raise ValueError(f"{path} holds statistics of {mu.shape[0]}-d features, the extractor gives {dim}-d: "
                         "the reference was made with another network")
    return mu, sigma


def load_pr_features(path: str) -> np.ndarray | None:
    """The reference features for precision/recall a statistics file holds (None: it holds none)."""
    with np.load(path) as npz:
        return npz[PR_FEATURES_KEY] if PR_FEATURES_KEY in npz else None


def _check_stats(mu: np.ndarray, sigma: np.ndarray, what: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{what} statistics need mu [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")


@functools.partial(jax.jit, static_argnames="k")
def _kth_smallest_sq_distances(rows: jax.Array, points: jax.Array, k: int) -> jax.Array:
    """Squared distance from each row to its (k+1)-th nearest point (the row itself, at 0, being the first).

    k argmin passes, each removing one point (duplicates count one by one): far faster than top_k on CPU.
    """
    d = _sq_distances(rows, points)
    row_index = jnp.arange(d.shape[0])
    for _ in range(k):
        d = d.at[row_index, jnp.argmin(d, axis=1)].set(jnp.inf)
    return jnp.min(d, axis=1)


@jax.jit
def _covered(rows: jax.Array, centres: jax.Array, radii: jax.Array) -> jax.Array:
    return jnp.any(_sq_distances(rows, centres) <= radii[None, :], axis=1)


def _sq_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    dot = jnp.matmul(a, b.T, precision=jax.lax.Precision.HIGHEST)
    return jnp.maximum(jnp.sum(a * a, 1)[:, None] - 2 * dot + jnp.sum(b * b, 1)[None, :], 0.0)


def _kth_neighbour_sq_distances(points: jax.Array, k: int, batch_size: int) -> jax.Array:
    return jnp.concatenate([_kth_smallest_sq_distances(points[i:i + batch_size], points, k)
                            for i in range(0, points.shape[0], batch_size)])


def _share_in_manifold(rows: jax.Array, centres: jax.Array, radii: jax.Array, batch_size: int) -> float:
    covered = [_covered(rows[i:i + batch_size], centres, radii) for i in range(0, rows.shape[0], batch_size)]
    return float(np.mean(np.concatenate([np.asarray(c) for c in covered])))
