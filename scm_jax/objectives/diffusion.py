"""TrigFlow diffusion (flow-matching) objective: E[w(t) ||sigma_d F_theta - v_t||^2]   (sCM §2, spec §1).

With `adaptive_weight`, the network's w_phi(t) head learns the weighting as in sCM / EDM2:
L = exp(w_phi(t)) / D ||sigma_d F_theta - v_t||^2 - w_phi(t).
"""
import dataclasses

import jax
import jax.numpy as jnp

from scm_jax.formulations import trigflow
from scm_jax.formulations.guidance import ApplyFn, drop_labels


@dataclasses.dataclass(frozen=True)
class DiffusionOptions:
    sigma_d: float = trigflow.SIGMA_D
    P_mean: float = -1.0
    P_std: float = 1.4
    adaptive_weight: bool = True
    num_classes: int = 0        # 0: unconditional; else labels in [0, num_classes), null class = num_classes
    label_dropout: float = 0.0  # probability of the null class (trains the CFG unconditional branch)

    def __post_init__(self):
        if self.sigma_d <= 0 or self.P_std <= 0:
            raise ValueError(f"sigma_d and P_std must be > 0, got {self.sigma_d}, {self.P_std}.")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}.")


def weighted_loss(err2: jax.Array, w_phi: jax.Array, adaptive: bool) -> jax.Array:
    """Per-sample mean squared error [B] -> adaptive weighting exp(w_phi)/D ||.||^2 - w_phi (sCM Eq. 9)."""
    if not adaptive:
        return err2
    return jnp.exp(w_phi) * err2 - w_phi


def per_sample_mse(diff: jax.Array) -> jax.Array:
    """||diff||^2 / D per sample, in float32."""
    diff = diff.astype(jnp.float32)
    return jnp.mean(jnp.square(diff), axis=tuple(range(1, diff.ndim)))


def diffusion_loss(apply_fn: ApplyFn, batch: dict, key: jax.Array, step: jax.Array,
                   opts: DiffusionOptions) -> tuple[jax.Array, dict]:
    """One Monte-Carlo estimate of the TrigFlow flow-matching loss; batch = {"x0": [B,...], "label"?: [B]}."""
    del step
    x0 = batch["x0"].astype(jnp.float32)
    k_z, k_t, k_lbl, k_drop = jax.random.split(key, 4)
    z = opts.sigma_d * jax.random.normal(k_z, x0.shape, jnp.float32)
    t = trigflow.sample_t(k_t, x0.shape[:1], opts.P_mean, opts.P_std, opts.sigma_d)
    labels = drop_labels(k_lbl, batch.get("label"), opts.label_dropout, opts.num_classes)
    F, w_phi = apply_fn(trigflow.x_t(x0, z, t) / opts.sigma_d, t, labels, None, k_drop)
    err2 = per_sample_mse(opts.sigma_d * F - trigflow.v_t(x0, z, t))
    loss = jnp.mean(weighted_loss(err2, w_phi, opts.adaptive_weight))
    return loss, {"loss": loss, "mse": jnp.mean(err2), "w_phi": jnp.mean(w_phi)}
