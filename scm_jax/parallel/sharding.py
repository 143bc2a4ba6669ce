"""Logical-axis rules -> PartitionSpecs for parameters, optimizer state and activations.

Parameters carry logical names (see scm_jax.models.dit); a rule set maps each name to mesh axes. A dimension
that the mapped mesh axes do not divide stays replicated (small models on big meshes still run).
"""
import math
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

BATCH = ("data", "fsdp")  # the batch dimension is split over every data-parallel axis

RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    # FSDP (ZeRO-3): parameters split over "fsdp" on their embed dimension; tensor parallel on mlp/heads.
    "fsdp": (("batch", BATCH), ("embed", "fsdp"), ("cond", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"),
             ("length", None), ("head_dim", None), ("patch", None), ("classes", None), ("freq", None)),
    # pure data parallel: parameters replicated.
    "dp": (("batch", BATCH),),
}


def logical_to_spec(names: tuple, shape: tuple[int, ...], rules: tuple, mesh: jax.sharding.Mesh) -> P:
    """Map logical names to mesh axes, dropping axes that do not divide the dimension or are already used."""
    table, used, spec = dict(rules), set(), []
    for name, dim in zip(names, shape):
        axes = table.get(name) if name is not None else None
        axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
        axes = tuple(a for a in axes if a not in used and mesh.shape[a] > 1)
        if axes and dim % math.prod(mesh.shape[a] for a in axes) == 0:
            used.update(axes)
            spec.append(axes[0] if len(axes) == 1 else axes)
        else:
            spec.append(None)
    return P(*spec)


def param_specs(abstract_state: nnx.State, rules: tuple, mesh: jax.sharding.Mesh) -> dict:
    """PartitionSpec of every parameter (a pure dict like `nnx.to_pure_dict(state)`)."""
    def spec(v: nnx.Variable) -> P:
        names = tuple(v.get_metadata().get("out_sharding") or (None,) * len(v.shape))
        return logical_to_spec(names, v.shape, rules, mesh)
    specs = jax.tree.map(spec, abstract_state, is_leaf=lambda v: isinstance(v, nnx.Variable))
    return nnx.to_pure_dict(specs)


def named(mesh: jax.sharding.Mesh, specs: Any) -> Any:
    return jax.tree.map(lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda s: isinstance(s, P))


def opt_state_specs(tx: optax.GradientTransformation, abstract_opt_state: Any, params_specs: Any) -> Any:
    """Optimizer moments are sharded like their parameters; counters are replicated."""
    return optax.tree_utils.tree_map_params(
        tx, lambda _, s: s, abstract_opt_state, params_specs,
        transform_non_params=lambda _: P(), is_leaf=lambda s: isinstance(s, P))


def batch_spec(ndim: int) -> P:
    return P(BATCH, *(None,) * (ndim - 1))
