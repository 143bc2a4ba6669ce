"""Device mesh from the config: axes ("dcn", "data", "fsdp", "tensor").

"dcn" is the slow axis between TPU slices or GPU nodes (data-center network): only the batch is split over it and
parameters are replicated across it, so the one collective that crosses it is the gradient all-reduce.
"data", "fsdp" and "tensor" live inside a slice / node (ICI, NVLink). Sizes of -1 fill the remaining devices.

Multi-slice / multi-node meshes come from `mesh_utils.create_hybrid_device_mesh` (one "dcn" index per slice, or
per process where devices have no slice); a single process (fake CPU devices, one host) with dcn > 1 simulates
the slices as consecutive blocks of devices.
"""
import math
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from ml_collections import ConfigDict

AXES = ("dcn", "data", "fsdp", "tensor")


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int, dcn: int = 1) -> tuple[int, int, int]:
    """The (data, fsdp, tensor) sizes inside one of `dcn` slices, resolving at most one -1 so that
    dcn * data * fsdp * tensor == num_devices."""
    if dcn < 1 or num_devices % dcn:
        raise ValueError(f"mesh.dcn={dcn} must be a positive divisor of the {num_devices} devices.")
    per_slice, sizes = num_devices // dcn, [data, fsdp, tensor]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh (data, fsdp, tensor) = {tuple(sizes)}: use positive sizes and at most one -1.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if per_slice % known:
            raise ValueError(f"mesh {tuple(sizes)} cannot fill {per_slice} devices per slice "
                             f"({per_slice} % {known} != 0); pick sizes that divide it.")
        sizes[sizes.index(-1)] = per_slice // known
    if math.prod(sizes) != per_slice:
        raise ValueError(f"mesh (data, fsdp, tensor) = {tuple(sizes)} uses {math.prod(sizes)} devices but each of "
                         f"the {dcn} slice(s) has {per_slice}; set one axis to -1 to fill them.")
    return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Optional[Sequence[Any]] = None,
              dcn: int = 1) -> jax.sharding.Mesh:
    """A GSPMD (Auto axes) mesh over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = (dcn, *mesh_shape(data, fsdp, tensor, len(devices), dcn))
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    return jax.sharding.Mesh(device_grid(shape, devices), AXES, axis_types=auto)


def mesh_from_config(cfg: ConfigDict, devices: Optional[Sequence[Any]] = None) -> jax.sharding.Mesh:
    """The mesh of `config.mesh` (fields dcn, data, fsdp, tensor)."""
    return make_mesh(cfg.data, cfg.fsdp, cfg.tensor, devices, dcn=cfg.dcn)


def device_grid(shape: tuple[int, ...], devices: list) -> np.ndarray:
    """Devices arranged as `shape` = (dcn, data, fsdp, tensor), topology-aware where jax knows the topology."""
    dcn = shape[0]
    slices = len({getattr(d, "slice_index", None) for d in devices})
    processes = len({d.process_index for d in devices})
    if dcn == 1:
        if slices > 1:
            raise ValueError(f"the devices span {slices} slices; set mesh.dcn={slices} so that only the batch "
                             "crosses the slow links between them.")
        return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    if dcn in (slices, processes):
        return mesh_utils.create_hybrid_device_mesh((1, *shape[1:]), (dcn, 1, 1, 1), devices,
                                                    process_is_granule=slices != dcn, allow_split_physical_axes=True)
    if slices == processes == 1:  # one process simulating `dcn` slices (fake CPU devices)
        return np.asarray(devices).reshape(shape)
    raise ValueError(f"mesh.dcn={dcn} must equal the number of slices ({slices}) or processes ({processes}).")
