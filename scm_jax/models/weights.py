"""Network weights as flat `.npz` files keyed by NNX paths joined by dots (`Mixed_5b.branch1x1.conv.kernel`).

A network whose shape is configurable (the VAE, DINOv2) also stores its constructor's keyword arguments as JSON
under `CONFIG_KEY`; `load_module` passes them to `create`.
"""
import json
import os
import zipfile
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from flax import nnx


def module_arrays(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every variable of `model` (parameters and batch statistics) as numpy, keyed by its dotted path."""
    return {_key(path): np.asarray(var[...]) for path, var in nnx.to_flat_state(nnx.state(model))}


CONFIG_KEY = "__config__"


def save_module(path: str, model: nnx.Module, config: dict | None = None) -> None:
    """Writes `module_arrays(model)` (and `config`, the kwargs that rebuild the model) to a compressed `.npz`."""
    save_arrays(path, module_arrays(model), config)


def save_arrays(path: str, arrays: dict[str, np.ndarray], config: dict | None = None) -> None:
    extra = {} if config is None else {CONFIG_KEY: np.asarray(json.dumps(config))}
    np.savez_compressed(path, **arrays, **extra)


def load_module(path: str, create: Callable[..., nnx.Module], missing_hint: str) -> nnx.Module:
    """Builds `create(**stored config)` abstractly and fills it from the `.npz` at `path`; keys and shapes must
    match exactly.

    `missing_hint` tells the user how to make the file when it does not exist or cannot be read.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no weights file at {path!r}. {missing_hint}")
    try:
        with np.load(path) as npz:
            arrays = dict(npz)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a readable weights .npz ({e}). {missing_hint}") from None
    config = json.loads(str(arrays.pop(CONFIG_KEY))) if CONFIG_KEY in arrays else {}
    try:
        return module_from_arrays(arrays, lambda: create(**config), source=path)
    except (TypeError, ValueError) as e:  # TypeError: the stored config is another network's
        raise ValueError(f"{path} holds the weights of another network ({e}). {missing_hint}") from None


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


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """A `.safetensors` or torch-pickled (`.bin`, `.pt`, `.pth`) state dict as numpy arrays."""
    if path.endswith(".safetensors"):
        try:
            from safetensors.numpy import load_file
        except ImportError as e:
            raise SystemExit("reading .safetensors needs the safetensors package: pip install safetensors") from e
        return load_file(path)
    try:
        import torch
    except ImportError as e:
        raise SystemExit(f"reading {path} needs torch: pip install torch (or convert the .safetensors)") from e
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float().numpy() for k, v in state_dict.items()}
