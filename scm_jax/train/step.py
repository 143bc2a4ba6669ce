"""One pure, jitted train step: loss -> grads -> optimizer -> EMAs, with non-finite updates skipped.

Objectives see parameter-free callables built here from the split model (`nnx.merge` inside the loss).
"""
import functools
import math
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.linen import partitioning as nn_partitioning
from ml_collections import ConfigDict

from scm_jax.formulations.edm import OBJECTIVE_FORMS
from scm_jax.objectives import cm, pcm
from scm_jax.objectives.cm import CMOptions
from scm_jax.objectives.diffusion import DiffusionOptions, diffusion_loss
from scm_jax.objectives.ect import ECTOptions, ect_loss
from scm_jax.objectives.scm import SCMOptions, scm_loss
from scm_jax.parallel import sharding
from scm_jax.train import ema
from scm_jax.train.critic import CriticSetup
from scm_jax.train.state import Setup


def model_apply(graphdef: nnx.GraphDef, params, attention: Optional[str] = None) -> Callable:
    """apply_fn(x_in, t, labels, guidance, dropout_key) -> (F, w_phi) of the DiT with `params`."""
    model = nnx.merge(graphdef, params)

    def apply(x_in, t, labels=None, guidance=None, dropout_key=None):
        return model(x_in, t, labels, guidance, dropout_key=dropout_key, attention=attention)
    return apply


def make_objective(config: ConfigDict, graphdef: nnx.GraphDef, teacher_fn: Optional[Callable],
                   critic: Optional[CriticSetup] = None) -> Callable:
    """loss(params, batch, key, step) -> (loss, metrics) for config.objective."""
    num_classes = config.data.num_classes
    if config.objective == "diffusion":
        d = config.diffusion
        opts = DiffusionOptions(P_mean=d.P_mean, P_std=d.P_std, adaptive_weight=d.adaptive_weight,
                                num_classes=num_classes, label_dropout=d.label_dropout if num_classes else 0.0)
        return lambda p, batch, key, step: diffusion_loss(model_apply(graphdef, p), batch, key, step, opts)
    if config.objective in OBJECTIVE_FORMS:
        return cm_objective(config, graphdef, teacher_fn)
    if config.objective in ("pcm", "pscm"):
        return phased_objective(config, graphdef, teacher_fn, critic)
    opts = scm_options(config, distill=config.objective == "scd")

    def loss(p, batch, key, step):
        return scm_loss(model_apply(graphdef, p), minus_apply(config, graphdef, p), batch, key, step, opts,
                        teacher_fn)
    return loss


def minus_apply(config: ConfigDict, graphdef: nnx.GraphDef, params) -> Optional[Callable]:
    """F^- for the sCM tangent pass: None shares the student's pass (scm.tangent_attention="same"), else the
    network at sg(params) with the tangent kernel."""
    if config.scm.tangent_attention == "same" and config.scm.jvp == "exact":
        return None
    attention = None if config.scm.tangent_attention == "same" else config.scm.tangent_attention
    return model_apply(graphdef, jax.lax.stop_gradient(params), attention=attention)


def scm_options(config: ConfigDict, distill: bool) -> SCMOptions:
    """sCT / sCD options from config.scm (also the tangent and conditioning options of phased sCM and PCM)."""
    s, num_classes = config.scm, config.data.num_classes
    return SCMOptions(
        distill=distill, P_mean=config.diffusion.P_mean, P_std=config.diffusion.P_std,
        warmup_steps=s.warmup_steps, tangent_norm=s.tangent_norm, tangent_c=s.tangent_c,
        adaptive_weight=s.adaptive_weight, prior_weight=s.prior_weight, jvp=s.jvp, fd_delta=s.fd_delta,
        num_classes=num_classes, label_dropout=s.label_dropout if num_classes else 0.0,
        guidance=(s.guidance_lo, s.guidance_hi))


def phase_edges(config: ConfigDict) -> Optional[tuple[float, ...]]:
    """The phase edges of a pcm / pscm run (config.pcm.edges, else pcm.phases equal phases); None otherwise."""
    if config.objective not in ("pcm", "pscm"):
        return None
    return pcm.check_edges(config.pcm.edges) if config.pcm.edges else pcm.uniform_edges(config.pcm.phases)


def pcm_options(config: ConfigDict) -> pcm.PCMOptions | pcm.PSCMOptions:
    """Discrete PCM ("pcm") or continuous-time phased sCM ("pscm") options from config.pcm and config.scm."""
    p, base = config.pcm, scm_options(config, distill=config.pcm.distill)
    if config.objective == "pscm":
        return pcm.PSCMOptions(edges=phase_edges(config), scm=base)
    return pcm.PCMOptions(edges=phase_edges(config), substeps=p.substeps, solver=p.solver, huber_c=p.huber_c,
                          adv_weight=p.adv_weight, scm=base)


def phased_objective(config: ConfigDict, graphdef: nnx.GraphDef, teacher_fn: Optional[Callable],
                     critic: Optional[CriticSetup] = None) -> Callable:
    """loss(params, batch, key, step, critic_state=None): PCM or phased sCM, theta^- = sg; `critic_state` holds the
    adversarial critic's state (pcm.adv_weight > 0), fixed here."""
    opts = pcm_options(config)
    if config.objective == "pscm":
        objective = functools.partial(pcm.pscm_loss, opts=opts, teacher_fn=teacher_fn)
    else:
        objective = functools.partial(pcm.pcm_loss, opts=opts, teacher_fn=teacher_fn)

    def loss(params, batch, key, step, critic_state=None):
        if config.objective == "pscm":
            minus = minus_apply(config, graphdef, params)
        else:
            minus = model_apply(graphdef, jax.lax.stop_gradient(params))
        disc = {} if critic_state is None else {
            "disc_fn": critic.disc_fn(jax.lax.stop_gradient(critic_state["params"]))}
        return objective(model_apply(graphdef, params), minus, batch, key, step, **disc)
    return loss


def critic_update(config: ConfigDict, graphdef: nnx.GraphDef, critic: CriticSetup,
                  teacher_fn: Optional[Callable]) -> Callable:
    """update(critic_state, params, batch, key) -> (critic_state, metrics): one hinge step of PCM's critic on the
    pair the student saw for `key` (objectives.pcm.discriminator_step), the student at sg(params)."""
    opts = pcm_options(config)

    def update(critic_state, params, batch, key):
        minus = model_apply(graphdef, jax.lax.stop_gradient(params))
        d_params, d_opt_state, metrics = pcm.discriminator_step(
            critic.disc_fn, critic_state["params"], critic_state["opt_state"], critic.tx, minus, batch, key, opts,
            teacher_fn)
        return {"params": d_params, "opt_state": d_opt_state}, metrics
    return update


def cm_options(config: ConfigDict) -> CMOptions | ECTOptions:
    """The CM baselines' options (spec §5) from config.cm and its block for the objective (cd, ct, ict, ect)."""
    c, o = config.cm, config.cm[config.objective]
    distance = cm.Distance(o.distance, c.huber_c, c.lpips_net)
    precond = OBJECTIVE_FORMS[config.objective]
    if config.objective == "ect":
        return ECTOptions(precond=precond, P_mean=o.P_mean, P_std=o.P_std, q=o.q, k=o.k, b=o.b,
                          stage_steps=o.stage_steps, distance=distance)
    common = dict(precond=precond, sigma_max=c.sigma_max, rho=c.rho, K=config.train.steps, distance=distance)
    if config.objective == "cd":
        return CMOptions(distill=True, discretization="fixed", N=o.N, mu0=o.mu, **common)
    if config.objective == "ct":
        return CMOptions(discretization="cm", s0=o.s0, s1=o.s1, mu0=o.mu0, **common)
    return CMOptions(discretization="ict", s0=o.s0, s1=o.s1, index_sampling="lognormal", P_mean=o.P_mean,
                     P_std=o.P_std, ict_weight=True, **common)


def cm_objective(config: ConfigDict, graphdef: nnx.GraphDef, teacher_fn: Optional[Callable]) -> Callable:
    """loss(params, batch, key, step, target=None): theta^- is the EMA `target` (cd, ct) or sg(params) (ict, ect)."""
    opts = cm_options(config)
    uses_target = config.objective in cm.EMA_TARGET_OBJECTIVES
    if isinstance(opts, ECTOptions):
        objective = functools.partial(ect_loss, opts=opts)
    else:
        objective = functools.partial(cm.cm_loss, opts=opts, teacher_fn=teacher_fn)

    def loss(p, batch, key, step, target=None):
        if uses_target and target is None:
            raise ValueError(f"objective={config.objective!r} needs the train state's EMA target network.")
        minus = model_apply(graphdef, jax.lax.stop_gradient(target if uses_target else p))
        return objective(model_apply(graphdef, p), minus, batch, key, step)
    return loss


def check_grad_accum(batch_size: int, accum_steps: int, mesh: jax.sharding.Mesh) -> int:
    """`accum_steps` if the batch splits into that many microbatches, each divisible by the data-parallel size."""
    dp = math.prod(mesh.shape[a] for a in sharding.BATCH)
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
    """train_step(state, batch) -> (state, metrics); jitted with the setup's shardings and donated state."""
    objective = make_objective(config, setup.graphdef, teacher_fn, setup.critic)
    critic = critic_update(config, setup.graphdef, setup.critic, teacher_fn) if setup.critic else None
    rules = sharding.RULES[config.mesh.rules]
    conditional = config.data.num_classes > 0
    accum = check_grad_accum(config.train.batch_size, config.train.grad_accum_steps, setup.mesh)

    def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
        step = state["step"]
        key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), step)
        inputs = {"x0": batch["image"], "label": batch["label"] if conditional else None}
        extra = {"target": state["target"]} if "target" in state else {}  # CM's EMA theta^- (cd, ct)
        if critic:
            extra["critic_state"] = state["critic"]  # fixed for the student's step
        (loss, metrics), grads = accumulated_value_and_grad(objective, accum, setup.mesh)(
            state["params"], inputs, key, step, **extra)
        updates, opt_state = setup.tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        decays = {name: ema.ema_decay(h, config.train.batch_size, step, config.train.ema_rampup_ratio)
                  for name, h in setup.ema_half_lives.items()}
        new = {"params": params, "opt_state": opt_state, "ema": ema.update_emas(state["ema"], params, decays),
               "step": step + 1, "rng": state["rng"]}
        if "target" in extra:  # theta^- <- sg(mu(k) theta^- + (1 - mu(k)) theta)   (CM Alg. 2, 3)
            metrics["mu"] = cm.ema_rate(step, cm_options(config))
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
