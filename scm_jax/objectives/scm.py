"""sCT and sCD: the continuous-time consistency objective of sCM (Lu & Song 2024, Algorithm 1; spec §2).

One pure loss over two callables of the same network:
  apply_fn        F_theta, differentiated (the student),
  apply_fn_minus  F^- = F_{sg(theta)}: the caller builds it from stop-gradient parameters; it may use another
                  attention kernel or dtype (the tangent pass needs a jvp-able one); None: F^- = sg(F_theta)
                  from one jax.jvp of the student (one forward pass fewer; `student_and_tangent`).
sCD adds `teacher_fn(x_in, t, labels) -> F_pretrain` (TrigFlow parameterisation; see formulations.trigflow for
EDM / VP / flow-matching conversions).
"""
import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from scm_jax.formulations import trigflow
from scm_jax.formulations.guidance import ApplyFn, drop_labels, guided_F
from scm_jax.objectives.diffusion import per_sample_mse, weighted_loss

TANGENT_NORMS = ("l2", "rms", "clip", "none")
JVP_KINDS = ("exact", "finite_difference")
TeacherFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class SCMOptions:
    distill: bool = False           # False: sCT (dxt_dt = v_t); True: sCD (dxt_dt = sigma_d F_pretrain)
    sigma_d: float = trigflow.SIGMA_D
    P_mean: float = -1.0
    P_std: float = 1.4
    warmup_steps: int = 10_000      # H of the tangent warmup r = min(1, step / H)
    tangent_norm: str = "l2"        # g / (||g|| + c) with the per-sample L2 or RMS norm, "clip" to [-c, c], "none"
    tangent_c: float = 0.1
    adaptive_weight: bool = True    # exp(w_phi(t)) / D ||.||^2 - w_phi(t)
    prior_weight: bool = False      # extra 1 / (sigma_d tan t)
    jvp: str = "exact"              # "exact": one jax.jvp; "finite_difference": central difference of F^-
    fd_delta: float = 1e-3          # finite-difference step along the tangent
    num_classes: int = 0            # null class = num_classes
    label_dropout: float = 0.0      # sCT only (sCD students see the teacher's conditioning)
    guidance: tuple[float, float] = (1.0, 1.0)  # sCD: CFG scale s ~ U[lo, hi], fed to the student

    def __post_init__(self):
        if self.tangent_norm not in TANGENT_NORMS:
            raise ValueError(f"tangent_norm={self.tangent_norm!r} is unknown; use one of {TANGENT_NORMS}.")
        if self.jvp not in JVP_KINDS:
            raise ValueError(f"jvp={self.jvp!r} is unknown; use one of {JVP_KINDS}.")
        if self.tangent_c <= 0 and self.tangent_norm != "none":
            raise ValueError(f"tangent_c must be > 0 (sCM uses 0.1), got {self.tangent_c}.")
        if self.warmup_steps < 0 or self.fd_delta <= 0 or self.sigma_d <= 0 or self.P_std <= 0:
            raise ValueError("warmup_steps must be >= 0 and fd_delta, sigma_d, P_std > 0, got "
                             f"{self.warmup_steps}, {self.fd_delta}, {self.sigma_d}, {self.P_std}.")
        lo, hi = self.guidance
        if not 0.0 <= lo <= hi:
            raise ValueError(f"guidance=(lo, hi) needs 0 <= lo <= hi, got {self.guidance}.")
        if not 0.0 <= self.label_dropout < 1.0:
            raise ValueError(f"label_dropout must be in [0, 1), got {self.label_dropout}.")

    @property
    def guided(self) -> bool:
        return self.distill and self.guidance != (1.0, 1.0)


def tangent_warmup(step: jax.Array, H: int) -> jax.Array:
    """r = min(1, step / H), a traced scalar (no retrace as it changes)."""
    if H == 0:
        return jnp.ones((), jnp.float32)
    return jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / H)


def normalize_tangent(g: jax.Array, kind: str, c: float) -> jax.Array:
    """Tangent normalisation g / (||g|| + c) (sCM §4.2) or clipping, per sample."""
    axes = tuple(range(1, g.ndim))
    if kind == "l2":
        return g / (jnp.sqrt(jnp.sum(jnp.square(g), axis=axes, keepdims=True)) + c)
    if kind == "rms":
        return g / (jnp.sqrt(jnp.mean(jnp.square(g), axis=axes, keepdims=True)) + c)
    if kind == "clip":
        return jnp.clip(g, -c, c)
    return g


def tangents(t: jax.Array, dxt_dt: jax.Array, u: jax.Array, sigma_d: float) -> tuple[jax.Array, jax.Array]:
    """The rearranged JVP tangents (cos u sin u dxt_dt, cos u sin u sigma_d) of (x_t / sigma_d, t)   (spec §2).

    The factor is folded in before the JVP so nothing large is multiplied after it; t's tangent stays float32.
    u = t - s is the angle to the consistency boundary s: u = t in sCM, t - s_m for phased sCM (objectives.pcm).
    """
    cs = jnp.cos(u) * jnp.sin(u)
    return trigflow.bcast(cs, dxt_dt) * dxt_dt, cs * sigma_d


def tangent_F(F_minus_fn: Callable, x_in: jax.Array, t: jax.Array, dxt_dt: jax.Array,
              opts: SCMOptions, u: Optional[jax.Array] = None) -> tuple[jax.Array, jax.Array]:
    """(F^-, cos(u) sin(u) sigma_d dF^-/dt) from one JVP at primals (x_t / sigma_d, t) with `tangents`."""
    tx, tt = tangents(t, dxt_dt, t if u is None else u, opts.sigma_d)
    if opts.jvp == "exact":
        F_minus, jvp_out = jax.jvp(F_minus_fn, (x_in, t), (tx.astype(x_in.dtype), tt))
    else:  # central finite difference along the same tangent
        d = opts.fd_delta
        F_minus = F_minus_fn(x_in, t)
        jvp_out = (F_minus_fn(x_in + d * tx, t + d * tt) - F_minus_fn(x_in - d * tx, t - d * tt)) / (2 * d)
    return F_minus.astype(jnp.float32), jvp_out.astype(jnp.float32)


def student_and_tangent(student: Callable, F_minus_fn: Optional[Callable], x_in: jax.Array, t: jax.Array,
                        dxt_dt: jax.Array, u: jax.Array, opts: SCMOptions) -> tuple[jax.Array, ...]:
    """(F_theta, w_phi, sg(F^-), sg(jvp_out)); student(x_in, t) -> (F, w_phi) is the differentiated network.

    F_minus_fn None: F^- = sg(F_theta) and both come from ONE `jax.jvp` of the student, whose primal output
    carries the gradient (the tangent output is stop-gradient, so reverse mode drops its tangent-of-tangent
    work): one forward pass fewer than a separate student call. Otherwise F^- is its own pass (another kernel
    or dtype, or finite differences).
    """
    if F_minus_fn is None:
        if opts.jvp != "exact":
            raise ValueError("the shared student/tangent pass needs jvp='exact'; pass apply_fn_minus for "
                             "finite differences.")
        tx, tt = tangents(t, dxt_dt, u, opts.sigma_d)
        (F, w_phi), (jvp_out, _) = jax.jvp(student, (x_in, t), (tx.astype(x_in.dtype), tt))
        F_minus, jvp_out = F.astype(jnp.float32), jvp_out.astype(jnp.float32)
    else:
        F_minus, jvp_out = tangent_F(F_minus_fn, x_in, t, dxt_dt, opts, u)
        F, w_phi = student(x_in, t)
    F_minus, jvp_out = jax.lax.stop_gradient((F_minus, jvp_out))
    return F, w_phi, F_minus, jvp_out


def scm_g(x_t: jax.Array, u: jax.Array, F_minus: jax.Array, dxt_dt: jax.Array, jvp_out: jax.Array,
          r: jax.Array, sigma_d: float) -> jax.Array:
    """g = -cos^2(u) (sigma_d F^- - dxt_dt) - r (cos u sin u x_t + jvp_out)   (= cos u df^-/dt at r = 1).

    u = t - s, the angle to the boundary s (sCM: s = 0, u = t; phased sCM: the phase's lower edge).
    """
    c, s = trigflow.bcast(jnp.cos(u), x_t), trigflow.bcast(jnp.sin(u), x_t)
    return -c**2 * (sigma_d * F_minus - dxt_dt) - r * (c * s * x_t + jvp_out)


def scm_loss(apply_fn: ApplyFn, apply_fn_minus: Optional[ApplyFn], batch: dict, key: jax.Array, step: jax.Array,
             opts: SCMOptions, teacher_fn: Optional[TeacherFn] = None,
             boundary: Optional[Callable[[jax.Array], jax.Array]] = None) -> tuple[jax.Array, dict]:
    """sCT / sCD loss (sCM Alg. 1); batch = {"x0": [B, ...], "label"?: [B]}. Returns (loss, metrics).

    boundary(t) -> s, where f(x_s, s) = x_s: None is s = 0 (sCM); phased sCM passes the phase's lower edge.
    """
    if opts.distill and teacher_fn is None:
        raise ValueError("sCD (distill=True) needs teacher_fn: load the diffusion teacher's checkpoint.")
    if opts.guided and batch.get("label") is None:
        raise ValueError("sCD with classifier-free guidance needs class labels in the batch.")
    x0 = batch["x0"].astype(jnp.float32)
    k_z, k_t, k_lbl, k_drop, k_s = jax.random.split(key, 5)
    z = opts.sigma_d * jax.random.normal(k_z, x0.shape, jnp.float32)
    t = trigflow.sample_t(k_t, x0.shape[:1], opts.P_mean, opts.P_std, opts.sigma_d)
    u = t if boundary is None else t - boundary(t)  # angle to the boundary
    xt = trigflow.x_t(x0, z, t)
    x_in = xt / opts.sigma_d
    labels, guidance = batch.get("label"), None
    if opts.distill:
        dxt_dt, guidance = teacher_dxt_dt(teacher_fn, x_in, t, labels, k_s, opts)
    else:
        labels = drop_labels(k_lbl, labels, opts.label_dropout, opts.num_classes)
        dxt_dt = trigflow.v_t(x0, z, t)
    r = tangent_warmup(step, opts.warmup_steps)

    def student(x, tt):  # F^- sees the same dropout mask as the student, so F_theta - F^- starts at 0
        return apply_fn(x, tt, labels, guidance, k_drop)

    F_minus_fn = None
    if apply_fn_minus is not None:
        F_minus_fn = lambda x, tt: apply_fn_minus(x, tt, labels, guidance, k_drop)[0]
    F, w_phi, F_minus, jvp_out = student_and_tangent(student, F_minus_fn, x_in, t, dxt_dt, u, opts)
    g = normalize_tangent(scm_g(xt, u, F_minus, dxt_dt, jvp_out, r, opts.sigma_d), opts.tangent_norm,
                          opts.tangent_c)
    err2 = per_sample_mse(F.astype(jnp.float32) - (F_minus + g))
    if opts.prior_weight:
        err2 = err2 / (opts.sigma_d * jnp.tan(u))
    loss = jnp.mean(weighted_loss(err2, w_phi, opts.adaptive_weight))
    rms = lambda a: jnp.sqrt(jnp.mean(jnp.square(a)))
    return loss, {"loss": loss, "mse": jnp.mean(err2), "g_rms": rms(g), "F_rms": rms(F),
                  "jvp_rms": rms(jvp_out), "w_phi": jnp.mean(w_phi), "r": r}


def teacher_dxt_dt(teacher_fn: TeacherFn, x_in: jax.Array, t: jax.Array, labels: Optional[jax.Array],
                   key: jax.Array, opts: SCMOptions) -> tuple[jax.Array, Optional[jax.Array]]:
    """sCD: dxt_dt = sigma_d F_pretrain, with CFG F_u + s (F_c - F_u), s ~ U[lo, hi] also fed to the student."""
    F_teacher, s = guided_teacher(teacher_fn, labels, key, opts)
    return jax.lax.stop_gradient(opts.sigma_d * F_teacher(x_in, t).astype(jnp.float32)), s


def guided_teacher(teacher_fn: TeacherFn, labels: Optional[jax.Array], key: jax.Array,
                   opts: SCMOptions) -> tuple[Callable, Optional[jax.Array]]:
    """(F(x_in, t), s): the teacher with CFG F_u + s (F_c - F_u) at a per-sample s ~ U[lo, hi] (s = None: unguided)."""
    if not opts.guided:
        return (lambda x, t: teacher_fn(x, t, labels)), None
    lo, hi = opts.guidance
    s = jax.random.uniform(key, labels.shape, jnp.float32, lo, hi)
    teacher = lambda x, t, y: (teacher_fn(x, t, y), None)
    return (lambda x, t: guided_F(teacher, x, t, labels, s, opts.num_classes)), s
