"""Consistency models in EDM form over the TrigFlow network (CM §3 / App. C; spec §5). Pure jnp.

On EDM's process x = x0 + sigma n (x_sigma of spec §1), with n ~ N(0, I):
    f_theta(x, sigma) = c_skip(sigma) x - c_out(sigma) F_theta(c_in(sigma) x, t(sigma))
    c_skip = sigma_d^2 / ((sigma - eps)^2 + sigma_d^2),  c_out = sigma_d (sigma - eps) / sqrt(sigma^2 + sigma_d^2)
    c_in = 1 / sqrt(sigma^2 + sigma_d^2)   -> c_in x = x_t / sigma_d, TrigFlow's network input (spec §1 EDM link)
    t(sigma) = arctan(sigma / sigma_d)     -> the network's time input is TrigFlow time, as in every other run.
F_theta is our network's output, which is minus the F of CM's equations (CM writes + c_out F): at eps = 0,
c_skip = cos^2 t and c_out = sigma_d sin t, so f is TrigFlow's f = cos t x_t - sin t sigma_d F and a TrigFlow
diffusion network already is the eps = 0 model (ECT's initialisation). f(x, eps) = x for any network.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from scm_jax.formulations import trigflow
from scm_jax.formulations.guidance import ApplyFn

TeacherFn = Callable[..., jax.Array]  # teacher_fn(x_in, t, labels) -> F (TrigFlow parameterisation)


@dataclasses.dataclass(frozen=True)
class EDMConsistency:
    """The parameterisation of a CM run: sigma_d and the boundary eps (CM: 0.002; ECT trains with eps = 0)."""
    sigma_d: float = trigflow.SIGMA_D
    eps: float = trigflow.SIGMA_MIN

    def __post_init__(self):
        if self.sigma_d <= 0 or self.eps < 0:
            raise ValueError(f"EDMConsistency needs sigma_d > 0 and eps >= 0, got {self.sigma_d}, {self.eps}.")


def c_skip(sigma: jax.Array, p: EDMConsistency) -> jax.Array:
    """c_skip(sigma) = sigma_d^2 / ((sigma - eps)^2 + sigma_d^2)   (CM App. C)."""
    return p.sigma_d**2 / ((sigma - p.eps) ** 2 + p.sigma_d**2)


def c_out(sigma: jax.Array, p: EDMConsistency) -> jax.Array:
    """c_out(sigma) = sigma_d (sigma - eps) / sqrt(sigma^2 + sigma_d^2)   (CM App. C)."""
    return p.sigma_d * (sigma - p.eps) / jnp.sqrt(sigma**2 + p.sigma_d**2)


def consistency_fn(apply_fn: ApplyFn, x: jax.Array, sigma: jax.Array, p: EDMConsistency,
                   labels: Optional[jax.Array] = None, guidance: Optional[jax.Array] = None,
                   dropout_key: Optional[jax.Array] = None) -> jax.Array:
    """f_theta(x, sigma) = c_skip x - c_out F_theta(x_t / sigma_d, arctan(sigma / sigma_d))   (CM Eq. 7, EDM form)."""
    t = trigflow.t_from_sigma(sigma, p.sigma_d)
    x_in = trigflow.x_t_from_x_sigma(x, t) / p.sigma_d
    F = apply_fn(x_in, t, labels, guidance, dropout_key)[0].astype(jnp.float32)
    s = trigflow.bcast(sigma, x)
    return c_skip(s, p) * x - c_out(s, p) * F


def teacher_denoiser(teacher_fn: TeacherFn, x: jax.Array, sigma: jax.Array, labels: Optional[jax.Array],
                     sigma_d: float = trigflow.SIGMA_D) -> jax.Array:
    """EDM denoiser D(x_sigma, sigma) of a TrigFlow teacher: x_t = cos(t) x_sigma, D = cos t x_t - sin t sigma_d F."""
    t = trigflow.t_from_sigma(sigma, sigma_d)
    x_t = trigflow.x_t_from_x_sigma(x, t)
    F = teacher_fn(x_t / sigma_d, t, labels).astype(jnp.float32)
    return trigflow.denoiser_from_F(x_t, t, F, sigma_d)


def heun_step(d: Callable, x: jax.Array, a, a_next, h, correct=True) -> jax.Array:
    """One Heun step of dx/dsigma = d(x, a) from level a to a_next, h = sigma(a_next) - sigma(a)   (EDM Alg. 1):
    x_e = x + h d(x, a), then x + h (d(x, a) + d(x_e, a_next)) / 2; `correct` False (or traced False) stops at x_e.

    The level a is whatever d reads (sigma in CM, TrigFlow t in the samplers and PCM)."""
    d_a = d(x, a)
    x_e = x + h * d_a
    heun = lambda: x + h * (d_a + d(x_e, a_next)) / 2
    if isinstance(correct, bool):
        return heun() if correct else x_e
    return jax.lax.cond(correct, heun, lambda: x_e)
