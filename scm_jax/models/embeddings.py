"""Fixed sin-cos embeddings (time, guidance scale, 2-D patch positions) and the scalar-embedding MLP.

The scalar path is float32 whatever the network's compute dtype (sCM §2: time embeddings and the JVP's time
path stay float32).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scm_jax.models.layers import names

_F32 = jnp.float32


def positional_embedding(c: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """[B] -> [B, dim] `[cos(c w_i), sin(c w_i)]`, w_i = max_period^(-i / (dim/2)) (DiT/ADM form); at least float32
    whatever the compute dtype (float64 under x64 for the oracle tests)."""
    half = dim // 2
    dtype = jnp.promote_types(c.dtype, _F32)
    w = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=dtype) / half)
    arg = c.astype(dtype)[:, None] * w[None]
    return jnp.concatenate([jnp.cos(arg), jnp.sin(arg)], axis=-1)


def sincos_2d(grid: int, dim: int) -> np.ndarray:
    """[grid*grid, dim] fixed 2-D sin-cos position embedding (MAE/DiT): half the channels per axis."""
    w = 1.0 / 10_000.0 ** (np.arange(dim // 4, dtype=np.float64) / (dim // 4))
    rows, cols = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64), indexing="ij")
    parts = [f(pos.reshape(-1, 1) * w[None]) for pos in (rows, cols) for f in (np.sin, np.cos)]
    return np.concatenate(parts, axis=1).astype(np.float32)


class ScalarEmbedder(nnx.Module):
    """Positional embedding of a per-sample scalar (c_noise(t) or the guidance scale), then SiLU MLP (float32)."""

    def __init__(self, out: int, *, freq_dim: int = 256, zero_out: bool = False, param_dtype=_F32, rngs: nnx.Rngs):
        self.freq_dim = freq_dim
        init = nnx.initializers.normal(0.02)
        self.fc1 = nnx.Linear(
            freq_dim, out, kernel_init=init, dtype=_F32, param_dtype=param_dtype, rngs=rngs,
            kernel_metadata=names("freq", "mlp"), bias_metadata=names("mlp"),
        )
        # zero_out: starts as a no-op when added to a pretrained conditioning (sCD students' guidance input).
        self.fc2 = nnx.Linear(
            out, out, kernel_init=nnx.initializers.zeros if zero_out else init, dtype=_F32,
            param_dtype=param_dtype, rngs=rngs, kernel_metadata=names("mlp", "cond"), bias_metadata=names("cond"),
        )

    def __call__(self, c: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.silu(self.fc1(positional_embedding(c, self.freq_dim))))


class LogvarHead(nnx.Module):
    """Adaptive weight w_phi(t): SiLU MLP on the positional embedding of c_noise(t) only (sCM §2), float32.

    The output layer starts at zero so exp(w_phi) = 1 at init.
    """

    def __init__(self, channels: int, *, param_dtype=_F32, rngs: nnx.Rngs):
        self.channels = channels
        self.fc1 = nnx.Linear(
            channels, channels, dtype=_F32, param_dtype=param_dtype, rngs=rngs,
            kernel_metadata=names("freq", "mlp"), bias_metadata=names("mlp"),
        )
        self.fc2 = nnx.Linear(
            channels, 1, kernel_init=nnx.initializers.zeros, dtype=_F32, param_dtype=param_dtype, rngs=rngs,
            kernel_metadata=names("mlp", None), bias_metadata=names(None),
        )

    def __call__(self, c: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.silu(self.fc1(positional_embedding(c, self.channels))))[:, 0]
