"""EMA of the parameters with half-lives in Mimg (EDM2 / sCM: "EMA half-life 0.5 Mimg")."""
import jax
import jax.numpy as jnp


def ema_decay(half_life_mimg: float, batch_size: int) -> float:
    """Per-step decay beta with beta^(steps per half-life) = 1/2: beta = 0.5^(batch / (half_life * 1e6))."""
    if half_life_mimg <= 0:
        raise ValueError(f"EMA half-life must be > 0 Mimg, got {half_life_mimg}.")
    return 0.5 ** (batch_size / (half_life_mimg * 1e6))


def ema_name(half_life_mimg: float) -> str:
    return f"ema_{half_life_mimg:g}"


def update_emas(emas: dict, params, decays: dict[str, float]) -> dict:
    """ema <- beta ema + (1 - beta) params, in float32 whatever the parameter dtype."""
    return {name: jax.tree.map(lambda e, p: decays[name] * e + (1 - decays[name]) * p.astype(jnp.float32),
                               emas[name], params) for name in emas}
