"""Shared by the reliability tests: real `scm-train` subprocesses, smoke configs, checkpoint comparison."""
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from ml_collections import ConfigDict

from tests import fakes
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train import runs
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup

REPO = Path(__file__).resolve().parents[2]
# The conftest's device count, matmul precision and compilation cache, so subprocess and in-process runs compile the
# same programs (bitwise equal results) and share compiled executables; every program is cached (Orbax's first save
# compiles ~150 tiny slicing programs, a third of a subprocess's start-up).
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO), XLA_FLAGS=os.environ["XLA_FLAGS"],
           JAX_DEFAULT_MATMUL_PRECISION="highest", JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
# 12 steps, an async checkpoint after every step (the kill points), no sample grids.
OVERRIDES = {"train.steps": 12, "checkpoint.every_steps": 1, "checkpoint.async_save": True, "sample.every_steps": 0}


def smoke(objective: str = "sct", **overrides) -> ConfigDict:
    """The `objective,smoke` config with OVERRIDES and `overrides` ({"a.b": value})."""
    return fakes.smoke(objective, **{**OVERRIDES, **overrides})


def launch(workdir: Path, **overrides) -> subprocess.Popen:
    """`python -m scm_jax.cli.train --config=configs/embedded.py:sct,smoke` with OVERRIDES, output to a log."""
    flags = [f"--config.{k}={v}" for k, v in {**OVERRIDES, **overrides}.items()]
    log = open(workdir.parent / f"{workdir.name}.log", "a")
    command = [sys.executable, "-m", "scm_jax.cli.train", "--config=configs/embedded.py:sct,smoke",
               f"--workdir={workdir}", *flags]
    return subprocess.Popen(command, cwd=REPO, env=ENV, stdout=log, stderr=subprocess.STDOUT)


def run_cli(workdir: Path, *flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "scm_jax.cli.train", "--config=configs/embedded.py:sct,smoke",
               f"--workdir={workdir}", *flags]
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """Polls `condition()` every 2 ms; fails if `proc` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the trainer exited with {proc.returncode} before the kill point"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.002)


def steps(workdir: Path) -> list[int]:
    """Committed checkpoint steps (Orbax renames a finished `N.orbax-checkpoint-tmp-*` to `N`)."""
    folder = workdir / runs.CHECKPOINT_DIR
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.exists() else []


def writing(workdir: Path) -> bool:
    """An async checkpoint write is under way."""
    folder = workdir / runs.CHECKPOINT_DIR
    return folder.exists() and any(".orbax-checkpoint-tmp" in p.name for p in folder.iterdir())


def restore(workdir: Path, step: int | None = None) -> tuple[int, dict, dict]:
    """(step, state, data-iterator state) of a workdir's checkpoint, on the 8-device mesh."""
    config = runs.read_config(str(workdir))
    setup = make_setup(config, make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor),
                       make_optimizer(config))
    ckpt = runs.checkpointer(config, str(workdir))
    at, state, data_state, _ = ckpt.restore(setup.abstract, step=step)
    ckpt.close()
    return at, state, data_state


def assert_bitwise_equal(a: dict, b: dict) -> None:
    paths_a, leaves_a = zip(*jax.tree_util.tree_flatten_with_path(a)[0])
    paths_b, leaves_b = zip(*jax.tree_util.tree_flatten_with_path(b)[0])
    assert paths_a == paths_b
    for path, x, y in zip(paths_a, leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=jax.tree_util.keystr(path))
