"""Sampling from Python: load a trained run (or an export) and sample it.

    import scm_jax
    model = scm_jax.load("runs/scd")                      # or an export (scm-export); default: the run's first EMA
    images = model.sample(16, steps=2, labels=7, seed=0)  # uint8 NHWC numpy
    model = scm_jax.load("runs/in512_scd", vae="sd_vae.npz")  # a latent run: decoded to uint8 RGB (N, 512, 512, 3)

`load` reads only the chosen weight set and writes nothing in the source directory (train.runs.load_weights).
`sample` takes `steps` (1 or 2) or `times` for consistency models, `solver` / `nfe` for diffusion runs (default
Heun, NFE 35), `labels` (None: classes in turn; an int: all that class; a sequence: one per sample), `guidance` (a
guided sCD student's input or a diffusion teacher's CFG scale), `seed` and `batch`. The same options give the same
bytes (scm-sample is a CLI over `Model.options` and `Model.run`); the noise depends on the batch size, not on the
device count. Outputs become images in `eval.decoding`: a latent run decodes with the SD-VAE weights `vae` or the
one its config records, and is refused (one ValueError naming --vae) without either.
"""
import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from ml_collections import ConfigDict

from scm_jax.eval import decoding, periodic
from scm_jax.models.registry import model_apply
from scm_jax.objectives import registry
from scm_jax.parallel.batch import batch_devices
from scm_jax.parallel.mesh import make_mesh
from scm_jax.samplers import consistency, generate, ode
from scm_jax.train import runs
from scm_jax.train.state import Setup

MAX_BATCH = 256
ODE_NFE = 35  # Heun with 18 noise levels, EDM's default


def load(path: str, weights: str | float | None = None, *, step: Optional[int] = None,
         mesh: Optional[jax.sharding.Mesh] = None, vae: Optional[str] = None) -> "Model":
    """A trained run's workdir or an export -> Model. `weights`: "params", an EMA name ("ema_0.5") or half-life in
    Mimg, or None / "ema" for the run's first EMA; `step`: a checkpoint step (default: the latest); `mesh`: where the
    weights live, sharded by the run's config.mesh.rules (default: replicated over all devices, batch-parallel);
    `vae`: SD-VAE weights (.npz) decoding a latent run's samples (default: the file its config records)."""
    decode = decoding.decoder(runs.read_config(path), vae)  # a latent run without a VAE fails before any weights
    mesh = make_mesh(-1, 1, 1) if mesh is None else mesh
    config, setup, params, ckpt_step = runs.load_weights(path, weights, mesh, step)
    exported = runs.read_export(path)
    name = exported["weights"] if exported else runs.weights_name(config, weights)
    return Model(config, setup, params, ckpt_step, name, path, decode)


@dataclasses.dataclass(frozen=True)
class Options:
    """Everything that changes the samples (and is recorded next to them)."""
    num: int
    method: generate.Method
    labels: int | tuple[int, ...] | None  # None: classes in turn (or an unconditional run); int: every sample
    guidance: Optional[float]             # the guided student's input or the teacher's CFG scale; None: off
    seed: int
    batch: int

    def record(self) -> dict:
        m = self.method
        if m.edges is not None:
            how = {"edges": list(m.edges)}
        elif m.solver is not None:
            how = {"solver": m.solver, "ode_steps": m.N}
        else:
            how = {"times": list(m.times)}
        return {"method": m.name, "nfe": m.nfe, **how, "num": self.num, "seed": self.seed, "batch": self.batch,
                "labels": "in turn" if self.labels is None else self.labels, "guidance": self.guidance}


@dataclasses.dataclass(frozen=True)
class Samples:
    """What `Model.run` returns: uint8 NHWC images, labels (None: unconditional), seconds spent sampling after
    compilation and, when asked for, the network's float outputs before decoding (a latent run's latents in the
    model's scale: mean 0, std sigma_d per channel)."""
    images: np.ndarray
    labels: Optional[np.ndarray]
    seconds: float
    outputs: Optional[np.ndarray] = None


@dataclasses.dataclass(frozen=True)
class Model:
    """A network's weights with the config it was trained with; `sample` draws images from it."""
    config: ConfigDict
    setup: Setup
    params: Any
    step: int
    weights: str   # the weight set's name in its run ("params", "ema_0.5")
    source: str    # the workdir or export it was loaded from
    decode: decoding.Decoder  # outputs -> uint8 images
    _samplers: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def sample(self, num: int, **options) -> np.ndarray:
        """`num` images, uint8 NHWC; options as `options`."""
        return self.run(self.options(num, **options)).images

    def options(self, num: int, *, steps: Optional[int] = None, times: Optional[Sequence[float]] = None,
                solver: Optional[str] = None, nfe: Optional[int] = None,
                labels: int | Sequence[int] | None = None, guidance: Optional[float] = None, seed: int = 0,
                batch: Optional[int] = None) -> Options:
        """The checked options of a sampling call (each bad one a ValueError naming the fix)."""
        if num <= 0:
            raise ValueError(f"num={num}: ask for at least one sample.")
        devices = batch_devices(self.setup.mesh)
        batch = batch or min(MAX_BATCH, -(-num // devices) * devices)
        if batch % devices:
            raise ValueError(f"batch={batch} must be a multiple of the {devices} devices the batch is split over.")
        return Options(num, self._method(steps, times, solver, nfe), self._labels(num, labels),
                       self._guidance(guidance), seed, batch)

    def run(self, options: Options, outputs: bool = False) -> Samples:
        """The samples of `options`, with the float outputs too when `outputs` (a latent run's latents)."""
        sample = self._sampler(options)
        explicit = None if options.labels is None or isinstance(options.labels, int) else np.array(options.labels)
        start = time.time()
        drawn, labels = generate.sample_many(sample, self.params, options.num, options.batch, options.seed,
                                             explicit, np.asarray if outputs else self.decode)
        images = self.decode(drawn) if outputs else drawn
        return Samples(images, labels, time.time() - start, drawn if outputs else None)

    def _sampler(self, options: Options) -> Callable:
        """The compiled sampler of these options (compiled once per method, batch, labels kind and guidance)."""
        d = self.config.data
        class_label = options.labels if isinstance(options.labels, int) else -1
        explicit = options.labels is not None and class_label < 0
        key = (options.method, options.batch, class_label, explicit, options.guidance)
        if key not in self._samplers:
            guided_input = self.setup.model_cfg.guidance_embed
            make_apply = lambda p: model_apply(self.setup.graphdef, p)
            if options.guidance is not None and not guided_input:
                make_apply = lambda p: generate.with_cfg(model_apply(self.setup.graphdef, p), options.guidance,
                                                         d.num_classes)
            batches = generate.Batches(options.batch, (d.image_size, d.image_size, d.channels), d.num_classes,
                                       class_label, options.guidance if guided_input else None)
            sample = generate.batch_sampler(make_apply, options.method, batches, self.setup.mesh)
            labels = (np.zeros(options.batch, np.int32),) if explicit else ()
            self._samplers[key] = sample.lower(self.params, np.int32(0), np.int32(0), *labels).compile()
        return self._samplers[key]

    def _method(self, steps, times, solver, nfe) -> generate.Method:
        """solver / nfe (diffusion runs), else times, else a phased run's edges, else steps; a diffusion run's
        default is Heun at NFE 35, a consistency model's 2 steps."""
        spec = registry.spec(self.config)
        if spec is registry.DIFFUSION and steps is None and times is None and nfe is None:
            solver = solver or "heun"
        if solver is not None or nfe is not None:
            if spec is not registry.DIFFUSION:
                raise ValueError(f"solver={solver}, nfe={nfe}: this {self.config.objective} run is a consistency "
                                 "model; sample it with steps=1|2 or times=...; ODE solvers are for diffusion runs.")
            if steps is not None or times is not None:
                raise ValueError("give either solver / nfe (ODE) or steps / times (consistency sampling), not both.")
            return generate.Method(solver=solver or "heun", N=ode_steps(solver or "heun", nfe or ODE_NFE))
        if times is not None:
            return generate.with_form(generate.Method(times=tuple(float(t) for t in times)), spec.form)
        edges = registry.phase_edges(self.config)
        if steps is None and edges is not None:
            return generate.Method(edges=edges)
        steps = 2 if steps is None else steps
        if steps not in (1, 2):
            raise ValueError(f"steps={steps}: use 1 or 2, or times=... for more steps.")
        t_mid = periodic.t_mid(self.config)
        method = generate.Method(times=consistency.ONE_STEP if steps == 1 else consistency.two_step(t_mid))
        return generate.with_form(method, spec.form)

    def _labels(self, num: int, labels) -> int | tuple[int, ...] | None:
        classes = self.config.data.num_classes
        if labels is None:
            return None
        if not classes:
            raise ValueError(f"labels={labels!r}: this run is unconditional; drop the labels.")
        given = (labels,) if isinstance(labels, (int, np.integer)) else tuple(int(y) for y in labels)
        if bad := [y for y in given if not 0 <= y < classes]:
            raise ValueError(f"label {bad[0]} but the run has {classes} classes (0..{classes - 1}).")
        if isinstance(labels, (int, np.integer)):
            return int(labels)
        if len(given) != num:
            raise ValueError(f"{len(given)} labels for {num} samples; give one per sample or a single int.")
        return given

    def _guidance(self, guidance: Optional[float]) -> Optional[float]:
        """A guided sCD student always takes a scale (default: the one it was distilled with, when fixed, else 1.0);
        a conditional diffusion run trained with label dropout takes a CFG scale (1.0 = none); others take none."""
        if self.setup.model_cfg.guidance_embed:
            lo, hi = self.config.scm.guidance_lo, self.config.scm.guidance_hi
            return (hi if lo == hi else 1.0) if guidance is None else float(guidance)
        if guidance is None or guidance == 1.0:
            return None
        c = self.config
        if registry.spec(c) is registry.DIFFUSION and c.data.num_classes and c.diffusion.label_dropout > 0:
            return float(guidance)
        raise ValueError(f"guidance={guidance}: this {c.objective} run has no guidance (only guided sCD students "
                         "and conditional diffusion runs trained with label dropout have); drop it.")


def ode_steps(solver: str, nfe: int) -> int:
    """The noise levels N of `solver` at `nfe` network evaluations (Heun: NFE = 2N - 1, Euler: NFE = N)."""
    N = (nfe + 1) // 2 if solver == "heun" else nfe
    if solver not in ode.SOLVERS or N < (2 if solver == "heun" else 1) or ode.nfe(solver, N) != nfe:
        raise ValueError(f"solver={solver!r}, nfe={nfe}: use heun with an odd nfe >= 3 or euler with nfe >= 1.")
    return N

