"""Optimizer from the config: Adam / RAdam with eps, linear warmup, EDM2's inverse-square-root decay, a linear
cooldown to 0 over the run's last steps, optional gradient clipping."""
from typing import Optional

import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

OPTIMIZERS = ("adam", "radam")


def schedule(config: ConfigDict) -> optax.Schedule:
    """lr(step) = lr * min(1, step / warmup_steps) / sqrt(max(1, step / decay_steps))   (EDM2 Eq. 5 decay)
    * min(1, (train.steps - step) / cooldown_steps)   (a linear cooldown to 0 at the run's end, as WSD schedules);
    a 0 for warmup_steps, decay_steps or cooldown_steps switches that part off. `config` is the run's: the schedule
    reads config.optim and, for the cooldown, the run's length config.train.steps."""
    cfg, total_steps = config.optim, config.train.steps  # read once, outside jit
    lr0, warmup_steps, decay_steps = cfg.lr, cfg.warmup_steps, cfg.decay_steps
    cooldown_steps = cfg.get("cooldown_steps", 0)  # absent from the config.json of runs older than the cooldown

    def lr(step):
        step = jnp.asarray(step, jnp.float32)
        warm = jnp.minimum(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
        decay = jnp.sqrt(1.0 / jnp.maximum(1.0, step / decay_steps)) if decay_steps > 0 else 1.0
        cool = jnp.clip((total_steps - step) / cooldown_steps, 0.0, 1.0) if cooldown_steps > 0 else 1.0
        return lr0 * warm * decay * cool
    return lr


def make_optimizer(config: ConfigDict) -> optax.GradientTransformation:
    """The run config's optimizer: config.optim (name, lr, b1, b2, eps, warmup_steps, decay_steps, cooldown_steps,
    grad_clip <= 0: none) over config.train.steps."""
    cfg = config.optim
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.name!r} is unknown; use one of {OPTIMIZERS}.")
    make = optax.adam if cfg.name == "adam" else optax.radam
    opt = make(schedule(config), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt) if cfg.grad_clip > 0 else opt


def learning_rate(config: ConfigDict, step: int) -> float:
    """The learning rate the run's optimizer applies at `step`, from the schedule itself."""
    return float(schedule(config)(step))


def moved_cooldown(config: ConfigDict, saved: dict, step: int) -> Optional[str]:
    """The warning for a run resumed at `step` to a new length after its lr cooldown had begun (saved: the
    checkpoint's config): the schedule moves with train.steps, so the lr jumps."""
    cooldown, before = config.optim.cooldown_steps, saved.get("train", {}).get("steps", config.train.steps)
    if not cooldown or before == config.train.steps or step <= before - cooldown:
        return None
    was = ConfigDict(config.to_dict())
    was.train.steps = before
    return (f"resumed at step {step}, inside the lr cooldown of this run's earlier length (train.steps={before}, "
            f"optim.cooldown_steps={cooldown}): with train.steps={config.train.steps} the lr jumps from "
            f"{learning_rate(was, step):.3g} to {learning_rate(config, step):.3g}. To train longer, branch a new "
            f"workdir from a checkpoint at or before step {before - cooldown} (docs/runbook.md, lr schedule).")
