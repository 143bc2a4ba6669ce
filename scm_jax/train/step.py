"""One pure, jitted train step: loss -> grads -> optimizer -> EMAs, with non-finite updates skipped.

Objectives see parameter-free callables built here from the split model (`nnx.merge` inside the loss).
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.linen import partitioning as nn_partitioning
from ml_collections import ConfigDict

from scm_jax.objectives.diffusion import DiffusionOptions, diffusion_loss
from scm_jax.objectives.scm import SCMOptions, scm_loss
from scm_jax.parallel import sharding
from scm_jax.train import ema
from scm_jax.train.state import Setup


def model_apply(graphdef: nnx.GraphDef, params, attention: Optional[str] = None) -> Callable:
    """apply_fn(x_in, t, labels, guidance, dropout_key) -> (F, w_phi) of the DiT with `params`."""
    model = nnx.merge(graphdef, params)

    def apply(x_in, t, labels=None, guidance=None, dropout_key=None):
        return model(x_in, t, labels, guidance, dropout_key=dropout_key, attention=attention)
    return apply


def make_objective(config: ConfigDict, graphdef: nnx.GraphDef, teacher_fn: Optional[Callable]) -> Callable:
    """loss(params, batch, key, step) -> (loss, metrics) for config.objective."""
    num_classes = config.data.num_classes
    if config.objective == "diffusion":
        d = config.diffusion
        opts = DiffusionOptions(P_mean=d.P_mean, P_std=d.P_std, adaptive_weight=d.adaptive_weight,
                                num_classes=num_classes, label_dropout=d.label_dropout if num_classes else 0.0)
        return lambda p, batch, key, step: diffusion_loss(model_apply(graphdef, p), batch, key, step, opts)
    s = config.scm
    opts = SCMOptions(
        distill=config.objective == "scd", P_mean=config.diffusion.P_mean, P_std=config.diffusion.P_std,
        warmup_steps=s.warmup_steps, tangent_norm=s.tangent_norm, tangent_c=s.tangent_c,
        adaptive_weight=s.adaptive_weight, prior_weight=s.prior_weight, jvp=s.jvp, fd_delta=s.fd_delta,
        num_classes=num_classes, label_dropout=s.label_dropout if num_classes else 0.0,
        guidance=(s.guidance_lo, s.guidance_hi))

    def loss(p, batch, key, step):
        minus = model_apply(graphdef, jax.lax.stop_gradient(p), attention=s.tangent_attention)
        return scm_loss(model_apply(graphdef, p), minus, batch, key, step, opts, teacher_fn)
    return loss


def make_train_step(setup: Setup, config: ConfigDict, teacher_fn: Optional[Callable] = None) -> Callable:
    """train_step(state, batch) -> (state, metrics); jitted with the setup's shardings and donated state."""
    objective = make_objective(config, setup.graphdef, teacher_fn)
    rules = sharding.RULES[config.mesh.rules]
    conditional = config.data.num_classes > 0

    def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
        step = state["step"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
        inputs = {"x0": batch["image"], "label": batch["label"] if conditional else None}
        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(state["params"], inputs, key, step)
        updates, opt_state = setup.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = {"params": params, "opt_state": opt_state, "ema": ema.update_emas(state["ema"], params, setup.ema_decays),
               "step": step + 1, "rng": state["rng"]}
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        # a non-finite loss or gradient leaves the state unchanged except the step (the loop counts and aborts)
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, {**state, "step": step + 1})
        return new, {**metrics, "grad_norm": grad_norm, "finite": finite}

    def traced(state, batch):
        with nn_partitioning.axis_rules(rules):
            return train_step(state, batch)

    batch_shardings = {"image": jax.sharding.NamedSharding(setup.mesh, sharding.batch_spec(4)),
                       "label": jax.sharding.NamedSharding(setup.mesh, sharding.batch_spec(1))}
    return jax.jit(traced, in_shardings=(setup.shardings, batch_shardings),
                   out_shardings=(setup.shardings, None), donate_argnums=(0,))
