"""EMA of the parameters with half-lives in Mimg (EDM2 / sCM: "EMA half-life 0.5 Mimg"), ramped up as EDM does.

Without a ramp-up a fixed decay keeps 2^-(images / half-life) of the random initialisation in the EMA: 41% after
400 steps x 64 images at a 0.02 Mimg half-life. EDM (Karras et al. 2022, training loop) caps the half-life at
`rampup_ratio` x the images seen so far, so the first update copies the parameters and the EMA of a constant
trajectory is that constant from step 1.
"""
import jax
import jax.numpy as jnp


def ema_decay(half_life_mimg: float, batch_size: int, step: jax.Array | int = 0,
              rampup_ratio: float = 0.0) -> jax.Array | float:
    """Per-step decay beta = 0.5^(batch / h), h = min(half-life, rampup_ratio x images seen before this update)
    (EDM's ema_rampup_ratio; 0 = no ramp-up, the fixed half-life from step 0)."""
    if half_life_mimg <= 0:
        raise ValueError(f"EMA half-life must be > 0 Mimg, got {half_life_mimg}.")
    h = half_life_mimg * 1e6
    if rampup_ratio > 0:
        h = jnp.minimum(h, rampup_ratio * batch_size * jnp.asarray(step, jnp.float32))
        return jnp.where(h > 0, 0.5 ** (batch_size / jnp.maximum(h, 1e-8)), 0.0)
    return 0.5 ** (batch_size / h)


def ema_name(half_life_mimg: float) -> str:
    return f"ema_{half_life_mimg:g}"


def update_emas(emas: dict, params, decays: dict) -> dict:
    """ema <- beta ema + (1 - beta) params, in float32 whatever the parameter dtype."""
    return {name: jax.tree.map(lambda e, p: decays[name] * e + (1 - decays[name]) * p.astype(jnp.float32),
                               emas[name], params) for name in emas}
