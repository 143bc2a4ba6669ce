"""scm-sample: a trained run -> an ADM-format .npz (arr_0 uint8 NHWC, arr_1 labels) and a PNG grid.

    scm-sample --workdir=runs/sct --steps=2 --num=10000 --out=runs/sct/samples_2step.npz
    scm-sample --workdir=runs/teacher --solver=heun --ode_steps=18 --num=10000     # teacher ODE, NFE 35
    scm-sample --workdir=runs/sct --times=1.56454,1.1,0.6                          # any decreasing times

--checkpoint may name a workdir or one of its step folders (runs/sct/checkpoints/2000). Deterministic for a
--seed; batches are sharded over all devices of all processes, process 0 writes the files: the .npz, a PNG
grid of the first 64 and a .json record (step, weights, method, NFE, img/s).
"""
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from jax.experimental import multihost_utils

from scm_jax.cli.common import run_app
from scm_jax.parallel.distributed import initialize
from scm_jax.parallel.mesh import make_mesh
from scm_jax.parallel.sharding import BATCH
from scm_jax.samplers import consistency, generate
from scm_jax.samplers.images import save_grid, to_uint8
from scm_jax.train import runs
from scm_jax.train.step import model_apply

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


def method_from_flags() -> generate.Method:
    if _SOLVER.value:
        return generate.Method(solver=_SOLVER.value, N=_ODE_STEPS.value)
    if _TIMES.value:
        return generate.Method(times=tuple(float(t) for t in _TIMES.value))
    if _STEPS.value not in (1, 2):
        raise app.UsageError(f"--steps={_STEPS.value}: use 1 or 2, or --times for more steps.")
    return generate.Method(times=consistency.ONE_STEP if _STEPS.value == 1 else consistency.TWO_STEP)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; options are --flag=value.")
    if _CHECKPOINT.value is None:
        raise app.UsageError("--checkpoint (or --workdir) is required.")
    initialize()
    workdir, step = parse_checkpoint(_CHECKPOINT.value)
    method = method_from_flags()
    mesh = make_mesh(-1, 1, 1)
    config = runs.read_config(workdir)
    weights = _WEIGHTS.value or runs.ema_names(config)[0]
    if _CLASS.value >= max(config.data.num_classes, 1):
        raise app.UsageError(f"--class_label={_CLASS.value} but the run has {config.data.num_classes} classes.")
    config, setup, params, step = runs.load_weights(workdir, weights, mesh, step)
    if _BATCH.value % jax.device_count():
        raise app.UsageError(f"--batch={_BATCH.value} must be a multiple of the {jax.device_count()} devices.")
    images, labels, seconds = sample_all(config, setup, params, method)
    out = _OUT.value or os.path.join(workdir, "samples", f"{method.name}_{_NUM.value}.npz")
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        np.savez(out, arr_0=images, arr_1=labels)
        save_grid(os.path.splitext(out)[0] + ".png", images[:64])
        record = {"workdir": workdir, "step": step, "weights": weights, "method": method.name, "nfe": method.nfe,
                  "num": len(images), "seconds": seconds, "img_per_s": len(images) / seconds,
                  "device": f"{jax.devices()[0].platform} x{jax.device_count()}"}
        with open(os.path.splitext(out)[0] + ".json", "w") as fh:
            json.dump(record, fh, indent=2)
    logging.info("%s step %d (%s), %s NFE %d: %d samples in %.1f s (%.1f img/s) -> %s", workdir, step, weights,
                 method.name, method.nfe, len(images), seconds, len(images) / seconds, out)


def sample_all(config, setup, params, method: generate.Method) -> tuple[np.ndarray, np.ndarray, float]:
    """All --num samples in global batches of --batch; returns (uint8 NHWC, int labels, seconds)."""
    d, B = config.data, _BATCH.value
    shape = (B, d.image_size, d.image_size, d.channels)
    apply = model_apply(setup.graphdef, params)
    if _CFG.value != 1.0 and config.objective == "diffusion":
        apply = generate.with_cfg(apply, _CFG.value, d.num_classes)
    batch_sharding = jax.sharding.NamedSharding(setup.mesh, jax.sharding.PartitionSpec(BATCH))
    guidance = jnp.full((B,), _CFG.value) if setup.model_cfg.guidance_embed else None
    labels_of = lambda i: np.arange(i * B, (i + 1) * B) % max(d.num_classes, 1) if _CLASS.value < 0 else \
        np.full(B, _CLASS.value)
    conditioning = lambda i: jnp.asarray(labels_of(i), jnp.int32) if d.num_classes else None
    sample = jax.jit(generate.sampler(apply, method, shape), out_shardings=batch_sharding).lower(
        jax.random.key(0), conditioning(0), guidance).compile()  # compile before timing
    images, start = [], time.time()
    for i in range(-(-_NUM.value // B)):
        x = sample(jax.random.fold_in(jax.random.key(_SEED.value), i), conditioning(i), guidance)
        images.append(to_uint8(multihost_utils.process_allgather(x, tiled=True)))
    seconds = time.time() - start
    labels = np.concatenate([labels_of(i) for i in range(len(images))])
    return np.concatenate(images)[:_NUM.value], labels[:_NUM.value].astype(np.int32), seconds


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
