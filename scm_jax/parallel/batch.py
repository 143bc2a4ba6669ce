"""The global batch split over devices and gradient-accumulation steps: global = devices x microbatch x accum.

A config states the global batch (`train.batch_size`) and the largest per-device microbatch that fits
(`train.microbatch`, what `scm-plan` answers; 0 = the whole per-device batch); the number of accumulation steps
follows from the number of data-parallel devices of the run, so one config fits one node and 64 GPUs alike.
"""
import dataclasses
import math

import jax

from scm_jax.parallel import sharding


@dataclasses.dataclass(frozen=True)
class BatchSplit:
    global_batch: int
    devices: int       # data-parallel devices (dcn * data * fsdp)
    per_device: int    # images per device per optimizer step
    microbatch: int    # images per device per forward / backward pass
    accum_steps: int   # microbatches scanned per optimizer step

    def __str__(self) -> str:
        return (f"global batch {self.global_batch} = {self.devices} devices x microbatch {self.microbatch} x "
                f"{self.accum_steps} accumulation steps ({self.per_device} per device)")


def split_batch(global_batch: int, microbatch: int, grad_accum_steps: int, devices: int) -> BatchSplit:
    """The split of `global_batch` over `devices`, from train.microbatch (> 0) or else train.grad_accum_steps."""
    if global_batch % devices:
        raise ValueError(f"config: train.batch_size={global_batch} is not divisible by the {devices} data-parallel "
                         "devices; use a multiple of them.")
    per_device = global_batch // devices
    if microbatch < 0:
        raise ValueError(f"config: train.microbatch={microbatch}; use the largest per-device batch that fits "
                         "(scm-plan) or 0 for the whole per-device batch.")
    if microbatch > 0 and grad_accum_steps != 1:
        raise ValueError(f"config: train.microbatch={microbatch} and train.grad_accum_steps={grad_accum_steps} both "
                         "set the accumulation; keep train.microbatch and set train.grad_accum_steps=1.")
    if microbatch > 0:
        microbatch = min(microbatch, per_device)  # a microbatch larger than the per-device batch: no accumulation
        if per_device % microbatch:
            fits = max(d for d in range(1, microbatch + 1) if per_device % d == 0)
            raise ValueError(f"config: train.microbatch={microbatch} does not divide the {per_device} images per "
                             f"device (train.batch_size={global_batch} / {devices} devices); use "
                             f"train.microbatch={fits}, the largest divisor below it.")
        return BatchSplit(global_batch, devices, per_device, microbatch, per_device // microbatch)
    if grad_accum_steps < 1 or per_device % grad_accum_steps:
        raise ValueError(f"config: train.grad_accum_steps={grad_accum_steps} does not divide the {per_device} images "
                         f"per device (train.batch_size={global_batch} / {devices} devices); set train.microbatch "
                         "instead and the steps follow.")
    return BatchSplit(global_batch, devices, per_device, per_device // grad_accum_steps, grad_accum_steps)


def batch_devices(mesh: jax.sharding.Mesh) -> int:
    """The data-parallel size of `mesh`: the devices the batch is split over."""
    return math.prod(mesh.shape[axis] for axis in sharding.BATCH)
