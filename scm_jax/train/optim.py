"""Optimizer from the config: Adam / RAdam with eps, linear warmup, EDM2's inverse-square-root decay, a linear
cooldown to 0 over the run's last steps, optional gradient clipping."""
import jax.numpy as jnp
import optax
from ml_collections import ConfigDict

OPTIMIZERS = ("adam", "radam")


def schedule(cfg: ConfigDict, total_steps: int = 0) -> optax.Schedule:
    """lr(step) = lr * min(1, step / warmup_steps) / sqrt(max(1, step / decay_steps))   (EDM2 Eq. 5 decay)
    * min(1, (total_steps - step) / cooldown_steps)   (a linear cooldown to 0 at the run's end, as WSD schedules);
    a 0 for warmup_steps, decay_steps or cooldown_steps switches that part off."""
    lr0, warmup_steps, decay_steps = cfg.lr, cfg.warmup_steps, cfg.decay_steps  # read once, outside jit
    cooldown_steps = cfg.get("cooldown_steps", 0)
    if cooldown_steps and not 0 < cooldown_steps <= total_steps:
        raise ValueError(f"optim.cooldown_steps={cooldown_steps} needs 0 < cooldown_steps <= train.steps "
                         f"({total_steps}).")

    def lr(step):
        step = jnp.asarray(step, jnp.float32)
        warm = jnp.minimum(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0
        decay = jnp.sqrt(1.0 / jnp.maximum(1.0, step / decay_steps)) if decay_steps > 0 else 1.0
        cool = jnp.clip((total_steps - step) / cooldown_steps, 0.0, 1.0) if cooldown_steps > 0 else 1.0
        return lr0 * warm * decay * cool
    return lr


def make_optimizer(cfg: ConfigDict, total_steps: int = 0) -> optax.GradientTransformation:
    """cfg: name, lr, b1, b2, eps, warmup_steps, decay_steps, cooldown_steps, grad_clip (<= 0: none); total_steps:
    the run's train.steps (needed by a cooldown)."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.name!r} is unknown; use one of {OPTIMIZERS}.")
    make = optax.adam if cfg.name == "adam" else optax.radam
    opt = make(schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt) if cfg.grad_clip > 0 else opt


def learning_rate(cfg: ConfigDict, step: int, total_steps: int = 0) -> float:
    """The learning rate the optimizer applies at `step`, from the schedule itself."""
    return float(schedule(cfg, total_steps)(step))
