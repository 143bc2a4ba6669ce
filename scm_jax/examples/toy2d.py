"""The math trains: a 2-D mixture of Gaussians, a diffusion teacher, then sCT and sCD (distilled from it).

    python -m scm_jax.examples.toy2d [--steps=4000]

Reports the sliced Wasserstein distance (SWD) to held-out data of: the noise, the teacher's Heun ODE, and 1- and
2-step samples of the sCT and sCD students. Minutes on one CPU core; no infrastructure beyond the objectives.
"""
import argparse
import time
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from scm_jax.formulations import trigflow
from scm_jax.models.mlp import MLP
from scm_jax.objectives.diffusion import DiffusionOptions, diffusion_loss
from scm_jax.objectives.scm import SCMOptions, scm_loss
from scm_jax.samplers import consistency, ode


def mixture(key: jax.Array, n: int, modes: int = 8, radius: float = 0.7, std: float = 0.05) -> jax.Array:
    """n points of `modes` Gaussians on a circle; overall std ~ sigma_d per coordinate."""
    k_mode, k_noise = jax.random.split(key)
    angle = 2 * jnp.pi * jax.random.randint(k_mode, (n,), 0, modes) / modes
    centers = radius * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)
    return centers + std * jax.random.normal(k_noise, (n, 2))


def sliced_wasserstein(a: jax.Array, b: jax.Array, key: jax.Array, projections: int = 256) -> float:
    """Mean over random directions of the 1-D W1 distance between equal-size point sets."""
    w = jax.random.normal(key, (a.shape[1], projections))
    w = w / jnp.linalg.norm(w, axis=0)
    return float(jnp.mean(jnp.abs(jnp.sort(a @ w, axis=0) - jnp.sort(b @ w, axis=0))))


def train(loss_fn: Callable, params, steps: int, key: jax.Array, lr: float = 1e-3, batch: int = 1024,
          ema_decay: float = 0.995):
    """Adam on `loss_fn(params, x0, key, step)`; returns the EMA of the parameters."""
    tx = optax.adam(lr)

    @jax.jit
    def step_fn(params, ema, opt_state, key, step):
        k_data, k_loss = jax.random.split(key)
        grads = jax.grad(loss_fn)(params, mixture(k_data, batch), k_loss, step)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
        return params, ema, opt_state

    ema, opt_state = params, tx.init(params)
    for i in range(steps):
        params, ema, opt_state = step_fn(params, ema, opt_state, jax.random.fold_in(key, i), jnp.asarray(i))
    return ema


def run(steps: int = 4000, seed: int = 0) -> dict[str, float]:
    graphdef, init = nnx.split(MLP(2, width=128, depth=3, rngs=nnx.Rngs(seed)))
    apply = lambda p: (lambda *a: nnx.merge(graphdef, p)(*a[:2]))
    key = jax.random.key(seed)
    k_teacher, k_sct, k_scd, k_eval, k_swd = jax.random.split(key, 5)

    dopts = DiffusionOptions()
    teacher = train(lambda p, x0, k, s: diffusion_loss(apply(p), {"x0": x0}, k, s, dopts)[0], init, steps, k_teacher)
    teacher_fn = lambda x, t, labels=None: apply(teacher)(x, t)[0]

    def scm_objective(opts):
        sg = jax.lax.stop_gradient
        return lambda p, x0, k, s: scm_loss(apply(p), apply(sg(p)), {"x0": x0}, k, s, opts, teacher_fn)[0]

    warmup = steps // 4
    sct = train(scm_objective(SCMOptions(warmup_steps=warmup)), init, steps, k_sct, lr=3e-4)
    scd = train(scm_objective(SCMOptions(distill=True, warmup_steps=warmup)), teacher, steps, k_scd, lr=3e-4)

    n = 4096
    held_out = mixture(jax.random.fold_in(k_eval, 1), n)
    swd = lambda x: sliced_wasserstein(x, held_out, k_swd)
    sample = lambda p, times: consistency.consistency_sample(apply(p), k_eval, (n, 2), times)
    return {
        "noise": swd(trigflow.SIGMA_D * jax.random.normal(k_eval, (n, 2))),
        "data (2nd draw)": swd(mixture(jax.random.fold_in(k_eval, 2), n)),
        "teacher heun NFE 35": swd(ode.ode_sample(apply(teacher), k_eval, (n, 2), 18, "heun")),
        "sCT 1-step": swd(sample(sct, consistency.ONE_STEP)),
        "sCT 2-step": swd(sample(sct, consistency.TWO_STEP)),
        "sCD 1-step": swd(sample(scd, consistency.ONE_STEP)),
        "sCD 2-step": swd(sample(scd, consistency.TWO_STEP)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    results = run(args.steps, args.seed)
    print(f"sliced Wasserstein distance to held-out data ({args.steps} steps each, {time.time() - start:.0f} s):")
    for name, value in results.items():
        print(f"  {name:22s} {value:.4f}")


if __name__ == "__main__":
    main()
