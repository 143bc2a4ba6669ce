"""Consistency sampling (sCM §3, spec §3): 1-step, 2-step (t_mid = 1.1) or any decreasing list of times.

f(x_t, t) = cos(t) x_t - sin(t) sigma_d F(x_t / sigma_d, t); between steps re-noise x_t = cos(t) x0 + sin(t) z.
"""
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from scm_jax.formulations import trigflow
from scm_jax.formulations.guidance import ApplyFn

T_MID = 1.1
ONE_STEP = (trigflow.T_MAX,)


def two_step(t_mid: float = T_MID) -> tuple[float, float]:
    """2-step sampling times (t_max, t_mid)."""
    return (trigflow.T_MAX, t_mid)


TWO_STEP = two_step()


def check_times(times: Sequence[float]) -> tuple[float, ...]:
    """Times must be a non-empty, strictly decreasing list in (0, pi/2)."""
    times = tuple(float(t) for t in times)
    if not times or any(not 0.0 < t < jnp.pi / 2 for t in times) or any(
            a <= b for a, b in zip(times, times[1:])):
        raise ValueError(f"sampling times must be strictly decreasing in (0, pi/2), got {times}; "
                         f"e.g. {TWO_STEP} for 2-step sampling.")
    return times


def consistency_sample(apply_fn: ApplyFn, key: jax.Array, shape: tuple[int, ...], times: Sequence[float],
                       labels: Optional[jax.Array] = None, guidance: Optional[jax.Array] = None,
                       sigma_d: float = trigflow.SIGMA_D) -> jax.Array:
    """Multistep consistency sampling (CM Alg. 1 in TrigFlow); deterministic given `key`; NFE = len(times)."""
    times = check_times(times)
    keys = jax.random.split(key, len(times))
    x0 = jnp.zeros(shape, jnp.float32)
    for i, t_i in enumerate(times):
        z = sigma_d * jax.random.normal(keys[i], shape, jnp.float32)
        t = jnp.full(shape[:1], t_i, jnp.float32)
        x = z if i == 0 else trigflow.x_t(x0, z, t)  # x_{t_max} = sigma_d n (its x0 weight cos t_max is dropped)
        F = apply_fn(x / sigma_d, t, labels, guidance)[0]
        x0 = trigflow.f_from_F(x, t, F.astype(jnp.float32), sigma_d)
    return x0
