"""Sampling a trained run: a method (consistency steps or teacher ODE) over a parameter-free apply_fn, and
N samples in sharded global batches.

Shared by scm-sample, the trainer's periodic grids and its periodic evaluation, and bench/sampling.py.
Batches are sharded over every device of every process: each process computes its own slice, then every
process receives the whole batch (`process_allgather`); callers write from process 0. The noise is drawn inside
the jitted function from `fold_in(key(seed), i)` with partitionable threefry, so it does not depend on the
device count.
"""
import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from scm_jax.formulations.edm import EDMConsistency
from scm_jax.formulations.guidance import ApplyFn, guided_F
from scm_jax.parallel.sharding import batch_spec
from scm_jax.samplers import consistency, edm_consistency, ode, phased
from scm_jax.samplers.images import to_uint8

KINDS = ("ode", "consistency", "phased")  # default samplers of an objective (objectives.registry)


@dataclasses.dataclass(frozen=True)
class Method:
    """`times` for consistency sampling (1-step: (t_max,), 2-step: (t_max, 1.1), ...), an ODE solver, or the
    phase `edges` of a PCM / phased-sCM run (deterministic edge-to-edge sampling, NFE M)."""
    times: tuple[float, ...] = consistency.TWO_STEP
    solver: Optional[str] = None      # "euler" | "heun": teacher ODE with N noise levels instead
    N: int = 18
    edm: Optional[EDMConsistency] = None  # CM / iCT / ECT runs: CM Alg. 1 in EDM form at sigma = sigma_d tan(times)
    edges: Optional[tuple[float, ...]] = None  # s_0 = 0 < ... < s_M: samplers.phased instead

    def __post_init__(self):
        if self.edges is not None:
            phased.check_edges(self.edges)
            if self.solver is not None:
                raise ValueError(f"Method: phase edges and solver={self.solver!r} exclude each other; give one.")
        if self.solver is None:
            consistency.check_times(self.times)
        elif self.solver not in ode.SOLVERS:
            raise ValueError(f"solver={self.solver!r} is unknown; use one of {ode.SOLVERS}.")

    @property
    def nfe(self) -> int:
        if self.edges is not None:
            return len(self.edges) - 1
        return len(self.times) if self.solver is None else ode.nfe(self.solver, self.N)

    @property
    def name(self) -> str:
        if self.edges is not None:
            return f"phased{self.nfe}"
        return f"{self.solver}_nfe{self.nfe}" if self.solver else f"{len(self.times)}step"


def with_cfg(apply_fn: ApplyFn, scale: float, null_label: int) -> ApplyFn:
    """Teacher classifier-free guidance at a fixed scale (students with a guidance input take it directly)."""
    def guided(x_in, t, labels=None, guidance=None, dropout_key=None):
        s = jnp.full(t.shape, scale, jnp.float32)
        return guided_F(apply_fn, x_in, t, labels, s, null_label), None
    return guided


def sampler(apply_fn: ApplyFn, method: Method, shape: tuple[int, ...]) -> Callable:
    """sample(key, labels, guidance) -> x0 in data space ([-1, 1] for pixels)."""
    if method.edges is not None:
        return lambda key, labels, guidance: phased.phased_sample(apply_fn, key, shape, method.edges, labels,
                                                                  guidance)
    if method.solver is not None:
        return lambda key, labels, guidance: ode.ode_sample(apply_fn, key, shape, method.N, method.solver, labels)
    if method.edm is not None:
        sigmas = edm_consistency.sigmas_from_times(method.times, method.edm)
        return lambda key, labels, guidance: edm_consistency.cm_sample(apply_fn, key, shape, sigmas, method.edm,
                                                                       labels, guidance)
    return lambda key, labels, guidance: consistency.consistency_sample(apply_fn, key, shape, method.times,
                                                                        labels, guidance)


def methods_for(kind: str, N: int = 18, edges: Optional[tuple[float, ...]] = None,
                form: Optional[EDMConsistency] = None, t_mid: float = consistency.T_MID) -> list[Method]:
    """What a run is judged by (its objective's `sampler` kind, objectives.registry): "ode" Heun with N noise levels
    (diffusion), "consistency" 1- and 2-step at `t_mid` (in EDM `form` for cd/ct/ict/ect), "phased" edge to edge
    over `edges`."""
    if kind not in KINDS:
        raise ValueError(f"sampler kind {kind!r} is unknown; use one of {KINDS}.")
    if kind == "phased":
        return [Method(edges=edges)]
    if kind == "ode":
        return [Method(solver="heun", N=N)]
    return [with_form(Method(times=t), form) for t in (consistency.ONE_STEP, consistency.two_step(t_mid))]


def with_form(method: Method, form: Optional[EDMConsistency]) -> Method:
    """The method as a run trained in EDM `form` needs it: its consistency steps use CM Alg. 1 (None: TrigFlow)."""
    if method.solver is not None or method.edges is not None:
        return method
    return dataclasses.replace(method, edm=form)


@dataclasses.dataclass(frozen=True)
class Batches:
    """Global batches of `size` samples of `image_shape` (HWC); labels are classes in turn (0, 1, ...) or all
    `class_label`; `guidance` is the scale fed to a guided student (None: the network has no guidance input)."""
    size: int
    image_shape: tuple[int, int, int]
    num_classes: int = 0
    class_label: int = -1
    guidance: Optional[float] = None

    def labels(self, i: jax.Array) -> Optional[jax.Array]:
        """Labels of global batch i (None for an unconditional run)."""
        if not self.num_classes:
            return None
        if self.class_label >= 0:
            return jnp.full((self.size,), self.class_label, jnp.int32)
        return ((i * self.size + jnp.arange(self.size)) % self.num_classes).astype(jnp.int32)


def batch_sampler(make_apply: Callable[[Any], ApplyFn], method: Method, batches: Batches,
                  mesh: jax.sharding.Mesh) -> Callable:
    """jitted sample(params, seed, i, labels=None) -> (x0 [B, H, W, C] in [-1, 1], labels [B] or None),
    batch-sharded; `labels` (int [B]) replaces the batches' own labels.

    The weights are an argument (not constants), so one compilation serves every checkpoint and EMA.
    """
    shape = (batches.size, *batches.image_shape)

    def sample(params, seed, i, labels=None):
        labels = batches.labels(i) if labels is None else labels
        guidance = None if batches.guidance is None else jnp.full((batches.size,), batches.guidance, jnp.float32)
        key = jax.random.fold_in(jax.random.key(seed), i)
        return sampler(make_apply(params), method, shape)(key, labels, guidance), labels

    out = jax.sharding.NamedSharding(mesh, batch_spec(len(shape)))
    return jax.jit(sample, out_shardings=(out, jax.sharding.NamedSharding(mesh, batch_spec(1))))


def sample_many(sample: Callable, params: Any, num: int, batch_size: int, seed: int,
                labels: Optional[np.ndarray] = None,
                decode: Callable[[np.ndarray], np.ndarray] = to_uint8) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """`num` samples from `batch_sampler`'s `sample` on every process: (decoded images, by default uint8 NHWC from
    [-1, 1]; int32 labels or None). `labels` (int [num]) replaces the batches' own labels."""
    def batch(i: int):
        if labels is None:
            return sample(params, np.int32(seed), np.int32(i))
        chunk = np.asarray(labels[i * batch_size:(i + 1) * batch_size], np.int32)
        return sample(params, np.int32(seed), np.int32(i), np.pad(chunk, (0, batch_size - len(chunk))))  # cut below

    outputs = [batch(i) for i in range(-(-num // batch_size))]
    gathered = [multihost_utils.process_allgather(out, tiled=True) for out in outputs]
    images = np.concatenate([decode(x) for x, _ in gathered])[:num]
    labels = None if gathered[0][1] is None else np.concatenate([y for _, y in gathered])[:num].astype(np.int32)
    return images, labels
