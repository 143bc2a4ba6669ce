"""SIGTERM / SIGINT (preemption, Ctrl-C) -> save the current step and stop, on every host at the same step."""
import signal

import jax
from jax.experimental import multihost_utils


class Preemption:
    """SIGTERM / SIGINT: the loop saves the current step and returns.

    One process: our handler sets `flag` (the signal number). Several processes (TPU slices, SLURM): SIGTERM is
    left to JAX's preemption service (started by jax.distributed.initialize), which tells every host and makes
    `reached` true on all of them at the same step; SIGINT is handed to it as a SIGTERM.
    """

    def __enter__(self):
        self.flag = 0
        self._synced = jax.process_count() > 1
        signals = (signal.SIGINT,) if self._synced else (signal.SIGTERM, signal.SIGINT)
        self._old = {s: signal.signal(s, self._handle) for s in signals}
        return self

    def _handle(self, signum, frame):
        self.flag = signum
        if self._synced:
            signal.raise_signal(signal.SIGTERM)

    def reached(self, step: int) -> bool:
        """Whether to save `step` and stop; call it after every step, on every process."""
        if self._synced:
            return multihost_utils.reached_preemption_sync_point(step)
        return bool(self.flag)

    def __exit__(self, *exc):
        for s, handler in self._old.items():
            signal.signal(s, handler)
