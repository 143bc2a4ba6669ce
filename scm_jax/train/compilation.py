"""The persistent compilation cache of a run, its hits, and XLA's FLOPs of the train step.

A restarted (preempted) run loads its compiled step from the cache instead of compiling it again, minutes for
DiT-1.5B. train.compile_cache_dir: "" = JAX's own setting if one is made (JAX_COMPILATION_CACHE_DIR), else
WORKDIR/compile_cache on GPU / TPU and none on CPU (CPU runs are smoke tests and small models compiling in seconds;
an entry per program in every workdir would cost more disk than it saves time); "off" = none; else that path.
"""
from typing import Callable, Optional

import jax
from absl import logging
from etils import epath

CACHE_SUBDIR = "compile_cache"
_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_hits = [0]  # persistent-cache hits of this process, counted by the listener below


def _count_hit(event: str, **kwargs) -> None:
    if event == _HIT_EVENT:
        _hits[0] += 1


jax.monitoring.register_event_listener(_count_hit)


def cache_hits() -> int:
    """Executables this process has loaded from the persistent compilation cache so far."""
    return _hits[0]


def cache_dir(setting: str, workdir: str, platform: str, current: Optional[str]) -> Optional[str]:
    """The cache directory for train.compile_cache_dir = `setting` (see the module doc); `current`: JAX's own."""
    if setting == "off":
        return None
    if setting or current:
        return setting or current
    return None if platform == "cpu" else str(epath.Path(workdir) / CACHE_SUBDIR)


def enable_cache(setting: str, workdir: str) -> Optional[str]:
    """Points JAX's persistent compilation cache at `cache_dir(...)` (or turns it off); returns the directory.

    Call before the run's first compilation: JAX fixes the cache directory when it first uses the cache."""
    directory = cache_dir(setting, workdir, jax.default_backend(), jax.config.jax_compilation_cache_dir)
    if directory is None:
        if setting == "off":
            jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    logging.info("persistent compilation cache: %s", directory)
    return directory


def step_flops(train_step: Callable, state: dict, batch: dict, accum_steps: int) -> Optional[float]:
    """XLA's FLOPs of one train step per device (its cost analysis of the lowered step), or None where the backend
    has none. XLA counts a loop body once: the gradient-accumulation scan's body is counted `accum_steps` times
    here (the optimizer and EMA update outside it are negligible); other loops (blockwise attention) stay a lower
    bound. A step that is not a jitted function (tests wrap it) has no lowering: None."""
    lower = getattr(train_step, "lower", None)
    if lower is None:
        return None
    try:
        flops = (lower(state, batch).cost_analysis() or {}).get("flops")
    except NotImplementedError:  # backends without a cost model
        return None
    return flops * accum_steps if flops and flops > 0 else None
