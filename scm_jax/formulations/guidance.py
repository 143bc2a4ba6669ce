"""Class conditioning shared by objectives and samplers: label dropout and classifier-free guidance."""
from typing import Callable, Optional

import jax
import jax.numpy as jnp

# apply_fn(x_in, t, labels=None, guidance=None, dropout_key=None) -> (F, w_phi)
ApplyFn = Callable[..., tuple[jax.Array, jax.Array]]


def drop_labels(key: jax.Array, labels: Optional[jax.Array], p: float, null_label: int) -> Optional[jax.Array]:
    """Replace each label by the null class with probability p (trains the unconditional branch for CFG)."""
    if labels is None or p == 0.0:
        return labels
    drop = jax.random.bernoulli(key, p, labels.shape)
    return jnp.where(drop, null_label, labels)


def guided_F(apply_fn: ApplyFn, x_in: jax.Array, t: jax.Array, labels: jax.Array, scale: jax.Array,
             null_label: int, **kwargs) -> jax.Array:
    """Classifier-free guidance F_u + s (F_c - F_u) (sCM §5 / spec §2), one batched call of 2B."""
    B = x_in.shape[0]
    both = apply_fn(jnp.concatenate([x_in, x_in]), jnp.concatenate([t, t]),
                    jnp.concatenate([labels, jnp.full_like(labels, null_label)]), **kwargs)[0]
    F_c, F_u = both[:B], both[B:]
    s = jnp.reshape(scale, scale.shape + (1,) * (x_in.ndim - scale.ndim))
    return F_u + s * (F_c - F_u)
