"""scm-sample: a trained run -> an ADM-format .npz (arr_0 uint8 NHWC, arr_1 labels) and a PNG grid.

    scm-sample --workdir=runs/sct --steps=2 --num=10000 --out=runs/sct/samples_2step.npz
    scm-sample --workdir=runs/teacher --solver=heun --ode_steps=18 --num=10000     # teacher ODE, NFE 35
    scm-sample --workdir=runs/sct --times=1.56454,1.1,0.6                          # any decreasing times
    scm-sample --workdir=runs/pcm --num=10000             # a pcm / pscm run: edge to edge, NFE = its phases

--checkpoint may name a workdir or one of its step folders (runs/sct/checkpoints/2000). Batches are sharded
over all devices of all processes (each process computes its slice of every batch; the batches are gathered and
process 0 writes the files: the .npz, a PNG grid of the first 64 and a .json record with step, weights, method,
NFE, seed and img/s). Deterministic for a --seed, and the noise (drawn inside the jitted sampler with
partitionable threefry) does not depend on the device count: on CPU, 1 and 8 devices and 2 processes x 4
devices give identical files (tests/cli/test_sample.py); other backends may differ in the last bits of a float,
so rarely in one uint8 level. Bad input exits with code 2 and one `error:` line naming the fix.
"""
import functools
import json
import os
import time

import jax
import numpy as np
from absl import flags, logging

from scm_jax.cli.common import run_app
from scm_jax.models.registry import model_apply
from scm_jax.objectives import registry
from scm_jax.parallel.distributed import initialize
from scm_jax.parallel.mesh import make_mesh
from scm_jax.samplers import consistency, generate
from scm_jax.samplers.images import save_grid
from scm_jax.train import runs

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A scm-train workdir, or its checkpoints/<step> folder.")
_WEIGHTS = flags.DEFINE_string("weights", None, "'params' or an EMA name (e.g. ema_0.5); default: the first EMA.")
_STEPS = flags.DEFINE_integer("steps", 2, "Consistency sampling with 1 or 2 steps (t_mid = 1.1).")
_TIMES = flags.DEFINE_list("times", None, "Explicit decreasing sampling times, overriding --steps.")
_SOLVER = flags.DEFINE_enum("solver", None, ["euler", "heun"], "Teacher ODE solver (diffusion runs).")
_ODE_STEPS = flags.DEFINE_integer("ode_steps", 18, "Noise levels of the ODE solver (Heun NFE = 2N - 1).")
_NUM = flags.DEFINE_integer("num", 64, "Number of samples.")
_BATCH = flags.DEFINE_integer("batch", 256, "Global batch per sampling call.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed; the same seed gives the same samples.")
_CLASS = flags.DEFINE_integer("class_label", -1, "Class of every sample; -1: classes in turn (0, 1, ...).")
_CFG = flags.DEFINE_float("cfg_scale", 1.0, "Guidance scale: student input (guided sCD) or teacher CFG.")
_OUT = flags.DEFINE_string("out", None, "Output .npz (default: <workdir>/samples/<method>_<num>.npz).")
flags.DEFINE_alias("workdir", "checkpoint")


def parse_checkpoint(path: str) -> tuple[str, int | None]:
    """A workdir, or <workdir>/checkpoints/<step> -> (workdir, step or None for the latest)."""
    path = os.path.normpath(path)
    parent, leaf = os.path.split(path)
    if leaf.isdigit() and os.path.basename(parent) == runs.CHECKPOINT_DIR:
        return os.path.dirname(parent), int(leaf)
    return path, None


def method_from_flags(edges: tuple[float, ...] | None = None) -> generate.Method:
    """--solver, --times, else a phased run's edge-to-edge sampler (PCM / phased sCM: `edges`), else --steps."""
    if _SOLVER.value:
        return generate.Method(solver=_SOLVER.value, N=_ODE_STEPS.value)
    if _TIMES.value:
        return generate.Method(times=tuple(float(t) for t in _TIMES.value))
    if edges is not None:
        return generate.Method(edges=edges)
    if _STEPS.value not in (1, 2):
        raise ValueError(f"--steps={_STEPS.value}: use 1 or 2, or --times for more steps.")
    return generate.Method(times=consistency.ONE_STEP if _STEPS.value == 1 else consistency.TWO_STEP)


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; options are --flag=value.")
    if _CHECKPOINT.value is None:
        raise ValueError("--checkpoint (or --workdir) is required: a scm-train workdir.")
    initialize()
    workdir, step = parse_checkpoint(_CHECKPOINT.value)
    if _BATCH.value % jax.device_count():
        raise ValueError(f"--batch={_BATCH.value} must be a multiple of the {jax.device_count()} devices.")
    config = runs.read_config(workdir)
    method = method_from_flags(registry.phase_edges(config))
    weights = _WEIGHTS.value or runs.ema_names(config)[0]
    if _CLASS.value >= max(config.data.num_classes, 1):
        raise ValueError(f"--class_label={_CLASS.value} but the run has {config.data.num_classes} classes; "
                         "use -1 for classes in turn.")
    mesh = make_mesh(-1, 1, 1)
    config, setup, params, step = runs.load_weights(workdir, weights, mesh, step)
    images, labels, seconds = sample_all(config, setup, params, method)
    out = _OUT.value or os.path.join(workdir, "samples", f"{method.name}_{_NUM.value}.npz")
    if jax.process_index() == 0:
        write(out, images, labels, {"workdir": workdir, "step": step, "weights": weights, "method": method.name,
                                    "nfe": method.nfe, "num": len(images), "seconds": seconds,
                                    "img_per_s": len(images) / seconds, "seed": _SEED.value,
                                    "device": f"{jax.devices()[0].platform} x{jax.device_count()}"})
    logging.info("%s step %d (%s), %s NFE %d: %d samples in %.1f s (%.1f img/s) -> %s", workdir, step, weights,
                 method.name, method.nfe, len(images), seconds, len(images) / seconds, out)


def sample_all(config, setup, params, method: generate.Method) -> tuple[np.ndarray, np.ndarray | None, float]:
    """All --num samples in global batches of --batch; returns (uint8 NHWC, int labels or None, seconds)."""
    d = config.data
    make_apply = functools.partial(model_apply, setup.graphdef)
    if _CFG.value != 1.0 and registry.spec(config) is registry.DIFFUSION:
        make_apply = lambda p: generate.with_cfg(model_apply(setup.graphdef, p), _CFG.value, d.num_classes)
    batches = generate.Batches(_BATCH.value, (d.image_size, d.image_size, d.channels), d.num_classes,
                               _CLASS.value, _CFG.value if setup.model_cfg.guidance_embed else None)
    sample = generate.batch_sampler(make_apply, generate.with_form(method, registry.spec(config).form), batches,
                                    setup.mesh)
    sample = sample.lower(params, np.int32(0), np.int32(0)).compile()  # compile before timing
    start = time.time()
    images, labels = generate.sample_many(sample, params, _NUM.value, _BATCH.value, _SEED.value)
    return images, labels, time.time() - start


def write(out: str, images: np.ndarray, labels: np.ndarray | None, record: dict) -> None:
    """The ADM .npz (arr_1 only for a conditional run), a PNG grid of the first 64 and the .json record."""
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez(out, arr_0=images, **({} if labels is None else {"arr_1": labels}))
    save_grid(os.path.splitext(out)[0] + ".png", images[:64])
    with open(os.path.splitext(out)[0] + ".json", "w") as fh:
        json.dump(record, fh, indent=2)


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
