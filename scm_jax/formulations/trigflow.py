"""TrigFlow (sCM §2, spec/math.md §1): forward process, velocity, consistency function, conversions.

Pure jnp. `t` has shape [B] and broadcasts over the trailing dimensions of `x`.
"""
import math

import jax
import jax.numpy as jnp

SIGMA_D = 0.5
SIGMA_MAX = 80.0
SIGMA_MIN = 0.002
T_MAX = math.atan(SIGMA_MAX / SIGMA_D)  # = 1.56454 (spec §3)


def bcast(t: jax.Array, x: jax.Array) -> jax.Array:
    """Reshape per-sample `t` [B] to broadcast against `x` [B, ...]."""
    return jnp.reshape(t, t.shape + (1,) * (x.ndim - t.ndim))


def x_t(x0: jax.Array, z: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = cos(t) x0 + sin(t) z   (sCM Eq. 1)."""
    t = bcast(t, x0)
    return jnp.cos(t) * x0 + jnp.sin(t) * z


def v_t(x0: jax.Array, z: jax.Array, t: jax.Array) -> jax.Array:
    """v_t = dx_t/dt = cos(t) z - sin(t) x0   (sCM Eq. 2 target)."""
    t = bcast(t, x0)
    return jnp.cos(t) * z - jnp.sin(t) * x0


def f_from_F(x: jax.Array, t: jax.Array, F: jax.Array, sigma_d: float = SIGMA_D) -> jax.Array:
    """Consistency function f(x_t, t) = cos(t) x_t - sin(t) sigma_d F   (sCM Eq. 6)."""
    t = bcast(t, x)
    return jnp.cos(t) * x - jnp.sin(t) * sigma_d * F


def ddim_step(x: jax.Array, t: jax.Array, s: jax.Array, F: jax.Array, sigma_d: float = SIGMA_D) -> jax.Array:
    """Exact-rotation PF-ODE step t -> s: x_s = cos(t - s) x_t - sin(t - s) sigma_d F   (spec §1)."""
    d = bcast(t - s, x)
    return jnp.cos(d) * x - jnp.sin(d) * sigma_d * F


def sample_t(key: jax.Array, shape: tuple[int, ...], P_mean: float, P_std: float,
             sigma_d: float = SIGMA_D) -> jax.Array:
    """tau ~ N(P_mean, P_std^2), t = arctan(exp(tau) / sigma_d)   (sCM Alg. 1)."""
    tau = P_mean + P_std * jax.random.normal(key, shape, jnp.float32)
    return jnp.arctan(jnp.exp(tau) / sigma_d)


# --- Conversions to other parameterisations (spec §1 "EDM link") ---

def t_from_sigma(sigma: jax.Array, sigma_d: float = SIGMA_D) -> jax.Array:
    """t = arctan(sigma / sigma_d) for the EDM process x_sigma = x0 + sigma eps."""
    return jnp.arctan(sigma / sigma_d)


def sigma_from_t(t: jax.Array, sigma_d: float = SIGMA_D) -> jax.Array:
    """sigma = sigma_d tan(t)."""
    return sigma_d * jnp.tan(t)


def t_from_alpha_sigma(alpha: jax.Array, sigma: jax.Array, sigma_d: float = SIGMA_D) -> jax.Array:
    """Any schedule x = alpha x0 + sigma eps (VP, flow matching): t = arctan(sigma / (sigma_d alpha))."""
    return jnp.arctan2(sigma, sigma_d * alpha)


def x_t_from_x_sigma(x_sigma: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = cos(t) x_sigma, with sigma = sigma_d tan(t) (and noise z = sigma_d eps)."""
    return jnp.cos(bcast(t, x_sigma)) * x_sigma


def x_sigma_from_x_t(x: jax.Array, t: jax.Array) -> jax.Array:
    """Inverse of x_t_from_x_sigma: x_sigma = x_t / cos(t)."""
    return x / jnp.cos(bcast(t, x))


def F_from_denoiser(x: jax.Array, t: jax.Array, D: jax.Array, sigma_d: float = SIGMA_D) -> jax.Array:
    """An x0-prediction D(x_sigma, sigma) gives F = (cos(t) x_t - D) / (sigma_d sin(t))   (spec §1)."""
    t = bcast(t, x)
    return (jnp.cos(t) * x - D) / (sigma_d * jnp.sin(t))


def denoiser_from_F(x: jax.Array, t: jax.Array, F: jax.Array, sigma_d: float = SIGMA_D) -> jax.Array:
    """D = cos(t) x_t - sin(t) sigma_d F, i.e. the x0-prediction is f itself."""
    return f_from_F(x, t, F, sigma_d)


def F_from_flow_velocity(x: jax.Array, t_fm: jax.Array, u: jax.Array, sigma_d: float = SIGMA_D) -> jax.Array:
    """Rectified-flow teacher x = (1 - s) x0 + s eps with velocity u = eps - x0, s = t_fm in [0, 1].

    Here x0 is data with std sigma_d and eps ~ N(0, sigma_d^2) noise (so z = eps); its x0-prediction is
    D = x - s u, and `x` is mapped to TrigFlow by x_t = x / sqrt((1-s)^2 + s^2) at t = arctan(s / (1-s)).
    """
    s = bcast(t_fm, x)
    norm = jnp.sqrt((1 - s) ** 2 + s**2)
    t = jnp.arctan2(t_fm, 1 - t_fm)
    return F_from_denoiser(x / norm, t, x - s * u, sigma_d)
