"""A small critic for PCM's adversarial loss (objectives.pcm): (x_in [B, ...], t [B], labels [B]?) -> logits [B].

Flattened (noised) pixels or features + positional time embedding (+ class embedding) -> SiLU MLP -> one logit.
Like the other models it knows nothing of TrigFlow.
"""
from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from scm_jax.models.embeddings import positional_embedding


class Discriminator(nnx.Module):
    def __init__(self, dim: int, width: int = 256, depth: int = 2, emb_dim: int = 32, num_classes: int = 0, *,
                 rngs: nnx.Rngs):
        self.emb_dim = emb_dim
        self.classes = nnx.Embed(num_classes + 1, emb_dim, rngs=rngs) if num_classes else None
        self.inp = nnx.Linear(dim + emb_dim, width, rngs=rngs)
        self.hidden = nnx.List([nnx.Linear(width, width, rngs=rngs) for _ in range(depth - 1)])
        self.out = nnx.Linear(width, 1, rngs=rngs)

    def __call__(self, x_in: jax.Array, t: jax.Array, labels: Optional[jax.Array] = None) -> jax.Array:
        emb = positional_embedding(t, self.emb_dim)
        if self.classes is not None and labels is not None:
            emb = emb + self.classes(labels)
        h = nnx.silu(self.inp(jnp.concatenate([x_in.reshape(x_in.shape[0], -1), emb], axis=-1)))
        for layer in self.hidden:
            h = nnx.silu(layer(h))
        return self.out(h)[:, 0]
