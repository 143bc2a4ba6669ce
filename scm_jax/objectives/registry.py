"""The objectives a run can train, picked by `config.objective`: one frozen spec each, which every other module asks
instead of comparing names.

A spec says what the train step holds and runs: theta^- (`minus`: none, CM's EMA target, sg(theta) or the sCM
tangent pass), the teacher (`teacher`: none, an optional start, a start, or distilled), a critic, phase edges, and
its evaluation's default samplers (samplers.generate.KINDS, in EDM `form` for the CM baselines). `options(config)`
builds its frozen options once, outside jit; `loss(apply_fn, apply_fn_minus, batch, key, step, opts, teacher_fn,
**extra) -> (loss, metrics)` is the pure loss. Adding an objective is one module and one entry in OBJECTIVES, e.g.
objectives/mine.py with a frozen MineOptions and mine_loss(apply_fn, apply_fn_minus, batch, key, step, opts,
teacher_fn=None) -> (loss, metrics), theta^- = sg(theta), then

    "mine": Objective(lambda config: mine.MineOptions(), mine.mine_loss, "sg"),
"""
import dataclasses
from typing import Any, Callable, Optional

from ml_collections import ConfigDict

from scm_jax.formulations.edm import EDMConsistency
from scm_jax.formulations.phases import check_edges, uniform_edges
from scm_jax.objectives import cm, pcm
from scm_jax.objectives.diffusion import DiffusionOptions, diffusion_loss
from scm_jax.objectives.ect import ECTOptions, ect_loss
from scm_jax.objectives.scm import SCMOptions, scm_loss

MINUS = ("none", "target", "sg", "tangent")
TEACHER = ("none", "may_start", "start", "distil", "pcm.distill")
CM_FORM, ECT_FORM = EDMConsistency(), EDMConsistency(eps=0.0)  # ECT: its ECMPrecond in training mode, eps = 0


@dataclasses.dataclass(frozen=True)
class Objective:
    options: Callable[[ConfigDict], Any]  # config -> frozen options, built once outside jit
    loss: Callable[..., tuple]            # loss(apply_fn, apply_fn_minus, batch, key, step, opts, teacher_fn, **extra)
    minus: str = "none"      # theta^-: "target" the train state's EMA (CD, CT), "sg" sg(theta), "tangent" sCM's pass
    teacher: str = "none"    # "may_start" (sCT: from scm.teacher_workdir if set), "start" (ECT), "distil" (sCD, CD),
    #                          "pcm.distill" (phased: distil when config.pcm.distill)
    critic: bool = False     # may train PCM's adversarial critic alongside (pcm.adv_weight > 0)
    phases: bool = False     # trains and samples on phase edges (config.pcm)
    sampler: str = "consistency"          # samplers.generate.KINDS: "ode", "consistency" or "phased"
    form: Optional[EDMConsistency] = None  # the EDM form a CM-baseline run trains and samples in

    def __post_init__(self):
        if self.minus not in MINUS or self.teacher not in TEACHER:
            raise ValueError(f"minus={self.minus!r}, teacher={self.teacher!r}; use one of {MINUS} and {TEACHER}.")

    @property
    def ema_target(self) -> bool:
        return self.minus == "target"

    @property
    def tangent(self) -> bool:
        return self.minus == "tangent"

    def distills(self, config: ConfigDict) -> bool:
        """The loss calls the teacher (and the student starts from it)."""
        return self.teacher == "distil" or (self.teacher == "pcm.distill" and config.pcm.distill)

    def needs_teacher(self, config: ConfigDict) -> bool:
        """The run cannot start without scm.teacher_workdir."""
        return self.teacher == "start" or self.distills(config)

    def loads_teacher(self, config: ConfigDict) -> bool:
        return self.needs_teacher(config) or (self.teacher == "may_start" and bool(config.scm.teacher_workdir)
                                              and config.scm.init_from_teacher)


def spec(config: ConfigDict) -> Objective:
    """The spec of config.objective."""
    if config.objective not in OBJECTIVES:
        raise ValueError(f"config: objective={config.objective!r}; use one of {tuple(OBJECTIVES)}.")
    return OBJECTIVES[config.objective]


def phase_edges(config: ConfigDict) -> Optional[tuple[float, ...]]:
    """The phase edges of a phased run (config.pcm.edges, else pcm.phases equal phases); None otherwise."""
    if not spec(config).phases:
        return None
    return check_edges(config.pcm.edges) if config.pcm.edges else uniform_edges(config.pcm.phases)


def diffusion_options(config: ConfigDict) -> DiffusionOptions:
    d, num_classes = config.diffusion, config.data.num_classes
    return DiffusionOptions(P_mean=d.P_mean, P_std=d.P_std, adaptive_weight=d.adaptive_weight,
                            num_classes=num_classes, label_dropout=d.label_dropout if num_classes else 0.0)


def scm_options(config: ConfigDict, distill: bool) -> SCMOptions:
    """sCT / sCD options from config.scm (also the tangent and conditioning options of phased sCM and PCM)."""
    s, num_classes = config.scm, config.data.num_classes
    return SCMOptions(
        distill=distill, P_mean=config.diffusion.P_mean, P_std=config.diffusion.P_std,
        warmup_steps=s.warmup_steps, tangent_norm=s.tangent_norm, tangent_c=s.tangent_c,
        adaptive_weight=s.adaptive_weight, prior_weight=s.prior_weight, jvp=s.jvp, fd_delta=s.fd_delta,
        num_classes=num_classes, label_dropout=s.label_dropout if num_classes else 0.0,
        guidance=(s.guidance_lo, s.guidance_hi))


def _distance(config: ConfigDict, block: ConfigDict) -> cm.Distance:
    return cm.Distance(block.distance, config.cm.huber_c, config.cm.lpips_net)


def _karras(config: ConfigDict, block: ConfigDict) -> dict:
    """What CD, CT and iCT share (spec §5): the Karras discretisation over the run's steps and the distance."""
    c = config.cm
    return dict(precond=CM_FORM, sigma_max=c.sigma_max, rho=c.rho, K=config.train.steps,
                distance=_distance(config, block))


def cd_options(config: ConfigDict) -> cm.CMOptions:
    o = config.cm.cd
    return cm.CMOptions(distill=True, discretization="fixed", N=o.N, mu0=o.mu, **_karras(config, o))


def ct_options(config: ConfigDict) -> cm.CMOptions:
    o = config.cm.ct
    return cm.CMOptions(discretization="cm", s0=o.s0, s1=o.s1, mu0=o.mu0, **_karras(config, o))


def ict_options(config: ConfigDict) -> cm.CMOptions:
    o = config.cm.ict
    return cm.CMOptions(discretization="ict", s0=o.s0, s1=o.s1, index_sampling="lognormal", P_mean=o.P_mean,
                        P_std=o.P_std, ict_weight=True, **_karras(config, o))


def ect_options(config: ConfigDict) -> ECTOptions:
    o = config.cm.ect
    return ECTOptions(precond=ECT_FORM, P_mean=o.P_mean, P_std=o.P_std, q=o.q, k=o.k, b=o.b,
                      stage_steps=o.stage_steps, distance=_distance(config, o))


def pcm_options(config: ConfigDict) -> pcm.PCMOptions:
    p = config.pcm
    return pcm.PCMOptions(edges=phase_edges(config), substeps=p.substeps, solver=p.solver, huber_c=p.huber_c,
                          adv_weight=p.adv_weight, scm=scm_options(config, distill=p.distill))


def pscm_options(config: ConfigDict) -> pcm.PSCMOptions:
    return pcm.PSCMOptions(edges=phase_edges(config), scm=scm_options(config, distill=config.pcm.distill))


def _diffusion(apply_fn, apply_fn_minus, batch, key, step, opts, teacher_fn=None):
    return diffusion_loss(apply_fn, batch, key, step, opts)


def _ect(apply_fn, apply_fn_minus, batch, key, step, opts, teacher_fn=None):
    return ect_loss(apply_fn, apply_fn_minus, batch, key, step, opts)


DIFFUSION = Objective(diffusion_options, _diffusion, sampler="ode")
OBJECTIVES = {
    "diffusion": DIFFUSION,
    "sct": Objective(lambda c: scm_options(c, distill=False), scm_loss, "tangent", teacher="may_start"),
    "scd": Objective(lambda c: scm_options(c, distill=True), scm_loss, "tangent", teacher="distil"),
    "cd": Objective(cd_options, cm.cm_loss, "target", teacher="distil", form=CM_FORM),
    "ct": Objective(ct_options, cm.cm_loss, "target", form=CM_FORM),
    "ict": Objective(ict_options, cm.cm_loss, "sg", form=CM_FORM),
    "ect": Objective(ect_options, _ect, "sg", teacher="start", form=ECT_FORM),
    "pcm": Objective(pcm_options, pcm.pcm_loss, "sg", teacher="pcm.distill", critic=True, phases=True,
                     sampler="phased"),
    "pscm": Objective(pscm_options, pcm.pscm_loss, "tangent", teacher="pcm.distill", phases=True, sampler="phased"),
}
