"""The trainer's periodic evaluation (`config.eval`): samples of the first EMA -> metrics, built once at start-up.

Consistency runs are scored at 1 and 2 steps, diffusion runs with Heun at `eval.ode_steps` noise levels (NFE
2N - 1). `eval.metric` is "mnist" (the offline classifier's FD / accuracy on the embedded digits) or "inception"
(FID against `eval.ref`, weights from `eval.inception_weights`) of the decoded images (`eval.decoding`: latent runs
through the SD-VAE). Every file is checked when the evaluator is made, before training; the samplers take the
weights as an argument, so each compiles once for the whole run.
"""
import dataclasses
from collections.abc import Callable
from typing import Any

from ml_collections import ConfigDict

from scm_jax.eval import scores
from scm_jax.eval.decoding import Decoder
from scm_jax.formulations.guidance import ApplyFn
from scm_jax.objectives import registry
from scm_jax.parallel.batch import batch_devices
from scm_jax.samplers import consistency, generate

PREFIX = "eval"


@dataclasses.dataclass(frozen=True)
class SampleEval:
    """evaluate(params) -> {"eval/<method>/<metric>": value} for `num` samples of every method."""
    samplers: dict[str, Callable]  # method name -> jitted sample(params, seed, i) (generate.batch_sampler)
    score: scores.Scorer
    decode: Decoder
    num: int
    batch_size: int
    seed: int

    def __call__(self, params: Any) -> dict[str, float]:
        out = {}
        for name, sample in self.samplers.items():
            images, labels = generate.sample_many(sample, params, self.num, self.batch_size, self.seed,
                                                  decode=self.decode)
            out.update({f"{PREFIX}/{name}/{k}": float(v) for k, v in self.score(images, labels).items()})
        return out


def make_sample_eval(config: ConfigDict, make_apply: Callable[[Any], ApplyFn], mesh, guidance_embed: bool,
                     decode: Decoder) -> SampleEval | None:
    """The evaluator of `config.eval` scoring `decode`d samples (None when eval.every_steps is 0); raises at once on
    a bad setting."""
    e, d = config.eval, config.data
    if e.every_steps <= 0:
        return None
    devices = batch_devices(mesh)
    least = 10 if e.metric in ("inception", "all") else 2  # the Inception Score's 10 splits; a covariance
    if e.num_samples < least or e.batch_size % devices:
        raise ValueError(f"config: eval.every_steps={e.every_steps} with eval.metric={e.metric!r} needs "
                         f"eval.num_samples >= {least} (got {e.num_samples}) and eval.batch_size a multiple of the "
                         f"{devices} data-parallel devices (got {e.batch_size}); or set eval.every_steps=0.")
    score = scores.make_scorer(e.metric, e.inception_weights, e.ref, decode.image_shape)
    batches = generate.Batches(e.batch_size, (d.image_size, d.image_size, d.channels), d.num_classes,
                               guidance=config.scm.guidance_hi if guidance_embed else None)
    samplers = {m.name: generate.batch_sampler(make_apply, m, batches, mesh)
                for m in default_methods(config, e.ode_steps)}
    return SampleEval(samplers, score, decode, e.num_samples, e.batch_size, config.seed)


def default_methods(config: ConfigDict, N: int = 18) -> list[generate.Method]:
    """The samplers a run is judged by, as its objective's spec names them (Heun with N noise levels: diffusion)."""
    spec = registry.spec(config)
    return generate.methods_for(spec.sampler, N, registry.phase_edges(config), spec.form, t_mid(config))


def t_mid(config: ConfigDict) -> float:
    """The 2-step sampler's middle time, config.sample.t_mid (runs saved before the key: sCM's 1.1)."""
    return config.sample.get("t_mid", consistency.T_MID)
