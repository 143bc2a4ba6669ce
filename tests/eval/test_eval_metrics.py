"""Exact oracles for the metrics of spec/math.md §7."""
import numpy as np
import pytest

from scm_jax.eval import metrics


def _rotated_diagonal(q: np.ndarray, diag: np.ndarray) -> np.ndarray:
    return q @ np.diag(diag) @ q.T


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(16, 16))
    sigma, mu = a @ a.T + np.eye(16), rng.normal(size=16)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_distance_matches_closed_form_for_co_diagonalisable_gaussians():
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T: FD = |mu1 - mu2|^2 + sum (sqrt(a) - sqrt(b))^2.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    a, b = rng.uniform(0.5, 3.0, 8), rng.uniform(0.5, 3.0, 8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = metrics.frechet_distance(mu1, _rotated_diagonal(q, a), mu2, _rotated_diagonal(q, b))
    np.testing.assert_allclose(got, expected, rtol=1e-9)


def test_frechet_distance_of_one_dimensional_gaussians():
    assert metrics.frechet_distance(1.0, 4.0, -2.0, 9.0) == pytest.approx(9.0 + 1.0)


def test_frechet_distance_refuses_statistics_of_different_networks():
    with pytest.raises(ValueError, match="another feature extractor"):
        metrics.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_frechet_distance_of_singular_covariances_is_finite():
    features = np.random.default_rng(2).normal(size=(5, 32))  # rank-4 covariance in 32 dimensions
    mu, sigma = metrics.feature_statistics(features)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-3


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = metrics.inception_score(np.zeros((100, 1008)))
    assert mean == pytest.approx(1.0) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_distinct_classes_is_their_number():
    num_classes = 5
    classes = np.tile(np.arange(num_classes), 20)  # each of the 10 splits holds every class twice
    logits = 1000.0 * np.eye(1008)[classes]
    mean, std = metrics.inception_score(logits)
    assert mean == pytest.approx(num_classes, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_precision_recall_of_identical_sets_is_one():
    features = np.random.default_rng(3).normal(size=(300, 16))
    assert metrics.precision_recall(features, features, batch_size=128) == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_of_far_apart_sets_is_zero():
    rng = np.random.default_rng(4)
    real, fake = rng.normal(size=(200, 16)), rng.normal(size=(150, 16)) + 100.0
    assert metrics.precision_recall(real, fake) == {"precision": 0.0, "recall": 0.0}


def test_precision_is_the_share_of_fake_points_on_the_real_manifold():
    rng = np.random.default_rng(5)
    real = rng.normal(size=(200, 8))
    fake = np.concatenate([real[:60] + 1e-3, real[:40] + 100.0])
    assert metrics.precision_recall(real, fake)["precision"] == pytest.approx(0.6)


def test_collapsed_samples_have_full_precision_and_no_recall():
    real = np.random.default_rng(7).normal(size=(200, 8))
    collapsed = np.repeat(real[:1], 50, axis=0)  # duplicates: the fake manifold's radii are all 0
    assert metrics.precision_recall(real, collapsed) == {"precision": 1.0, "recall": 1 / 200}


def test_stats_round_trip_and_checks(tmp_path):
    mu, sigma = metrics.feature_statistics(np.random.default_rng(6).normal(size=(50, 4)))
    path = str(tmp_path / "ref.npz")
    metrics.save_stats(path, mu, sigma)
    got_mu, got_sigma = metrics.load_stats(path, dim=4)
    np.testing.assert_array_equal(got_mu, mu)
    np.testing.assert_array_equal(got_sigma, sigma)
    with pytest.raises(ValueError, match="another network"):
        metrics.load_stats(path, dim=2048)
    with pytest.raises(ValueError, match=r"mu \[D\] and sigma \[D, D\]"):
        metrics.save_stats(path, mu, sigma[:3])


def test_load_stats_reads_adm_reference_batches_and_refuses_other_files(tmp_path):
    adm = str(tmp_path / "adm_ref.npz")
    np.savez(adm, arr_0=np.zeros((2, 8, 8, 3), np.uint8), mu=np.zeros(3, np.float32), sigma=np.eye(3),
             mu_s=np.zeros(2), sigma_s=np.eye(2))
    mu, sigma = metrics.load_stats(adm)
    assert mu.dtype == np.float64 and sigma.shape == (3, 3)
    samples = str(tmp_path / "samples.npz")
    np.savez(samples, arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="not 'mu' and 'sigma'"):
        metrics.load_stats(samples)
