"""Phase edges of phased consistency (PCM; spec §5): 0 = s_0 < s_1 < ... < s_M <= pi/2 split TrigFlow time.

t is in phase m when s_m < t <= s_{m+1} (t = 0 counts to phase 0, t > s_M to phase M - 1); shared by the phased
objectives (objectives.pcm) and the phased sampler (samplers.phased).
"""
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from scm_jax.formulations import trigflow


def uniform_edges(M: int, t_max: float = trigflow.T_MAX) -> tuple[float, ...]:
    """s_m = m t_max / M: M phases of equal length in TrigFlow time."""
    if M < 1:
        raise ValueError(f"PCM needs M >= 1 phases, got M={M}.")
    return tuple(m * t_max / M for m in range(M + 1))


def check_edges(edges: Sequence[float]) -> tuple[float, ...]:
    """Edges (s_0, ..., s_M): M >= 1 phases, strictly increasing from s_0 = 0 to s_M <= pi/2."""
    edges = tuple(float(s) for s in edges)
    if len(edges) < 2:
        raise ValueError(f"phase edges {edges} give M = {len(edges) - 1} phases; PCM needs M >= 1, i.e. "
                         f"(s_0, ..., s_M) with at least two edges, e.g. uniform_edges(4).")
    if edges[0] != 0.0 or edges[-1] > math.pi / 2 or any(a >= b for a, b in zip(edges, edges[1:])):
        raise ValueError(f"phase edges must be strictly increasing from s_0 = 0 to s_M <= pi/2, got {edges}; "
                         f"e.g. uniform_edges(4) = {uniform_edges(4)}.")
    return edges


def lower_edge(t: jax.Array, edges: Sequence[float]) -> jax.Array:
    """s_m with s_m < t <= s_{m+1} (t = 0 -> s_0, t > s_M -> s_{M-1}): the consistency target of t's phase."""
    e = jnp.asarray(edges, jnp.float32)
    m = jnp.clip(jnp.searchsorted(e, t, side="left") - 1, 0, len(edges) - 2)
    return e[m]
