"""ECT, Easy Consistency Tuning (Geng et al. 2024; spec §5): a diffusion model tuned into a consistency model.

    L = E_t[ w(t, r) d(f_theta(x0 + t n, t), sg f_theta(x0 + r n, r)) ],  w = 1 / (t - r),  the same noise n,
with t, r noise levels in EDM's sigma units (ECT's symbols), log t ~ N(P_mean, P_std^2) and the shrinking gap
    r = max(t (1 - n(t) / q^a), 0),  n(t) = 1 + k sigmoid(-b t),  a = 1 + floor(step / stage_steps).
ECT trains with the diffusion preconditioning (eps = 0, its ECMPrecond in training mode), so at step 0 f is
exactly the diffusion checkpoint's denoiser; the student starts from those weights (scm.teacher_workdir).
The pair and the distance are cm.py's; only the (t, r) sampling and w differ.
"""
import dataclasses

import jax
import jax.numpy as jnp

from scm_jax.formulations import trigflow
from scm_jax.formulations.edm import EDMConsistency
from scm_jax.formulations.guidance import ApplyFn
from scm_jax.objectives.cm import Distance, consistency_distance


@dataclasses.dataclass(frozen=True)
class ECTOptions:
    precond: EDMConsistency = EDMConsistency(eps=0.0)
    P_mean: float = -1.1
    P_std: float = 2.0
    q: float = 2.0                 # the gap t - r shrinks by q every stage
    k: float = 8.0                 # n(t) = 1 + k sigmoid(-b t)
    b: float = 1.0
    stage_steps: int = 25_000      # a = 1 + floor(step / stage_steps) (CIFAR-10: 25k iterations)
    distance: Distance = Distance("pseudo_huber")

    def __post_init__(self):
        if self.q <= 1 or self.k < 0 or self.P_std <= 0 or self.stage_steps < 1:
            raise ValueError(f"ECT needs q > 1, k >= 0, P_std > 0 and stage_steps >= 1, got q={self.q}, "
                             f"k={self.k}, P_std={self.P_std}, stage_steps={self.stage_steps}.")


def ect_r(t: jax.Array, step: jax.Array, opts: ECTOptions) -> jax.Array:
    """r = max(t (1 - n(t) / q^a), 0), n(t) = 1 + k sigmoid(-b t), a = 1 + floor(step / stage_steps)   (ECT §3)."""
    a = 1 + jnp.floor_divide(jnp.asarray(step, jnp.int32), opts.stage_steps).astype(jnp.float32)
    n_t = 1 + opts.k * jax.nn.sigmoid(-opts.b * t)
    return jnp.maximum(t * (1 - n_t / opts.q**a), 0.0)


def ect_loss(apply_fn: ApplyFn, apply_fn_minus: ApplyFn, batch: dict, key: jax.Array, step: jax.Array,
             opts: ECTOptions) -> tuple[jax.Array, dict]:
    """ECT loss; apply_fn_minus is sg(theta). batch = {"x0": [B, ...], "label"?: [B]}. Returns (loss, metrics)."""
    x0, labels = batch["x0"].astype(jnp.float32), batch.get("label")
    k_t, k_n, k_drop = jax.random.split(key, 3)
    t = jnp.exp(opts.P_mean + opts.P_std * jax.random.normal(k_t, x0.shape[:1], jnp.float32))
    r = ect_r(t, step, opts)
    n = jax.random.normal(k_n, x0.shape, jnp.float32)
    x_t, x_r = (x0 + trigflow.bcast(s, x0) * n for s in (t, r))
    d = consistency_distance(apply_fn, apply_fn_minus, x_t, t, x_r, r, labels, k_drop, opts.precond, opts.distance)
    loss = jnp.mean(d / (t - r))  # w(t, r) = 1 / (t - r)
    return loss, {"loss": loss, "distance": jnp.mean(d), "r_over_t": jnp.mean(r / t)}
