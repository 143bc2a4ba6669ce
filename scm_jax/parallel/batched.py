"""A jitted function mapped over a large host array in batches of one compiled shape (the last zero-padded)."""
from collections.abc import Callable

import jax
import numpy as np


def map_batches(fn: Callable[[np.ndarray], object], x: np.ndarray, batch_size: int,
                sharding: jax.sharding.Sharding | None = None) -> object:
    """`fn(x)` computed `batch_size` rows at a time, as numpy; `fn` returns an array or a pytree of arrays with
    the batch in their first axis. With `sharding` (e.g. `over_local_devices()`), each batch is placed with it and
    its size rounded up to a multiple of the sharding's devices."""
    if len(x) == 0:
        raise ValueError("no images given")
    devices = 1 if sharding is None else len(sharding.device_set)
    size = -(-min(batch_size, len(x)) // devices) * devices
    outputs = []
    for start in range(0, len(x), size):
        batch = x[start:start + size]
        padded = np.concatenate([batch, np.zeros((size - len(batch),) + batch.shape[1:], batch.dtype)])
        out = fn(padded if sharding is None else jax.device_put(padded, sharding))
        outputs.append(jax.tree.map(lambda a, n=len(batch): np.asarray(a)[:n], out))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *outputs)


def over_local_devices() -> jax.sharding.NamedSharding:
    """A sharding that splits the first axis of an array over this process's devices (data parallelism)."""
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), ("batch",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
