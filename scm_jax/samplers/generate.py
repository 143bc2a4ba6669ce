"""Sampling a trained run: a method (consistency steps or teacher ODE) over a parameter-free apply_fn.

Shared by scm-sample and the trainer's periodic grids.
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from scm_jax.formulations.guidance import ApplyFn, guided_F
from scm_jax.samplers import consistency, ode


@dataclasses.dataclass(frozen=True)
class Method:
    """`times` for consistency sampling (1-step: (t_max,), 2-step: (t_max, 1.1), ...), or an ODE solver."""
    times: tuple[float, ...] = consistency.TWO_STEP
    solver: Optional[str] = None      # "euler" | "heun": teacher ODE with N noise levels instead
    N: int = 18

    def __post_init__(self):
        if self.solver is None:
            consistency.check_times(self.times)
        elif self.solver not in ode.SOLVERS:
            raise ValueError(f"solver={self.solver!r} is unknown; use one of {ode.SOLVERS}.")

    @property
    def nfe(self) -> int:
        return len(self.times) if self.solver is None else ode.nfe(self.solver, self.N)

    @property
    def name(self) -> str:
        return f"{self.solver}_nfe{self.nfe}" if self.solver else f"{len(self.times)}step"


def with_cfg(apply_fn: ApplyFn, scale: float, null_label: int) -> ApplyFn:
    """Teacher classifier-free guidance at a fixed scale (students with a guidance input take it directly)."""
    def guided(x_in, t, labels=None, guidance=None, dropout_key=None):
        s = jnp.full(t.shape, scale, jnp.float32)
        return guided_F(apply_fn, x_in, t, labels, s, null_label), None
    return guided


def sampler(apply_fn: ApplyFn, method: Method, shape: tuple[int, ...]) -> Callable:
    """sample(key, labels, guidance) -> x0 in data space ([-1, 1] for pixels)."""
    if method.solver is not None:
        return lambda key, labels, guidance: ode.ode_sample(apply_fn, key, shape, method.N, method.solver, labels)
    return lambda key, labels, guidance: consistency.consistency_sample(apply_fn, key, shape, method.times,
                                                                        labels, guidance)
