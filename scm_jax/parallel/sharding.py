"""Logical-axis rules -> PartitionSpecs for parameters, optimizer state and activations.

Parameters carry logical names (see scm_jax.models.dit); a rule set maps each name to mesh axes. A dimension
that the mapped mesh axes do not divide stays replicated (small models on big meshes still run).

Rule sets (`config.mesh.rules`); every one splits the batch over ("dcn", "data", "fsdp"):
  "fsdp"     (default) ZeRO-3: parameters and optimizer moments split over "fsdp" on their embed / cond
             dimension, gathered per layer in the forward and backward passes.
  "fsdp_tp"  "fsdp" + Megatron tensor parallelism over "tensor": attention heads and MLP hidden channels
             (q/k/v/out kernels, fc1/fc2, and the activations between them) are split over "tensor".
  "dp"       pure data parallel: parameters replicated.
Optimizer moments follow their parameters; activations follow the same names ("batch", "length", "embed",
"heads", "mlp", ...) through `with_logical_constraint` in the model.
"""
import math
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

BATCH = ("dcn", "data", "fsdp")  # the batch dimension is split over every data-parallel axis
LOGICAL_AXES = ("batch", "length", "embed", "cond", "mlp", "heads", "head_dim", "patch", "classes", "freq")


def _rules(**mapped) -> tuple[tuple[str, Any], ...]:
    """A complete rule set: every logical axis is named (flax keeps an unmapped name as a mesh axis name)."""
    return tuple((name, mapped.get(name)) for name in LOGICAL_AXES)


RULES: dict[str, tuple[tuple[str, Any], ...]] = {
    "fsdp": _rules(batch=BATCH, embed="fsdp", cond="fsdp"),
    "fsdp_tp": _rules(batch=BATCH, embed="fsdp", cond="fsdp", mlp="tensor", heads="tensor"),
    "dp": _rules(batch=BATCH),
}


def mesh_axes(rules: tuple) -> set[str]:
    """The mesh axes a rule set splits anything over."""
    axes = set()
    for _, target in rules:
        axes.update((target,) if isinstance(target, str) else target or ())
    return axes


def rules_for(name: str, mesh: jax.sharding.Mesh) -> tuple:
    """The rule set `name`, checked against the mesh: a mesh axis of size > 1 that it never uses would make its
    devices repeat each other's work."""
    if name not in RULES:
        raise ValueError(f"mesh.rules={name!r} is unknown; use one of {tuple(RULES)}.")
    unused = [a for a, n in mesh.shape.items() if n > 1 and a not in mesh_axes(RULES[name])]
    if unused:
        fix = "mesh.rules='fsdp_tp'" if unused == ["tensor"] else f"a rule set that uses {unused}"
        raise ValueError(f"mesh.rules={name!r} never splits over mesh axes {unused} (sizes "
                         f"{[mesh.shape[a] for a in unused]}); use {fix} or set those axes to 1.")
    return RULES[name]


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
