"""Optimizer from the config: Adam / RAdam with eps, linear warmup, optional gradient clipping."""
import optax
from ml_collections import ConfigDict

OPTIMIZERS = ("adam", "radam")


def make_optimizer(cfg: ConfigDict) -> optax.GradientTransformation:
    """cfg: name, lr, b1, b2, eps, warmup_steps, grad_clip (<= 0: none)."""
    if cfg.name not in OPTIMIZERS:
        raise ValueError(f"optim.name={cfg.name!r} is unknown; use one of {OPTIMIZERS}.")
    schedule = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
    make = optax.adam if cfg.name == "adam" else optax.radam
    opt = make(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps)
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt) if cfg.grad_clip > 0 else opt


def learning_rate(cfg: ConfigDict, step: int) -> float:
    return cfg.lr * min(1.0, step / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
