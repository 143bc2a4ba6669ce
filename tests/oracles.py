"""Exact Gaussian oracles of spec §6: data x0 ~ N(0, s^2 I), TrigFlow with sigma_d.

apply_fn-style callables take x_in = x_t / sigma_d.
"""
import jax.numpy as jnp

from scm_jax.formulations import trigflow

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
