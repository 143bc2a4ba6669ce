"""Teacher PF-ODE solvers on dx_t/dt = sigma_d F(x_t / sigma_d, t) (spec §1, §3).

Steps are taken in EDM's sigma-space (x_sigma = x_t / cos t, sigma = sigma_d tan t, dx_sigma/dsigma = (x_sigma - D)
/ sigma with the x0-prediction D = f): there Euler is exactly the TrigFlow rotation (DDIM) step and Heun is EDM's
2nd-order sampler (Karras et al. 2022, Alg. 1; one formulations.edm.heun_step). Times follow EDM's Karras schedule
(rho = 7, sigma in [0.002, 80]) mapped by t = arctan(sigma / sigma_d), then a last step to t = 0. NFE: Euler N,
Heun 2N - 1 for N noise levels.
"""
from typing import Optional

import jax
import jax.numpy as jnp

from scm_jax.formulations import edm, trigflow
from scm_jax.formulations.guidance import ApplyFn

SOLVERS = ("euler", "heun")


def karras_times(N: int, sigma_min: float = trigflow.SIGMA_MIN, sigma_max: float = trigflow.SIGMA_MAX,
                 rho: float = 7.0, sigma_d: float = trigflow.SIGMA_D) -> jax.Array:
    """sigma_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho (EDM Eq. 5) -> t, then 0.

    N = 1 is sigma_max alone: one step from t_max straight to 0 (Euler NFE 1).
    """
    if N < 1:
        raise ValueError(f"the Karras schedule needs N >= 1 noise levels, got {N}.")
    i = jnp.arange(N, dtype=jnp.float32) / max(N - 1, 1)
    sigma = (sigma_max ** (1 / rho) + i * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return jnp.concatenate([trigflow.t_from_sigma(sigma, sigma_d), jnp.zeros((1,), jnp.float32)])


def nfe(solver: str, N: int) -> int:
    """Network evaluations of `ode_sample` for N noise levels."""
    return N if solver == "euler" else 2 * N - 1


def ode_sample(apply_fn: ApplyFn, key: jax.Array, shape: tuple[int, ...], N: int, solver: str = "heun",
               labels: Optional[jax.Array] = None, sigma_d: float = trigflow.SIGMA_D) -> jax.Array:
    """Integrate the PF-ODE from t_max to 0 with `solver`; deterministic given `key`."""
    if solver not in SOLVERS:
        raise ValueError(f"solver={solver!r} is unknown; use one of {SOLVERS}.")
    times = karras_times(N, sigma_d=sigma_d)

    def d(x_sigma, t):  # dx_sigma / dsigma = (x_sigma - D) / sigma   (EDM Eq. 3)
        tb = jnp.full(shape[:1], t)
        x = trigflow.x_t_from_x_sigma(x_sigma, tb)
        F = apply_fn(x / sigma_d, tb, labels, None)[0].astype(jnp.float32)
        return (x_sigma - trigflow.f_from_F(x, tb, F, sigma_d)) / trigflow.sigma_from_t(t, sigma_d)

    def step(x_sigma, ts):
        t, s = ts
        h = trigflow.sigma_from_t(s, sigma_d) - trigflow.sigma_from_t(t, sigma_d)
        # Euler, or Heun with no correction on the last step to t = 0
        return edm.heun_step(d, x_sigma, t, s, h, correct=solver == "heun" and s > 0), None

    x_T = sigma_d * jax.random.normal(key, shape, jnp.float32)
    x0, _ = jax.lax.scan(step, trigflow.x_sigma_from_x_t(x_T, times[:1]), (times[:-1], times[1:]))
    return x0
