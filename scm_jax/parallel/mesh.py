"""Device mesh from the config: axes ("data", "fsdp", "tensor"), sizes -1 fill the remaining devices."""
import math

import jax
import numpy as np

AXES = ("data", "fsdp", "tensor")


def mesh_shape(data: int, fsdp: int, tensor: int, num_devices: int) -> tuple[int, int, int]:
    """Resolve at most one -1 so that data * fsdp * tensor == num_devices."""
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"mesh (data, fsdp, tensor) = {tuple(sizes)}: use positive sizes and at most one -1.")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh {tuple(sizes)} cannot fill {num_devices} devices ({num_devices} % {known} != 0).")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh (data, fsdp, tensor) = {tuple(sizes)} uses {math.prod(sizes)} devices but "
                         f"{num_devices} are present; set one axis to -1 to fill them.")
    return tuple(sizes)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> jax.sharding.Mesh:
    """A GSPMD (Auto axes) mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(data, fsdp, tensor, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(AXES)
    if len(devices) == len(jax.devices()):
        return jax.make_mesh(shape, AXES, axis_types=auto)
    return jax.sharding.Mesh(np.asarray(devices).reshape(shape), AXES, axis_types=auto)
