"""Phased consistency models in TrigFlow (Wang et al. 2024, "PCM"; spec §5): discrete PCM and phased sCM.

Phases (formulations.phases): edges 0 = s_0 < s_1 < ... < s_M <= pi/2 split TrigFlow time. Inside phase m the
consistency target is the lower edge s_m:
    f_m(x_t, t) = cos(t - s_m) x_t - sin(t - s_m) sigma_d F(x_t / sigma_d, t)                        (spec §5)
the DDIM rotation from t to s_m with the network's velocity: f_m(x, s_m) = x for any F, and M = 1 is sCM's f.

Discrete PCM (`pcm_loss`, PCM Alg. 1 in TrigFlow). K teacher steps per phase on t_{m,k} = s_m + k/K (s_{m+1} - s_m):
    L = d(f_m(x_t, t; theta), sg f_m(x^_{t'}, t'; theta^-)),   t = t_{m,k}, t' = t_{m,k-1}, m ~ U{0..M-1}, k ~ U{1..K}
with x^_{t'} one teacher ODE step (DDIM rotation or Heun, classifier-free guided) or, without a teacher, the exact
x_{t'} of the same noise (consistency training); d is the squared L2 or PCM's pseudo-Huber distance. Optional
adversarial hinge loss (PCM §3.4, its public code): a critic sees the student's f_m ("fake") and the target
("real"), both re-noised from s_m to tau ~ U[s_m, s_{m+1}]; the critic has its own parameters and optimizer
state (`discriminator_step`).

Continuous-time phased sCM (`pscm_loss`): sCM's tangent objective inside each phase, boundary s = s_m. With
u = t - s (s fixed inside the phase) and f = cos(u) x_t - sin(u) sigma_d F(x_t / sigma_d, t):
    df/dt   = -sin(u) x_t + cos(u) dxt_dt - cos(u) sigma_d F - sin(u) sigma_d dF/dt,
              dF/dt = grad_x F . dxt_dt / sigma_d + d_t F   (total derivative along the PF-ODE)
    df/dth  = -sin(u) sigma_d dF/dth.
The discrete phased loss ||f_th(x_t, t) - f_th-(x_t - dt dxt_dt, t - dt)||^2 (both points in phase m) has, at
th- = th and dt -> 0,
    grad / dt = 2 (df/dth)^T df-/dt = -2 sigma_d sin(u) (dF/dth)^T df-/dt
              = sigma_d tan(u) grad ||F_th - sg(F_th) - g||^2,
    g = cos(u) df-/dt = -cos^2(u) (sigma_d F- - dxt_dt) - cos(u) sin(u) (x_t + sigma_d dF-/dt),
i.e. sCM's g with (cos t, sin t) -> (cos u, sin u) while the network still sees t; one JVP with tangents
(cos u sin u dxt_dt, cos u sin u sigma_d) gives jvp_out = cos u sin u sigma_d dF-/dt (the same rearrangement).
The prior weight becomes 1 / (sigma_d tan u). g = 0 exactly when f_m is constant along the teacher's ODE inside
the phase, i.e. for the exact phased consistency function (the Gaussian oracle in the tests). scm.scm_loss runs
it with `boundary` = the phase's lower edge; tangent warmup, normalisation and adaptive weighting carry over.
"""
import dataclasses
import functools
from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import optax

from scm_jax.formulations import edm, trigflow
from scm_jax.formulations.guidance import ApplyFn, drop_labels
from scm_jax.formulations.phases import check_edges, lower_edge, uniform_edges
from scm_jax.objectives.diffusion import per_sample_mse
from scm_jax.objectives.scm import SCMOptions, TeacherFn, guided_teacher, scm_loss

SOLVERS = ("ddim", "heun")
# disc_fn(x_in = x_tau / sigma_d, tau, labels) -> logits [B]
DiscFn = Callable[..., jax.Array]


def phased_f(x: jax.Array, t: jax.Array, F: jax.Array, edges: Sequence[float],
             sigma_d: float = trigflow.SIGMA_D) -> jax.Array:
    """f_m(x_t, t) = cos(t - s_m) x_t - sin(t - s_m) sigma_d F   (spec §5), s_m = lower_edge(t)."""
    return trigflow.ddim_step(x, t, lower_edge(t, edges), F, sigma_d)


@dataclasses.dataclass(frozen=True)
class PCMOptions:
    """Discrete PCM. `scm` carries what it shares with sCM: sigma_d, distill (teacher ODE step; False: consistency
    training), num_classes, label_dropout and the CFG range; its tangent fields are unused here."""
    edges: tuple[float, ...] = uniform_edges(4)
    substeps: int = 8               # K teacher steps per phase
    solver: str = "ddim"            # teacher step: "ddim" (exact rotation) | "heun" (2nd order, 2 teacher calls)
    huber_c: float = 0.0            # 0: squared L2; > 0: PCM's pseudo-Huber mean(sqrt(d^2 + c^2) - c)
    adv_weight: float = 0.0         # > 0: adversarial hinge loss (PCM uses ~0.1), needs a critic
    scm: SCMOptions = SCMOptions(distill=True)

    def __post_init__(self):
        check_edges(self.edges)
        if self.substeps < 1:
            raise ValueError(f"substeps (K teacher steps per phase) must be >= 1, got {self.substeps}.")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r} is unknown; use one of {SOLVERS}.")
        if self.huber_c < 0 or self.adv_weight < 0:
            raise ValueError(f"huber_c and adv_weight must be >= 0, got {self.huber_c}, {self.adv_weight}.")


@dataclasses.dataclass(frozen=True)
class PSCMOptions:
    """Continuous-time phased sCM: sCM's options (sCT or sCD) with phase edges as consistency boundaries."""
    edges: tuple[float, ...] = uniform_edges(4)
    scm: SCMOptions = SCMOptions()

    def __post_init__(self):
        check_edges(self.edges)


def pscm_loss(apply_fn: ApplyFn, apply_fn_minus: ApplyFn, batch: dict, key: jax.Array, step: jax.Array,
              opts: PSCMOptions, teacher_fn: Optional[TeacherFn] = None) -> tuple[jax.Array, dict]:
    """Phased sCM: sCM's tangent loss with g = cos(u) df_m^-/dt, u = t - s_m (derivation in the module docstring)."""
    return scm_loss(apply_fn, apply_fn_minus, batch, key, step, opts.scm, teacher_fn,
                    boundary=functools.partial(lower_edge, edges=opts.edges))


def teacher_step(F_teacher: Callable, x: jax.Array, t: jax.Array, t_next: jax.Array, solver: str,
                 sigma_d: float) -> jax.Array:
    """One PF-ODE step t -> t' of dx_t/dt = sigma_d F_teacher (spec §1, §3).

    "ddim": the exact rotation x_t' = cos(t - t') x_t - sin(t - t') sigma_d F. "heun": EDM's 2nd-order step
    (edm.heun_step) in sigma-space x_sigma = x_t / cos t, sigma = sigma_d tan t (its Euler step is the rotation), with
    dx_sigma/dsigma = eps(x_t, t) = sin(t) x_t / sigma_d + cos(t) F (= (x_sigma - D) / sigma, finite at t = 0).
    """
    b = lambda a: trigflow.bcast(a, x)
    if solver == "ddim":
        return trigflow.ddim_step(x, t, t_next, F_teacher(x / sigma_d, t).astype(jnp.float32), sigma_d)

    def eps(x_sigma, tt):
        x_t = b(jnp.cos(tt)) * x_sigma
        return b(jnp.sin(tt)) * x_t / sigma_d + b(jnp.cos(tt)) * F_teacher(x_t / sigma_d, tt).astype(jnp.float32)
    h = sigma_d * b(jnp.tan(t_next) - jnp.tan(t))
    return b(jnp.cos(t_next)) * edm.heun_step(eps, x / b(jnp.cos(t)), t, t_next, h)


class PhasePair(NamedTuple):
    """The discrete PCM pair: student f_m(x_t, t), target sg f_m(x^_t', t'), the phase [s, s_next] and conditioning."""
    pred: jax.Array
    target: jax.Array
    s: jax.Array
    s_next: jax.Array
    labels: Optional[jax.Array]
    guidance: Optional[jax.Array]
    key_adv: jax.Array


def grid_times(key: jax.Array, B: int, opts: PCMOptions) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(t, t', s_m, s_{m+1}) with m ~ U{0..M-1}, k ~ U{1..K}, t = t_{m,k}, t' = t_{m,k-1}."""
    k_m, k_k = jax.random.split(key)
    e, K = jnp.asarray(opts.edges, jnp.float32), opts.substeps
    m = jax.random.randint(k_m, (B,), 0, len(opts.edges) - 1)
    k = jax.random.randint(k_k, (B,), 1, K + 1).astype(jnp.float32)
    s, s_next = e[m], e[m + 1]
    at = lambda k: (1 - k / K) * s + k / K * s_next  # exact edges at k = 0, K
    return at(k), at(k - 1), s, s_next


def phase_pair(apply_fn: ApplyFn, apply_fn_minus: ApplyFn, batch: dict, key: jax.Array, opts: PCMOptions,
               teacher_fn: Optional[TeacherFn]) -> PhasePair:
    """Student and target of PCM Alg. 1 in TrigFlow; the same `key` gives the same times, noise and teacher step."""
    o, sd = opts.scm, opts.scm.sigma_d
    if o.distill and teacher_fn is None:
        raise ValueError("PCM with distill=True needs teacher_fn: load the diffusion teacher's checkpoint.")
    if o.guided and batch.get("label") is None:
        raise ValueError("PCM with classifier-free guidance needs class labels in the batch.")
    x0 = batch["x0"].astype(jnp.float32)
    k_z, k_t, k_lbl, k_drop, k_s, k_adv = jax.random.split(key, 6)
    z = sd * jax.random.normal(k_z, x0.shape, jnp.float32)
    t, t_prev, s, s_next = grid_times(k_t, x0.shape[0], opts)
    xt = trigflow.x_t(x0, z, t)
    labels, guidance = batch.get("label"), None
    if o.distill:
        F_teacher, guidance = guided_teacher(teacher_fn, labels, k_s, o)
        x_prev = jax.lax.stop_gradient(teacher_step(F_teacher, xt, t, t_prev, opts.solver, sd))
    else:
        labels = drop_labels(k_lbl, labels, o.label_dropout, o.num_classes)
        x_prev = trigflow.x_t(x0, z, t_prev)
    F = apply_fn(xt / sd, t, labels, guidance, k_drop)[0].astype(jnp.float32)
    F_minus = apply_fn_minus(x_prev / sd, t_prev, labels, guidance, k_drop)[0].astype(jnp.float32)
    pred = trigflow.ddim_step(xt, t, s, F, sd)  # f_m(x_t, t)   (spec §5)
    target = jax.lax.stop_gradient(trigflow.ddim_step(x_prev, t_prev, s, F_minus, sd))
    return PhasePair(pred, target, s, s_next, labels, guidance, k_adv)


def pcm_distance(pred: jax.Array, target: jax.Array, huber_c: float) -> jax.Array:
    """Per-sample d: ||pred - target||^2 / D, or PCM's elementwise pseudo-Huber mean(sqrt((pred - target)^2 + c^2) - c)
    (iCT's cm.cm_distance takes it over the whole sample instead)."""
    if huber_c == 0.0:
        return per_sample_mse(pred - target)
    h = jnp.sqrt(jnp.square(pred - target) + huber_c**2) - huber_c
    return jnp.mean(h, axis=tuple(range(1, h.ndim)))


def pcm_loss(apply_fn: ApplyFn, apply_fn_minus: ApplyFn, batch: dict, key: jax.Array, step: jax.Array,
             opts: PCMOptions, teacher_fn: Optional[TeacherFn] = None,
             disc_fn: Optional[DiscFn] = None) -> tuple[jax.Array, dict]:
    """Discrete PCM loss (+ adv_weight * the hinge generator loss -D(fake)); batch = {"x0", "label"?}."""
    del step
    if opts.adv_weight > 0 and disc_fn is None:
        raise ValueError("PCM with adv_weight > 0 needs disc_fn, the critic (see discriminator_step).")
    pair = phase_pair(apply_fn, apply_fn_minus, batch, key, opts, teacher_fn)
    d = jnp.mean(pcm_distance(pair.pred, pair.target, opts.huber_c))
    metrics = {"distance": d, "mse": jnp.mean(per_sample_mse(pair.pred - pair.target))}
    loss = d
    if opts.adv_weight > 0:
        fake, _, tau = adversarial_inputs(pair, opts.scm.sigma_d)
        g_adv = -jnp.mean(disc_fn(fake, tau, pair.labels))  # hinge generator loss
        loss, metrics = loss + opts.adv_weight * g_adv, {**metrics, "g_adv": g_adv}
    return loss, {**metrics, "loss": loss}


def renoise(x_s: jax.Array, s: jax.Array, tau: jax.Array, eps: jax.Array, sigma_d: float) -> jax.Array:
    """Forward process s -> tau >= s: x_tau = cos(tau)/cos(s) x_s + sigma_d sqrt(sin^2 tau - cos^2 tau tan^2 s) eps."""
    b = lambda a: trigflow.bcast(a, x_s)
    var = jnp.maximum(jnp.sin(tau) ** 2 - (jnp.cos(tau) * jnp.tan(s)) ** 2, 0.0)
    return b(jnp.cos(tau) / jnp.cos(s)) * x_s + sigma_d * b(jnp.sqrt(var)) * eps


def adversarial_inputs(pair: PhasePair, sigma_d: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(fake, real, tau): f_m and its target re-noised to tau ~ U[s_m, s_{m+1}], as critic inputs x_tau / sigma_d."""
    k_tau, k_fake, k_real = jax.random.split(pair.key_adv, 3)
    tau = jax.random.uniform(k_tau, pair.s.shape, jnp.float32, pair.s, pair.s_next)
    noised = lambda x, k: renoise(x, pair.s, tau, jax.random.normal(k, x.shape, jnp.float32), sigma_d) / sigma_d
    return noised(pair.pred, k_fake), noised(pair.target, k_real), tau


def discriminator_loss(disc_fn: DiscFn, apply_fn_minus: ApplyFn, batch: dict, key: jax.Array, opts: PCMOptions,
                       teacher_fn: Optional[TeacherFn] = None) -> tuple[jax.Array, dict]:
    """Hinge critic loss E[relu(1 - D(real))] + E[relu(1 + D(fake))] on the pair `pcm_loss` sees for `key`."""
    pair = jax.lax.stop_gradient(phase_pair(apply_fn_minus, apply_fn_minus, batch, key, opts, teacher_fn))
    fake, real, tau = adversarial_inputs(pair, opts.scm.sigma_d)
    D_real, D_fake = disc_fn(real, tau, pair.labels), disc_fn(fake, tau, pair.labels)
    loss = jnp.mean(jax.nn.relu(1 - D_real)) + jnp.mean(jax.nn.relu(1 + D_fake))
    return loss, {"d_loss": loss, "D_real": jnp.mean(D_real), "D_fake": jnp.mean(D_fake)}


def discriminator_step(make_disc: Callable[..., DiscFn], d_params, d_opt_state, tx: optax.GradientTransformation,
                       apply_fn_minus: ApplyFn, batch: dict, key: jax.Array, opts: PCMOptions,
                       teacher_fn: Optional[TeacherFn] = None) -> tuple[object, object, dict]:
    """One optax update of the critic with its own optimizer state: (d_params, d_opt_state, metrics).

    make_disc(d_params) -> disc_fn; pass the `key` of the generator's `pcm_loss` so both see the same pair.
    """
    loss_fn = lambda p: discriminator_loss(make_disc(p), apply_fn_minus, batch, key, opts, teacher_fn)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(d_params)
    updates, d_opt_state = tx.update(grads, d_opt_state, d_params)
    return optax.apply_updates(d_params, updates), d_opt_state, metrics
