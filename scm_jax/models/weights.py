"""Network weights as flat `.npz` files keyed by NNX paths joined by dots (`Mixed_5b.branch1x1.conv.kernel`)."""
import os
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx


def module_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every variable of `model` (parameters and batch statistics) as numpy, keyed by its dotted path."""
    return {_key(path): np.asarray(var[...]) for path, var in nnx.to_flat_state(nnx.state(model))}


def save_module(path: str, model: nnx.Module) -> None:
    """Writes `module_arrays(model)` to a compressed `.npz`."""
    np.savez_compressed(path, **module_arrays(model))


def load_module(path: str, create: Callable[[], nnx.Module], missing_hint: str) -> nnx.Module:
    """Builds `create()` abstractly and fills it from the `.npz` at `path`; keys and shapes must match exactly.

    `missing_hint` tells the user how to make the file when it does not exist.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file at {path!r}. {missing_hint}")
    with np.load(path) as npz:
        arrays = dict(npz)
    return module_from_arrays(arrays, create, source=path)


def module_from_arrays(arrays: dict[str, np.ndarray], create: Callable[[], nnx.Module], source: str) -> nnx.Module:
    """Builds `create()` abstractly (no initialisation cost) and fills every variable from `arrays`."""
    graphdef, state = nnx.split(nnx.eval_shape(create))
    flat = list(nnx.to_flat_state(state))
    expected = {_key(p) for p, _ in flat}
    missing, unexpected = sorted(expected - arrays.keys()), sorted(arrays.keys() - expected)
    if missing or unexpected:
        raise ValueError(f"{source} does not fit the network: missing {missing[:5]} ({len(missing)} in all), "
                         f"unexpected {unexpected[:5]} ({len(unexpected)} in all)")
    filled = []
    for p, var in flat:
        value = arrays[_key(p)]
        if value.shape != var.shape:
            raise ValueError(f"{source}: {_key(p)} has shape {value.shape}, the network needs {var.shape}")
        filled.append((p, var.replace(jnp.asarray(value, var.dtype))))
    return nnx.merge(graphdef, nnx.from_flat_state(filled))


def _key(path: tuple) -> str:
    return ".".join(str(part) for part in path)
