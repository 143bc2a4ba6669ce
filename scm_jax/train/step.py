"""One pure, jitted train step: loss -> grads -> optimizer -> EMAs, with non-finite updates skipped.

Objectives see parameter-free callables built here from the split model (`nnx.merge` inside the loss); what the
step holds and runs (theta^-, teacher, critic) is the objective's spec (objectives.registry).
"""
import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.linen import partitioning as nn_partitioning
from ml_collections import ConfigDict

from scm_jax.models.registry import model_apply
from scm_jax.objectives import cm, pcm, registry
from scm_jax.parallel import sharding
from scm_jax.parallel.batch import batch_devices
from scm_jax.train import ema
from scm_jax.train.critic import CriticSetup
from scm_jax.train.state import Setup


@dataclasses.dataclass(frozen=True)
class StepOptions:
    """Everything the traced step reads, built once from the config outside jit (`step_options`)."""
    objective: registry.Objective
    loss: Any                        # the objective's frozen options
    batch_size: int
    ema_rampup_ratio: float
    accum_steps: int
    conditional: bool
    rules: str                       # config.mesh.rules
    tangent_attention: Optional[str]  # F^- of the sCM tangent pass: None shares the student's pass, else its kernel


def step_options(config: ConfigDict, mesh: jax.sharding.Mesh) -> StepOptions:
    s = config.scm
    shared = s.tangent_attention == "same" and s.jvp == "exact"
    return StepOptions(
        objective=registry.spec(config), loss=registry.spec(config).options(config),
        batch_size=config.train.batch_size, ema_rampup_ratio=config.train.ema_rampup_ratio,
        accum_steps=check_grad_accum(config.train.batch_size, config.train.grad_accum_steps, mesh),
        conditional=config.data.num_classes > 0, rules=config.mesh.rules,
        tangent_attention=None if shared else s.tangent_attention)


def minus_apply(o: StepOptions, graphdef: nnx.GraphDef, params, target=None) -> Optional[Callable]:
    """theta^- as the objective's spec names it: the EMA `target`, sg(params), or F^- of the sCM tangent pass (None
    shares the student's pass: scm.tangent_attention="same" with the exact JVP)."""
    spec = o.objective
    if spec.ema_target:
        if target is None:
            raise ValueError("this objective needs the train state's EMA target network.")
        return model_apply(graphdef, jax.lax.stop_gradient(target))
    if spec.minus == "sg":
        return model_apply(graphdef, jax.lax.stop_gradient(params))
    if spec.tangent and o.tangent_attention is not None:
        attention = None if o.tangent_attention == "same" else o.tangent_attention
        return model_apply(graphdef, jax.lax.stop_gradient(params), attention=attention)
    return None


def make_objective(o: StepOptions, graphdef: nnx.GraphDef, teacher_fn: Optional[Callable],
                   critic: Optional[CriticSetup] = None) -> Callable:
    """loss(params, batch, key, step, target=None, critic_state=None) -> (loss, metrics): the objective over the
    network; `target` is CM's EMA theta^-, `critic_state` PCM's adversarial critic (fixed here)."""
    def loss(params, batch, key, step, target=None, critic_state=None):
        minus = minus_apply(o, graphdef, params, target)
        extra = {} if critic_state is None else {
            "disc_fn": critic.disc_fn(jax.lax.stop_gradient(critic_state["params"]))}
        return o.objective.loss(model_apply(graphdef, params), minus, batch, key, step, o.loss, teacher_fn, **extra)
    return loss


def critic_update(o: StepOptions, graphdef: nnx.GraphDef, critic: CriticSetup,
                  teacher_fn: Optional[Callable]) -> Callable:
    """update(critic_state, params, batch, key) -> (critic_state, metrics): one hinge step of PCM's critic on the
    pair the student saw for `key` (objectives.pcm.discriminator_step), the student at sg(params)."""
    def update(critic_state, params, batch, key):
        minus = model_apply(graphdef, jax.lax.stop_gradient(params))
        d_params, d_opt_state, metrics = pcm.discriminator_step(
            critic.disc_fn, critic_state["params"], critic_state["opt_state"], critic.tx, minus, batch, key, o.loss,
            teacher_fn)
        return {"params": d_params, "opt_state": d_opt_state}, metrics
    return update


def check_grad_accum(batch_size: int, accum_steps: int, mesh: jax.sharding.Mesh) -> int:
    """`accum_steps` if the batch splits into that many microbatches, each divisible by the data-parallel size."""
    dp = batch_devices(mesh)
    if accum_steps < 1 or batch_size % (accum_steps * dp):
        raise ValueError(f"config: train.grad_accum_steps={accum_steps} needs train.batch_size={batch_size} to be "
                         f"a multiple of grad_accum_steps x the data-parallel size {dp}; change either.")
    return accum_steps


def accumulated_value_and_grad(objective: Callable, accum_steps: int, mesh: jax.sharding.Mesh) -> Callable:
    """`jax.value_and_grad(objective, has_aux=True)`, averaged over `accum_steps` equal microbatches.

    Microbatch i holds rows i, i + n, i + 2n, ... (n = accum_steps), so every device keeps its own rows, and uses
    the key fold_in(key, i). A `jax.lax.scan` runs them one at a time: activation memory is one microbatch's.
    The mean of equal microbatches' gradients is the gradient of the whole batch's mean loss.
    """
    grad_fn = jax.value_and_grad(objective, has_aux=True)
    if accum_steps == 1:
        return grad_fn

    def split(a: jax.Array) -> jax.Array:  # [B, ...] -> [n, B / n, ...], batch axis still data-parallel
        a = jnp.swapaxes(a.reshape(a.shape[0] // accum_steps, accum_steps, *a.shape[1:]), 0, 1)
        spec = jax.sharding.PartitionSpec(None, *sharding.batch_spec(a.ndim - 1))
        return jax.lax.with_sharding_constraint(a, jax.sharding.NamedSharding(mesh, spec))

    def accumulated(params, batch: dict, key: jax.Array, step: jax.Array, **kwargs):
        micro = jax.tree.map(split, batch)

        def add(total, xs):
            i, mb = xs
            out = grad_fn(params, mb, jax.random.fold_in(key, i), step, **kwargs)
            return jax.tree.map(jnp.add, total, out), None

        first = jax.tree.map(lambda a: a[0], micro)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                             jax.eval_shape(grad_fn, params, first, key, step, **kwargs))
        total, _ = jax.lax.scan(add, zeros, (jnp.arange(accum_steps), micro))
        return jax.tree.map(lambda a: a / accum_steps, total)
    return accumulated


def make_train_step(setup: Setup, config: ConfigDict, teacher_fn: Optional[Callable] = None) -> Callable:
    """train_step(state, batch) -> (state, metrics); jitted with the setup's shardings and donated state. The traced
    step closes over frozen options only (StepOptions, built here)."""
    o = step_options(config, setup.mesh)
    objective = make_objective(o, setup.graphdef, teacher_fn, setup.critic)
    critic = critic_update(o, setup.graphdef, setup.critic, teacher_fn) if setup.critic else None
    rules = sharding.RULES[o.rules]

    def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
        step = state["step"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
        inputs = {"x0": batch["image"], "label": batch["label"] if o.conditional else None}
        extra = {"target": state["target"]} if "target" in state else {}  # CM's EMA theta^- (cd, ct)
        if critic:
            extra["critic_state"] = state["critic"]  # fixed for the student's step
        (loss, metrics), grads = accumulated_value_and_grad(objective, o.accum_steps, setup.mesh)(
            state["params"], inputs, key, step, **extra)
        updates, opt_state = setup.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        decays = {name: ema.ema_decay(h, o.batch_size, step, o.ema_rampup_ratio)
                  for name, h in setup.ema_half_lives.items()}
        new = {"params": params, "opt_state": opt_state, "ema": ema.update_emas(state["ema"], params, decays),
               "step": step + 1, "rng": state["rng"]}
        if "target" in extra:  # theta^- <- sg(mu(k) theta^- + (1 - mu(k)) theta)   (CM Alg. 2, 3)
            metrics["mu"] = cm.ema_rate(step, o.loss)
            new["target"] = ema.update_emas({"target": extra["target"]}, params, {"target": metrics["mu"]})["target"]
        if critic:  # then the critic's own step on the pair the student saw (key), student at its old weights
            new["critic"], d_metrics = critic(state["critic"], state["params"], inputs, key)
            metrics = {**metrics, **d_metrics}
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(metrics.get("d_loss", 0.0))
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
