"""A run's workdir: its config.json and checkpoints; loading another run's weights (sCD teacher, sampling) and
exporting one weight set.

Loading is read-only and reads one weight set (checkpoint.restore_subtree): an sCD run loading its teacher, or a
sampler, never writes to, probes or moves files in the source directory, which may be read-only. An export
(`export_weights`) is a directory with config.json, export.json (source, step, weights, dtype) and weights/ (one
parameter tree, nothing of the optimizer); `load_weights` reads it like a workdir.
"""
import json
import os
from typing import Optional

import jax
import jax.numpy as jnp
from etils import epath
from ml_collections import ConfigDict

from scm_jax import checkpoint
from scm_jax.checkpoint import Checkpointer
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train import ema
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import Setup, make_setup

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
EXPORT_FILE = "export.json"
EXPORT_WEIGHTS_DIR = "weights"
EXPORT_DTYPES = ("float32", "bfloat16")
REQUIRED_KEYS = ("objective", "data", "model", "train", "optim", "checkpoint")


def write_config(config: ConfigDict, workdir: str) -> None:
    """Atomically (temp file + rename): a kill mid-write leaves the previous config.json intact. `workdir`: a local
    directory or an etils.epath URL (gs://...)."""
    if jax.process_index() == 0:
        path = epath.Path(workdir) / CONFIG_FILE
        tmp = path.with_name(CONFIG_FILE + ".tmp")
        tmp.write_text(config.to_json(indent=2))
        tmp.replace(path)


def read_config(workdir: str) -> ConfigDict:
    path = epath.Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {workdir!r} is not a scm-train workdir "
                                "(train one with scm-train --workdir=...).")
    try:
        config = ConfigDict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise ValueError(f"{path} is not valid config JSON ({e}); rewrite it by rerunning the run's scm-train "
                         "command in this workdir.") from None
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise ValueError(f"{path} lacks {missing}: it is not an scm-train config; rerun the run's scm-train "
                         "command in this workdir to rewrite it.")
    return config


def ema_names(config: ConfigDict) -> list[str]:
    return [ema.ema_name(h) for h in config.train.ema_half_lives_mimg]


def checkpointer(config: ConfigDict, workdir: str) -> Checkpointer:
    c = config.checkpoint
    return Checkpointer(os.path.join(workdir, CHECKPOINT_DIR), keep=c.keep, save_interval_steps=c.every_steps,
                        async_save=c.async_save)


def weights_name(config: ConfigDict, weights: str | float | None) -> str:
    """The checkpoint's name of `weights`: "params", an EMA name ("ema_0.5") or half-life in Mimg (0.5), or "ema" /
    None for the first EMA (the one the trainer samples and evaluates)."""
    names = ema_names(config)
    if weights is None or weights == "ema":
        return names[0]
    name = _as_name(weights)
    if name not in ["params", *names]:
        raise ValueError(f"weights={weights!r} is not a weight set of this run; choose one of "
                         f"{['params', 'ema', *names]} (or an EMA half-life in Mimg).")
    return name


def read_export(workdir: str) -> dict | None:
    """export.json of an exported model (source, step, weights, dtype); None for a training workdir."""
    path = epath.Path(workdir) / EXPORT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def load_weights(workdir: str, weights: str | float | None, mesh: jax.sharding.Mesh,
                 step: Optional[int] = None) -> tuple[ConfigDict, Setup, dict, int]:
    """(config, setup, params, step) of `weights` (see weights_name) of a finished run or an export, sharded on
    `mesh`; reads only that weight set and writes nothing in `workdir`."""
    config = read_config(workdir)
    setup = make_setup(config, mesh, make_optimizer(config))
    exported = read_export(workdir)
    if exported is not None:
        return config, setup, _load_export(workdir, exported, weights, step, setup), exported["step"]
    name = weights_name(config, weights)
    path = ("params",) if name == "params" else ("ema", name)
    abstract = setup.abstract["params"] if name == "params" else setup.abstract["ema"][name]
    restored = checkpoint.restore_subtree(os.path.join(workdir, CHECKPOINT_DIR), abstract, path, step)
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}; train the run first.")
    ckpt_step, params = restored
    return config, setup, params, ckpt_step


def _load_export(workdir: str, exported: dict, weights: str | float | None, step: Optional[int],
                 setup: Setup) -> dict:
    """The exported weights on the setup's shardings, cast back to the weight set's dtype in the run (float32 for
    the EMAs)."""
    held = exported["weights"]
    if not (weights is None or _as_name(weights) == held or (weights == "ema" and held != "params")):
        raise ValueError(f"{workdir} is an export of {held} only (from {exported['source']} step "
                         f"{exported['step']}); drop weights={weights!r} or export that weight set.")
    if step not in (None, exported["step"]):
        raise ValueError(f"{workdir} is an export of step {exported['step']} only; drop step={step}.")
    target = setup.abstract["params"] if held == "params" else next(iter(setup.abstract["ema"].values()))
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, jnp.dtype(exported["dtype"]),
                                                           sharding=a.sharding), target)
    params = checkpoint.read_subtree(epath.Path(workdir) / EXPORT_WEIGHTS_DIR, abstract)
    return jax.tree.map(lambda p, a: p.astype(a.dtype), params, target)


def _as_name(weights: str | float) -> str:
    return ema.ema_name(weights) if isinstance(weights, (int, float)) else weights


def export_weights(workdir: str, weights: str | float | None, out: str, dtype: str = "float32",
                   step: Optional[int] = None) -> dict:
    """Writes `weights` of the run in `workdir` to a new directory `out` as `dtype`, with the run's config (what
    sampling needs; nothing of the optimizer). Returns the export record (export.json)."""
    if dtype not in EXPORT_DTYPES:
        raise ValueError(f"dtype={dtype!r}; use one of {EXPORT_DTYPES}.")
    if epath.Path(out).exists():
        raise FileExistsError(f"{out} exists; export into a new directory.")
    if read_export(workdir) is not None:
        raise ValueError(f"{workdir} is already an export; export from the training workdir.")
    config, _, params, ckpt_step = load_weights(workdir, weights, make_mesh(-1, 1, 1), step)
    record = {"source": os.path.abspath(workdir), "step": ckpt_step, "weights": weights_name(config, weights),
              "dtype": dtype}
    checkpoint.save_tree(epath.Path(out) / EXPORT_WEIGHTS_DIR, jax.tree.map(lambda p: p.astype(dtype), params))
    write_config(config, out)
    if jax.process_index() == 0:
        (epath.Path(out) / EXPORT_FILE).write_text(json.dumps(record, indent=2))
    return record
