import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scm_jax.samplers import consistency, ode
from tests.oracles import F_cons, F_vel

S = 0.8
SHAPE = (20_000, 4)


@pytest.mark.parametrize("times", [consistency.ONE_STEP, consistency.TWO_STEP, (1.5, 1.0, 0.5)])
def test_consistency_sampling_with_exact_F_cons_gives_data_std(times):
    x = jax.jit(lambda k: consistency.consistency_sample(F_cons(S), k, SHAPE, times))(jax.random.key(0))
    # 1-step starts from sigma_d n, not exactly x_{t_max}: error of order cos(t_max) = 0.006
    assert float(jnp.std(x)) == pytest.approx(S, rel=0.02)


def test_consistency_sampling_is_deterministic_given_key():
    sample = lambda k: consistency.consistency_sample(F_cons(S), k, (8, 4), consistency.TWO_STEP)
    np.testing.assert_array_equal(sample(jax.random.key(3)), sample(jax.random.key(3)))
    assert not np.allclose(sample(jax.random.key(3)), sample(jax.random.key(4)))


@pytest.mark.parametrize("times", [(), (1.0, 1.2), (2.0,), (0.0,)])
def test_bad_times_raise(times):
    with pytest.raises(ValueError, match="strictly decreasing"):
        consistency.check_times(times)


@pytest.mark.parametrize("solver, Ns", [("heun", (18, 50)), ("euler", (50, 200))])
def test_teacher_ode_with_exact_velocity_converges_to_data_std(solver, Ns):
    """Heun is 2nd order (error 5% at 18 levels, < 1% at 50 on this Gaussian); Euler 1st order."""
    std = [float(jnp.std(ode.ode_sample(F_vel(S), jax.random.key(0), SHAPE, N, solver))) for N in Ns]
    assert abs(std[1] - S) < abs(std[0] - S) / 3
    assert std[1] == pytest.approx(S, rel=0.012)


def test_ode_nfe_counts_network_calls():
    calls = []

    def counting(x_in, t, labels=None, guidance=None):
        calls.append(1)
        return F_vel(S)(x_in, t)

    # un-jitted scan still traces the body once; count with a python loop over lax.cond-free euler instead
    assert ode.nfe("heun", 18) == 35 and ode.nfe("euler", 18) == 18
    with jax.disable_jit():
        ode.ode_sample(counting, jax.random.key(0), (2, 2), 5, "heun")
    assert len(calls) == ode.nfe("heun", 5)


def test_karras_times_endpoints():
    t = ode.karras_times(18)
    assert t.shape == (19,) and float(t[-1]) == 0.0
    np.testing.assert_allclose(0.5 * np.tan(np.asarray(t)[[0, -2]]), [80.0, 0.002], rtol=1e-4)
    assert np.all(np.diff(np.asarray(t)) < 0)
    np.testing.assert_allclose(ode.karras_times(1), [t[0], 0.0])  # N = 1: t_max straight to 0 (Euler NFE 1)
    with pytest.raises(ValueError, match="N >= 1"):
        ode.karras_times(0)


def test_euler_in_sigma_space_is_the_trigflow_rotation_step():
    from scm_jax.formulations import trigflow
    x, F = jax.random.normal(jax.random.key(0), (3, 2)), jax.random.normal(jax.random.key(1), (3, 2))
    t, s = jnp.full((3,), 1.2), jnp.full((3,), 0.4)
    x_sigma = trigflow.x_sigma_from_x_t(x, t)
    D = trigflow.f_from_F(x, t, F)
    sig_t, sig_s = trigflow.sigma_from_t(t)[:, None], trigflow.sigma_from_t(s)[:, None]
    euler = x_sigma + (sig_s - sig_t) * (x_sigma - D) / sig_t
    np.testing.assert_allclose(trigflow.x_t_from_x_sigma(euler, s), trigflow.ddim_step(x, t, s, F), atol=1e-5)
