"""scm-sample: a trained run or an export -> an ADM-format .npz (arr_0 uint8 NHWC, arr_1 labels) and a PNG grid.

    scm-sample --workdir=runs/sct --steps=2 --num=10000 --out=runs/sct/samples_2step.npz
    scm-sample --workdir=runs/teacher --solver=heun --ode_steps=18 --num=10000     # teacher ODE, NFE 35
    scm-sample --workdir=runs/sct --times=1.56454,1.1,0.6                          # any decreasing times
    scm-sample --workdir=runs/pcm --num=10000             # a pcm / pscm run: edge to edge, NFE = its phases
    scm-sample --workdir=exported/                        # an scm-export directory
    scm-sample --workdir=runs/in512_scd --vae=sd_vae.npz --latents   # a latent run: decoded RGB + its latents

A CLI over scm_jax.load(...).sample(...) (scm_jax/inference.py): the same options give the same bytes. --checkpoint
may name a workdir, one of its step folders (runs/sct/checkpoints/2000) or an export; only the chosen weights are
read and nothing is written there. Batches are sharded over all devices of all processes (each process computes its
slice of every batch; the batches are gathered and process 0 writes the files: the .npz, a PNG grid of the first 64
and a .json record of every option that changes the samples, with step, weights, NFE and img/s). The default file
name carries the method, number, step, weights and seed; an existing file is an error unless --overwrite.
Deterministic for a --seed and --batch, and the noise (drawn inside the jitted sampler with partitionable threefry)
does not depend on the device count: on CPU, 1 and 8 devices and 2 processes x 4 devices give identical files
(tests/cli/test_sample.py); other backends may differ in the last bits of a float, so rarely in one uint8 level.
A latent run's samples are decoded to RGB by the SD-VAE (--vae, default: the file the run's config records;
scm_jax/eval/decoding.py); without a VAE it is refused. --latents also writes <out stem>_latents.npz: arr_0 the
sampled latents as the network outputs them (float32, scaled to std sigma_d = 0.5: raw VAE latents are
arr_0 / 0.5 * latent_std + latent_mean, both stored with them), arr_1 the labels.
Bad input exits with code 2 and one `error:` line naming the fix.
"""
import json
import os

import jax
import numpy as np
from absl import flags, logging
from ml_collections import ConfigDict

from scm_jax import inference
from scm_jax.cli.common import run_app
from scm_jax.parallel.distributed import initialize
from scm_jax.samplers import ode
from scm_jax.samplers.images import save_grid
from scm_jax.train import runs

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "A scm-train workdir, its checkpoints/<step> or an export.")
_WEIGHTS = flags.DEFINE_string("weights", None, "'params', 'ema' (the first EMA, default) or an EMA name (ema_0.5).")
_STEPS = flags.DEFINE_integer("steps", None, "Consistency sampling with 1 or 2 steps (default 2; t_mid: the run's "
                             "config.sample.t_mid).")
_TIMES = flags.DEFINE_list("times", None, "Explicit decreasing sampling times, overriding --steps.")
_SOLVER = flags.DEFINE_enum("solver", None, ["euler", "heun"], "Teacher ODE solver (diffusion runs).")
_ODE_STEPS = flags.DEFINE_integer("ode_steps", None, "Noise levels N of the ODE solver (Heun NFE = 2N - 1; "
                                  "default 18: NFE 35); alone it means --solver=heun.")
_NUM = flags.DEFINE_integer("num", 64, "Number of samples.", lower_bound=1)
_BATCH = flags.DEFINE_integer("batch", None, "Global batch per sampling call (default: --num up to 256, rounded up to "
                              "the devices); the noise depends on it.")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed; the same seed gives the same samples.")
_CLASS = flags.DEFINE_integer("class_label", -1, "Class of every sample; -1: classes in turn (0, 1, ...).")
_CFG = flags.DEFINE_float("cfg_scale", None, "Guidance scale: teacher CFG, or a guided sCD student's input "
                          "(default: its distillation scale if fixed, else 1).")
_OUT = flags.DEFINE_string("out", None, "Output .npz (default: <workdir>/samples/<method>_<num>_step<step>_<weights>_"
                           "seed<seed>[_class<c>][_cfg<s>].npz).")
_VAE = flags.DEFINE_string("vae", None, "SD-VAE weights (.npz, python -m scm_jax.models.convert_vae) decoding a "
                           "latent run's samples (default: the file its config records).")
_LATENTS = flags.DEFINE_bool("latents", False, "Latent runs: also write the sampled latents to <out stem>_latents.npz.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing output files instead of failing.")
flags.DEFINE_alias("workdir", "checkpoint")


def parse_checkpoint(path: str) -> tuple[str, int | None]:
    """A workdir, or <workdir>/checkpoints/<step> -> (workdir, step or None for the latest)."""
    path = os.path.normpath(path)
    parent, leaf = os.path.split(path)
    if leaf.isdigit() and os.path.basename(parent) == runs.CHECKPOINT_DIR:
        return os.path.dirname(parent), int(leaf)
    return path, None


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; options are --flag=value.")
    if _CHECKPOINT.value is None:
        raise ValueError("--checkpoint (or --workdir) is required: a scm-train workdir or an scm-export directory.")
    initialize()
    workdir, step = parse_checkpoint(_CHECKPOINT.value)
    model = inference.load(workdir, _WEIGHTS.value, step=step, vae=_VAE.value)
    if _LATENTS.value and model.config.data.kind != "latents":
        raise ValueError("--latents: this run samples pixels, not latents; drop the flag.")
    N = _ODE_STEPS.value
    solver = _SOLVER.value or ("heun" if N is not None else None)  # never ignore --ode_steps given alone
    options = model.options(_NUM.value, steps=_STEPS.value, times=_TIMES.value, solver=solver,
                            nfe=None if N is None else ode.nfe(solver, N),
                            labels=None if _CLASS.value < 0 else _CLASS.value, guidance=_CFG.value, seed=_SEED.value,
                            batch=_BATCH.value)
    out = _OUT.value or os.path.join(workdir, "samples", default_name(model, options))
    check_free(out, _OVERWRITE.value, _LATENTS.value)
    samples = model.run(options, outputs=_LATENTS.value)
    record = {"workdir": workdir, "step": model.step, "weights": model.weights, **options.record(),
              "vae": model.decode.vae, "seconds": samples.seconds, "img_per_s": len(samples.images) / samples.seconds,
              "device": f"{jax.devices()[0].platform} x{jax.device_count()}"}
    if jax.process_index() == 0:
        write(out, samples, record, model.config.data)
    logging.info("%s step %d (%s), %s NFE %d: %d samples in %.1f s (%.1f img/s) -> %s", workdir, model.step,
                 model.weights, options.method.name, options.method.nfe, len(samples.images), samples.seconds,
                 len(samples.images) / samples.seconds, out)


def default_name(model: inference.Model, options: inference.Options) -> str:
    """<method>_<num>_step<step>_<weights>_seed<seed>[_class<c>][_cfg<s>].npz: runs with other options do not
    collide."""
    extra = "" if not isinstance(options.labels, int) else f"_class{options.labels}"
    extra += "" if options.guidance in (None, 1.0) else f"_cfg{options.guidance:g}"
    return f"{options.method.name}_{options.num}_step{model.step}_{model.weights}_seed{options.seed}{extra}.npz"


def outputs(out: str, latents: bool = False) -> list[str]:
    """The .npz, .png and .json files of `out`, and with `latents` its <stem>_latents.npz."""
    stem = os.path.splitext(out)[0]
    return [out, stem + ".png", stem + ".json"] + ([stem + "_latents.npz"] if latents else [])


def check_free(out: str, overwrite: bool, latents: bool) -> None:
    if not overwrite and (existing := [path for path in outputs(out, latents) if os.path.exists(path)]):
        raise FileExistsError(f"{existing[0]} exists; pass --overwrite to replace it, or choose another --out.")


def write(out: str, samples: inference.Samples, record: dict, data: ConfigDict) -> None:
    """The ADM .npz (arr_1 only for a conditional run), a PNG grid of the first 64, the .json record and, when
    `samples` hold them, the latents with the run's scale (`data.latent_mean` / `latent_std`)."""
    npz, png, record_json, *latents_npz = outputs(out, samples.outputs is not None)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    labels = {} if samples.labels is None else {"arr_1": samples.labels}
    np.savez(npz, arr_0=samples.images, **labels)
    save_grid(png, samples.images[:64])
    with open(record_json, "w") as fh:
        json.dump(record, fh, indent=2)
    if latents_npz:
        np.savez(latents_npz[0], arr_0=samples.outputs.astype(np.float32), **labels,
                 latent_mean=np.float32(data.latent_mean), latent_std=np.float32(data.latent_std))


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
