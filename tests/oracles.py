"""Exact Gaussian oracles of spec §6: data x0 ~ N(0, s^2 I), TrigFlow with sigma_d.

apply_fn-style callables take x_in = x_t / sigma_d.
"""
import jax
import jax.numpy as jnp
import numpy as np

from scm_jax.formulations import trigflow
from scm_jax.objectives import scm

SIGMA_D = trigflow.SIGMA_D


def R(t, s):
    """R(t)^2 = cos^2 t s^2 + sin^2 t sigma_d^2: the std of x_t."""
    return jnp.sqrt(jnp.cos(t) ** 2 * s**2 + jnp.sin(t) ** 2 * SIGMA_D**2)


def F_vel(s):
    """Exact diffusion teacher: sigma_d F_vel = x_t sin t cos t (sigma_d^2 - s^2) / R^2."""
    def apply(x_in, t, labels=None, guidance=None, dropout_key=None):
        x, tb = SIGMA_D * x_in, trigflow.bcast(t, x_in)
        F = x * jnp.sin(tb) * jnp.cos(tb) * (SIGMA_D**2 - s**2) / R(tb, s) ** 2 / SIGMA_D
        return F, jnp.zeros(t.shape)
    return apply


def F_cons(s):
    """Exact consistency function f* = s x_t / R(t): F_cons = (cos t - s / R) x_t / (sigma_d sin t)."""
    def apply(x_in, t, labels=None, guidance=None, dropout_key=None):
        x, tb = SIGMA_D * x_in, trigflow.bcast(t, x_in)
        F = (jnp.cos(tb) - s / R(tb, s)) * x / (SIGMA_D * jnp.sin(tb))
        return F, jnp.zeros(t.shape)
    return apply


def assert_gradient_identity(apply, params, t: float, s: float) -> None:
    """grad ||f(x_t, t) - sg f(x_t - dt dxt_dt, t - dt)||^2 / dt -> sigma_d tan(t - s) grad ||F - sg F - g||^2 at
    dt -> 0, f the DDIM rotation to the boundary s (sCM: s = 0; phased sCM: the phase's lower edge). float64
    `apply(params)` on 3-dim data; call under jax.enable_x64."""
    sd = trigflow.SIGMA_D
    x0 = 0.5 * jax.random.normal(jax.random.key(3), (1, 3), jnp.float64)
    z = sd * jax.random.normal(jax.random.key(4), (1, 3), jnp.float64)
    t, s = jnp.asarray([t], jnp.float64), jnp.asarray([s], jnp.float64)
    xt, dxt_dt = trigflow.x_t(x0, z, t), trigflow.v_t(x0, z, t)
    f = lambda p, x, tt: trigflow.ddim_step(x, tt, s, apply(p)(x / sd, tt)[0], sd)
    dt = 1e-6

    def discrete(p):
        target = jax.lax.stop_gradient(f(p, xt - dt * dxt_dt, t - dt))
        return jnp.sum(jnp.square(f(p, xt, t) - target))

    def surrogate(p):
        F_minus_fn = lambda x, tt: apply(jax.lax.stop_gradient(p))(x, tt)[0]
        F_minus, jvp_out = scm.tangent_F(F_minus_fn, xt / sd, t, dxt_dt, scm.SCMOptions(), u=t - s)
        g = scm.scm_g(xt, t - s, F_minus.astype(jnp.float64), dxt_dt, jvp_out.astype(jnp.float64), 1.0, sd)
        F = apply(p)(xt / sd, t)[0]
        return jnp.sum(jnp.square(F - jax.lax.stop_gradient(F) - g))

    lhs = jax.tree.leaves(jax.tree.map(lambda a: a / dt, jax.jit(jax.grad(discrete))(params)))
    scale = sd * jnp.tan(t[0] - s[0])
    rhs = jax.tree.leaves(jax.tree.map(lambda a: scale * a, jax.jit(jax.grad(surrogate))(params)))
    for a, b in zip(lhs, rhs):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6 * float(np.max(np.abs(b))) + 1e-9)
