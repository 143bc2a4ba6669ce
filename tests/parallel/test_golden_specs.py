"""Golden PartitionSpecs of every DiT-1.5B parameter (configs/imagenet512.py:scd) under each rule set.

Specs come from abstract init (`nnx.eval_shape`, no parameter memory) on abstract meshes, so no devices are needed.
After an intended change to the model, the logical names or the rules, regenerate and review the diff:

    SCM_UPDATE_GOLDENS=1 python -m pytest tests/parallel/test_golden_specs.py
"""
import json
import os
from pathlib import Path

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from configs import imagenet512
from scm_jax.models.dit import DiT
from scm_jax.parallel.mesh import AXES
from scm_jax.parallel.sharding import RULES, param_specs
from scm_jax.train.state import run_model_config

GOLDEN = Path(__file__).parent / "goldens" / "dit_1p5b_specs.json"
CONFIG = "configs/imagenet512.py:scd"
# (dcn, data, fsdp, tensor) per rule set: every axis the set uses is > 1, so the specs show all of them
MESHES = {"fsdp": (2, 2, 8, 1), "fsdp_tp": (2, 1, 4, 4), "dp": (2, 8, 1, 1)}


def _encode(spec: P) -> list:
    return [list(a) if isinstance(a, tuple) else a for a in spec]


def _flat(tree) -> dict:
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda s: isinstance(s, P))[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in leaves}


def snapshot() -> dict:
    """{"meshes": ..., "params": {path: {"shape": [...], rule set: spec}}} of the 1.5B sCD student."""
    model_cfg = run_model_config(imagenet512.get_config("scd"))
    _, state = nnx.split(nnx.eval_shape(lambda: DiT(model_cfg, rngs=nnx.Rngs(0))))
    params = {k: {"shape": list(s.shape)} for k, s in _flat(nnx.to_pure_dict(state)).items()}
    for name, sizes in MESHES.items():
        specs = param_specs(state, RULES[name], jax.sharding.AbstractMesh(sizes, AXES))
        for key, spec in _flat(specs).items():
            params[key][name] = _encode(spec)
    return {"config": CONFIG, "meshes": {n: dict(zip(AXES, s)) for n, s in MESHES.items()},
            "params": dict(sorted(params.items()))}


def _dump(snap: dict) -> str:
    """JSON with one line per parameter, so a review diff shows exactly which specs changed."""
    lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in snap["params"].items())
    return (f'{{"config": {json.dumps(snap["config"])},\n "meshes": {json.dumps(snap["meshes"])},\n'
            f' "params": {{\n{lines}\n }}\n}}\n')


@pytest.fixture(scope="module")
def current() -> dict:
    return snapshot()


def test_specs_match_golden(current):
    if os.environ.get("SCM_UPDATE_GOLDENS"):
        GOLDEN.write_text(_dump(current))
        pytest.skip(f"wrote {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())
    assert golden["meshes"] == current["meshes"]
    changed = sorted(k for k in golden["params"].keys() | current["params"].keys()
                     if golden["params"].get(k) != current["params"].get(k))
    assert not changed, (f"{len(changed)} parameter specs differ from {GOLDEN.name}, e.g. {changed[:5]}; if "
                         "intended, regenerate with SCM_UPDATE_GOLDENS=1 (see this file's docstring).")


def test_golden_covers_the_model(current):
    params = current["params"]
    assert len(params) > 36 * 16  # 36 blocks of 16 tensors + embeddings, final layer, logvar head
    assert params["blocks/0/attn/q/kernel"] == {"shape": [1536, 24, 64], "fsdp": ["fsdp", None, None],
                                                "fsdp_tp": ["fsdp", "tensor", None], "dp": [None, None, None]}
    assert params["blocks/0/mlp/fc2/kernel"]["fsdp_tp"] == ["tensor", "fsdp"]
    assert all(set(v["dp"]) == {None} for v in params.values())
