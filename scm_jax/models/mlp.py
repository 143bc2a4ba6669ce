"""A small NNX MLP for low-dimensional data (the 2-D toy and the tests): (x_in [B, D], t [B]) -> (F, w_phi).

Same call signature as the DiT; like it, it knows nothing of TrigFlow.
"""
import jax.numpy as jnp
from flax import nnx

from scm_jax.models.embeddings import positional_embedding


class MLP(nnx.Module):
    def __init__(self, dim: int, width: int = 128, depth: int = 3, emb_dim: int = 32, time_scale: float = 1.0, *,
                 rngs: nnx.Rngs):
        self.emb_dim, self.time_scale = emb_dim, time_scale
        self.inp = nnx.Linear(dim + emb_dim, width, rngs=rngs)
        self.hidden = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(depth - 1)])
        self.out = nnx.Linear(width, dim, rngs=rngs)
        self.w_phi = nnx.Linear(emb_dim, 1, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x, t, labels=None, guidance=None, dropout_key=None):
        del labels, guidance, dropout_key
        emb = positional_embedding(t * self.time_scale, self.emb_dim)
        h = nnx.silu(self.inp(jnp.concatenate([x, emb], axis=-1)))
        for layer in self.hidden:
            h = nnx.silu(layer(h))
        return self.out(h), self.w_phi(emb)[:, 0]
