"""Deterministic phased sampling (PCM §3.2, spec §5): from t_max through the M phase edges, one call per phase.

x_{s_M} = sigma_d n;  x_{s_m} = f_m(x_{s_{m+1}}, s_{m+1}) = cos(s_{m+1} - s_m) x - sin(s_{m+1} - s_m) sigma_d F
for m = M-1, ..., 0; returns x_{s_0} = x_0. NFE = M; deterministic given the PRNG key (no re-noising).
"""
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from scm_jax.formulations import trigflow
from scm_jax.formulations.guidance import ApplyFn
from scm_jax.formulations.phases import check_edges


def phased_sample(apply_fn: ApplyFn, key: jax.Array, shape: tuple[int, ...], edges: Sequence[float],
                  labels: Optional[jax.Array] = None, guidance: Optional[jax.Array] = None,
                  sigma_d: float = trigflow.SIGMA_D) -> jax.Array:
    """Jump edge to edge with the phased consistency function f_m (PCM's deterministic sampler)."""
    edges = check_edges(edges)
    x = sigma_d * jax.random.normal(key, shape, jnp.float32)  # x_{s_M} (its x0 weight cos s_M is dropped)
    for s_next, s in zip(edges[:0:-1], edges[-2::-1]):
        t = jnp.full(shape[:1], s_next, jnp.float32)
        F = apply_fn(x / sigma_d, t, labels, guidance)[0].astype(jnp.float32)
        x = trigflow.ddim_step(x, t, jnp.full(shape[:1], s, jnp.float32), F, sigma_d)  # f_m   (spec §5)
    return x
