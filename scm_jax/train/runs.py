"""A run's workdir: its config.json and checkpoints; loading another run's weights (sCD teacher, sampling)."""
import json
import os
from typing import Optional

import jax
from etils import epath
from ml_collections import ConfigDict

from scm_jax.checkpoint import Checkpointer
from scm_jax.train import ema
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import Setup, make_setup

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
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


def load_weights(workdir: str, weights: str, mesh: jax.sharding.Mesh,
                 step: Optional[int] = None) -> tuple[ConfigDict, Setup, dict, int]:
    """(config, setup, params, step) of `weights` ("params" or an EMA name like "ema_0.5") of a finished run."""
    config = read_config(workdir)
    setup = make_setup(config, mesh, make_optimizer(config.optim))
    restored = checkpointer(config, workdir).restore(setup.abstract, step=step)
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}; train the run first.")
    ckpt_step, state, _, _ = restored
    choices = ["params", *state["ema"]]
    if weights not in choices:
        raise ValueError(f"weights={weights!r} is not in the checkpoint of {workdir}; choose one of {choices}.")
    return config, setup, state["params"] if weights == "params" else state["ema"][weights], ckpt_step
