"""Exact EDM-form oracles for Gaussian data x0 ~ N(0, s^2 I) (spec §6 carried to CM's form, spec §5).

The PF-ODE trajectory through x at sigma is x(sigma') = x sqrt(s^2 + sigma'^2) / sqrt(s^2 + sigma^2), so the exact
consistency function with boundary eps is f*(x, sigma) = x sqrt(s^2 + eps^2) / sqrt(s^2 + sigma^2). The network
that gives it in `formulations.edm` form is F = (c_skip x - f*) / c_out (0 where c_out = 0: f = x there).
"""
import jax.numpy as jnp

from scm_jax.formulations import edm, trigflow
from scm_jax.formulations.edm import EDMConsistency


def f_star(x, sigma, s, p: EDMConsistency):
    sigma = trigflow.bcast(sigma, x)
    return x * jnp.sqrt(s**2 + p.eps**2) / jnp.sqrt(s**2 + sigma**2)


def F_cm(s, p: EDMConsistency):
    """apply_fn(x_in, t, ...) -> (F, w_phi) of the exact CM network for std-s data, in p's form."""
    def apply(x_in, t, labels=None, guidance=None, dropout_key=None):
        sigma = trigflow.sigma_from_t(t, p.sigma_d)
        x = trigflow.x_sigma_from_x_t(p.sigma_d * x_in, t)
        sb = trigflow.bcast(sigma, x)
        c_out = edm.c_out(sb, p)
        safe = jnp.where(c_out == 0, 1.0, c_out)
        F = jnp.where(c_out == 0, 0.0, (edm.c_skip(sb, p) * x - f_star(x, sigma, s, p)) / safe)
        return F, jnp.zeros(t.shape)
    return apply
