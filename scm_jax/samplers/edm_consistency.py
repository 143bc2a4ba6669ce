"""Multistep consistency sampling of CM / iCT / ECT runs in EDM form (CM Algorithm 1; spec §5).

    x = sigma_1 n, x0 = f(x, sigma_1);  then for sigma_2, ...: x = x0 + sqrt(sigma_i^2 - eps^2) z, x0 = f(x, sigma_i)
with f = formulations.edm.consistency_fn. Sampling times are given in TrigFlow time like every other method
(`generate.Method.times`) and mapped by sigma = sigma_d tan(t): t_max = arctan(80 / sigma_d) is sigma = T = 80.
"""
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from scm_jax.formulations import edm
from scm_jax.formulations.edm import EDMConsistency
from scm_jax.formulations.guidance import ApplyFn


def sigmas_from_times(times: Sequence[float], p: EDMConsistency) -> tuple[float, ...]:
    """sigma_i = sigma_d tan(t_i); each must exceed eps (f(x, eps) = x is the end of the trajectory)."""
    sigmas = tuple(p.sigma_d * math.tan(t) for t in times)
    if any(s <= p.eps for s in sigmas):
        raise ValueError(f"sampling times {tuple(times)} give noise levels {sigmas}; each must exceed eps={p.eps}.")
    return sigmas


def cm_sample(apply_fn: ApplyFn, key: jax.Array, shape: tuple[int, ...], sigmas: Sequence[float],
              p: EDMConsistency, labels: Optional[jax.Array] = None,
              guidance: Optional[jax.Array] = None) -> jax.Array:
    """CM Alg. 1 over decreasing `sigmas` (the first is T); deterministic given `key`; NFE = len(sigmas)."""
    keys = jax.random.split(key, len(sigmas))
    x0 = jnp.zeros(shape, jnp.float32)
    for i, sigma_i in enumerate(sigmas):
        z = jax.random.normal(keys[i], shape, jnp.float32)
        x = sigma_i * z if i == 0 else x0 + math.sqrt(sigma_i**2 - p.eps**2) * z
        x0 = edm.consistency_fn(apply_fn, x, jnp.full(shape[:1], sigma_i, jnp.float32), p, labels, guidance)
    return x0
