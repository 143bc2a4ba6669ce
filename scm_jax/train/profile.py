"""config.profile: a jax.profiler trace of a few train steps in WORKDIR/profile (TensorBoard's profile plugin).

The trace covers steps start_step + 1 .. start_step + num_steps; num_steps=0 is off. On an epath URL workdir
(gs://...) the trace is written to a local temporary directory and copied there when it stops.
"""
import os
import shutil
import tempfile
from typing import Any

import jax
from absl import logging
from etils import epath
from ml_collections import ConfigDict

from scm_jax.train.log import is_remote

PROFILE_DIR = "profile"


class Profiler:
    def __init__(self, cfg: ConfigDict, workdir: str):
        self._start, self._stop = cfg.start_step, cfg.start_step + cfg.num_steps
        self._target = epath.Path(workdir) / PROFILE_DIR
        self._local = None

    def before_step(self, step: int) -> None:
        """Starts the trace before step `step` + 1 runs, if that is the first profiled step."""
        if self._stop > self._start == step:
            self._local = tempfile.mkdtemp() if is_remote(str(self._target)) else str(self._target)
            jax.profiler.start_trace(self._local)
            logging.info("profiling steps %d-%d into %s", self._start + 1, self._stop, self._target)

    def after_step(self, step: int, last_output: Any) -> None:
        """Stops the trace once step `step` (done) is the last profiled one, after the device finished it."""
        if step == self._stop:
            self._finish(last_output)

    def __enter__(self) -> "Profiler":
        return self

    def __exit__(self, *exc) -> None:
        self._finish(None)  # a run that ended inside the profiled steps

    def _finish(self, last_output: Any) -> None:
        local, self._local = self._local, None
        if local is None:
            return
        jax.block_until_ready(last_output)
        jax.profiler.stop_trace()
        if local != str(self._target):
            _copy_tree(local, self._target)
            shutil.rmtree(local)
        logging.info("profile written to %s (tensorboard --logdir %s)", self._target, self._target)


def _copy_tree(source: str, target: epath.Path) -> None:
    """A local directory tree copied under `target` (any epath location)."""
    for root, _, names in os.walk(source):
        for name in names:
            destination = target / os.path.relpath(os.path.join(root, name), source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            epath.Path(os.path.join(root, name)).copy(destination, overwrite=True)
