"""Throughput of the train steps alone (compilation, evaluation, sampling and checkpoints excluded), ETA and MFU;
sCM's early warning of a collapse (TangentWatch).

MFU = achieved FLOP/s / (devices x peak FLOP/s of the device kind), with XLA's count of the step's FLOPs and the
dense bf16 peaks of the vendors' data sheets below (no sparsity). CPUs have no entry: their MFU is None.
"""
import contextlib
import math
import time
from typing import Any, Iterator, Optional

import jax

# (substring of jax's device_kind, lower case; dense bf16 TFLOP/s per device). First match wins: "v5 lite"
# (v5e) before "v5" (v5p), H200 before H100. H100 is the SXM figure (PCIe: 756).
PEAK_BF16_TFLOPS = (
    ("a100", 312.0), ("h200", 989.0), ("h100", 989.0),
    ("tpu v4", 275.0), ("tpu v5 lite", 197.0), ("tpu v5e", 197.0), ("tpu v5", 459.0), ("tpu v6", 918.0),
)


def peak_flops(device_kind: str) -> Optional[float]:
    """Peak bf16 FLOP/s of one device of `device_kind` (jax's Device.device_kind), None if not in the table."""
    kind = device_kind.lower()
    return next((tflops * 1e12 for name, tflops in PEAK_BF16_TFLOPS if name in kind), None)


def mfu(flops_per_step_per_device: Optional[float], step_time_s: float, device_kind: str) -> Optional[float]:
    """Model FLOPs utilisation of one device, from XLA's per-device FLOPs of a step and the measured step time."""
    peak = peak_flops(device_kind)
    if peak is None or not flops_per_step_per_device or step_time_s <= 0:
        return None
    return flops_per_step_per_device / step_time_s / peak


def eta(seconds: float) -> str:
    """'5d 18:53:20' past a day, '18:53:20' below."""
    days, rest = divmod(int(max(seconds, 0)), 86_400)
    clock = time.strftime("%H:%M:%S", time.gmtime(rest))
    return f"{days}d {clock}" if days else clock


class StepTimer:
    """Wall time of the train steps of a logging window. `exclude(x)` waits for the dispatched steps (x: an output
    of the last one), then leaves out what runs inside it (evaluation, sampling, checkpoints); `restart()` after
    a session's first step leaves out its compilation."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self._start, self._excluded, self.steps = time.perf_counter(), 0.0, 0

    def count(self) -> None:
        self.steps += 1

    @contextlib.contextmanager
    def exclude(self, last_output: Any) -> Iterator[None]:
        jax.block_until_ready(last_output)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._excluded += time.perf_counter() - t0

    def seconds(self) -> float:
        return time.perf_counter() - self._start - self._excluded


class TangentWatch:
    """Warns when sCM's `jvp_rms` (RMS of the student's tangent dF/dt) rises `ratio` above its floor after the
    tangent warmup. Every sCD run that collapsed showed it first (0.28 -> 0.30-0.32 within 50-100 steps of the
    collapse), while stable runs stayed within ~2% of their floor and sCT's within ~5% (bench/results/ablations.md
    §8). Warns once per rise; re-arms when it falls back. `history`: the (step, jvp_rms) a resumed run logged
    before, so that its floor is the run's, not the session's (a run resumed mid-rise still warns).

    The trainer watches sCD only (`RATIOS`): no sCT collapse we measured showed the rise, and healthy sCT runs at
    batch 16 drift up 11-13% over 1,600 steps while their samples improve (ablations §11)."""

    RATIOS = {"scd": 1.1}

    @classmethod
    def of(cls, objective: str, warmup_steps: int, history: tuple[tuple[int, float], ...] = ()
           ) -> Optional["TangentWatch"]:
        """The watch of a run of `objective` (None for one it does not watch)."""
        ratio = cls.RATIOS.get(objective)
        return None if ratio is None else cls(warmup_steps, ratio, history)

    def __init__(self, warmup_steps: int, ratio: float = 1.1, history: tuple[tuple[int, float], ...] = ()):
        self.warmup_steps, self.ratio, self.raised = warmup_steps, ratio, False
        self.floor = min((v for step, v in history if step > warmup_steps), default=math.inf)

    def check(self, step: int, summary: dict) -> Optional[str]:
        """The warning for a logging window's means at `step`, or None."""
        value = summary.get("jvp_rms")
        if value is None or step <= self.warmup_steps:
            return None
        self.floor = min(self.floor, value)
        high = value > self.ratio * self.floor
        warn, self.raised = high and not self.raised, high
        if not warn:
            return None
        return (f"jvp_rms {value:.4g} at step {step} is {value / self.floor - 1:.0%} above its floor {self.floor:.4g}: "
                "sCD runs that collapsed showed this rise first. If the samples degrade, resume from the "
                "checkpoint before the rise at a lower optim.lr.")
