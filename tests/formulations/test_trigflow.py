import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scm_jax.formulations import trigflow


def test_t_max():
    assert trigflow.T_MAX == pytest.approx(1.56454, abs=1e-5)


def test_variance_preserving_for_std_sigma_d_data():
    k1, k2 = jax.random.split(jax.random.key(0))
    x0 = trigflow.SIGMA_D * jax.random.normal(k1, (200_000,))
    z = trigflow.SIGMA_D * jax.random.normal(k2, (200_000,))
    for t in (0.1, 0.7, 1.5):
        xt = trigflow.x_t(x0, z, jnp.full((200_000,), t))
        assert float(jnp.var(xt)) == pytest.approx(trigflow.SIGMA_D**2, rel=0.02)


def test_v_t_is_time_derivative_of_x_t():
    x0, z, t = jnp.array([[0.3, -1.0]]), jnp.array([[0.2, 0.5]]), jnp.array([0.8])
    _, dxdt = jax.jvp(lambda tt: trigflow.x_t(x0, z, tt), (t,), (jnp.ones_like(t),))
    np.testing.assert_allclose(dxdt, trigflow.v_t(x0, z, t), rtol=1e-6)


def test_boundary_condition_f_x_0_is_x():
    x = jax.random.normal(jax.random.key(1), (3, 4, 4, 2))
    F = jax.random.normal(jax.random.key(2), x.shape) * 100.0  # any network output
    np.testing.assert_array_equal(trigflow.f_from_F(x, jnp.zeros(3), F), x)


def test_edm_round_trips():
    sigma = jnp.array([0.002, 0.1, 1.0, 80.0])
    t = trigflow.t_from_sigma(sigma)
    np.testing.assert_allclose(trigflow.sigma_from_t(t), sigma, rtol=1e-5)
    x_sigma = jax.random.normal(jax.random.key(0), (4, 3))
    np.testing.assert_allclose(trigflow.x_sigma_from_x_t(trigflow.x_t_from_x_sigma(x_sigma, t), t), x_sigma,
                               rtol=1e-5)
    D = jax.random.normal(jax.random.key(1), (4, 3))
    x = trigflow.x_t_from_x_sigma(x_sigma, t)
    np.testing.assert_allclose(trigflow.denoiser_from_F(x, t, trigflow.F_from_denoiser(x, t, D)), D, atol=1e-4)


def test_edm_process_maps_to_trigflow_process():
    """x_sigma = x0 + sigma eps  ->  cos(t) x_sigma = cos t x0 + sin t (sigma_d eps)."""
    x0, eps = jnp.array([[0.4, -0.2]]), jnp.array([[1.3, 0.7]])
    sigma = jnp.array([2.0])
    t = trigflow.t_from_sigma(sigma)
    np.testing.assert_allclose(trigflow.x_t_from_x_sigma(x0 + sigma[:, None] * eps, t),
                               trigflow.x_t(x0, trigflow.SIGMA_D * eps, t), rtol=1e-6, atol=1e-7)


def test_vp_and_flow_matching_conversions():
    alpha, sigma = jnp.array([0.6]), jnp.array([0.8])
    t = trigflow.t_from_alpha_sigma(alpha, sigma)
    np.testing.assert_allclose(jnp.tan(t), sigma / (trigflow.SIGMA_D * alpha), rtol=1e-6)
    # rectified flow x = (1-s) x0 + s eps, eps with std sigma_d; the exact x0-prediction gives F with f = x0
    x0, eps, s = jnp.array([[0.3, -0.4]]), jnp.array([[0.1, 0.7]]), jnp.array([0.35])
    x = (1 - s[:, None]) * x0 + s[:, None] * eps
    F = trigflow.F_from_flow_velocity(x, s, eps - x0)
    t_trig = jnp.arctan2(s, 1 - s)
    x_trig = trigflow.x_t(x0, eps, t_trig)
    np.testing.assert_allclose(trigflow.f_from_F(x_trig, t_trig, F), x0, atol=1e-6)


def test_time_sampling_matches_lognormal_sigma():
    t = trigflow.sample_t(jax.random.key(0), (100_000,), -1.0, 1.4)
    assert float(t.min()) > 0 and float(t.max()) < np.pi / 2
    log_sigma = jnp.log(trigflow.SIGMA_D * jnp.tan(t))
    assert float(jnp.mean(log_sigma)) == pytest.approx(-1.0, abs=0.02)
    assert float(jnp.std(log_sigma)) == pytest.approx(1.4, abs=0.02)
